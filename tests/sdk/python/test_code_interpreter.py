"""A file written by code_interpreter, shown as a `tool_file` chunk and downloaded with
`files.download`, through the official Python SDK (1.9.x and 3.x)."""

import json

from conftest import assert_complete


def test_a_file_the_code_wrote_is_a_tool_file_the_sdk_downloads(client, unique, upstream):
    agent = client.beta.agents.create(model="fake-model", name=f"{unique}-coder", tools=[{"type": "code_interpreter"}])
    code = "open('report.txt', 'w').write('written in the sandbox')\nprint('saved')"
    upstream.script(
        {"tool_calls": [{"id": "call0ci01", "name": "code_interpreter", "arguments": json.dumps({"code": code})}]},
        {"text": "Saved it."},
    )

    response = client.beta.conversations.start(agent_id=agent.id, inputs="Write a report")

    assert_complete(response)
    execution, answer = response.outputs
    assert execution.type == "tool.execution" and execution.name == "code_interpreter"
    assert execution.info["code_output"] == "saved\n"
    text, file = answer.content
    assert text.text == "Saved it."
    assert (file.type, file.tool, file.file_name, file.file_type) == ("tool_file", "code_interpreter", "report.txt", "txt")
    assert client.files.download(file_id=file.file_id).read() == b"written in the sandbox"
    assert response.usage.connectors == {"code_interpreter": 1}
