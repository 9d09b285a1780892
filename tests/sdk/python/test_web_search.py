"""A web search and a cited answer through the official Python SDK (1.9.x and 3.x): the
`tool.execution` entry, the answer as `text` and `tool_reference` chunks, the same chunks
streamed as deltas and kept in the history."""

from conftest import assert_complete


def websearch_agent(client, unique):
    return client.beta.agents.create(model="fake-model", name=f"{unique}-websearch", tools=[{"type": "web_search"}])


def search_then_cite(upstream):
    upstream.script(
        {"tool_calls": [{"id": "call0ws01", "name": "web_search", "arguments": '{"query": "last euro winner"}'}]},
        {"text": "Spain won [1] in 2024 [0]."},
    )


def test_a_cited_answer_parses_as_text_and_tool_reference_chunks(client, unique, upstream):
    agent = websearch_agent(client, unique)
    search_then_cite(upstream)

    response = client.beta.conversations.start(agent_id=agent.id, inputs="Who won the last Euro?")

    assert_complete(response)
    execution, answer = response.outputs
    assert execution.type == "tool.execution" and execution.name == "web_search"
    chunks = answer.content
    assert [chunk.type for chunk in chunks] == ["text", "tool_reference", "text", "tool_reference", "text"]
    assert chunks[0].text == "Spain won "
    assert (chunks[1].tool, chunks[1].title, chunks[1].url) == ("web_search", "Euro winners 1", "https://example.com/euro-1")
    assert chunks[3].title == "Euro winners 0"
    assert response.usage.connectors == {"web_search": 1}
    history = client.beta.conversations.get_history(conversation_id=response.conversation_id)
    assert [chunk.type for chunk in history.entries[2].content] == [chunk.type for chunk in chunks]


def test_a_streamed_cited_answer_parses_its_reference_deltas(client, unique, upstream):
    agent = websearch_agent(client, unique)
    search_then_cite(upstream)

    events = list(client.beta.conversations.start_stream(agent_id=agent.id, inputs="Who won?"))

    names = [event.event for event in events]
    assert names[1:3] == ["tool.execution.started", "tool.execution.done"]
    assert events[1].data.name == "web_search"
    deltas = [event.data for event in events if event.event == "message.output.delta"]
    references = [delta.content for delta in deltas if not isinstance(delta.content, str)]
    assert [(ref.type, ref.tool, ref.title) for ref in references] == [
        ("tool_reference", "web_search", "Euro winners 1"),
        ("tool_reference", "web_search", "Euro winners 0"),
    ]
    assert "".join(delta.content for delta in deltas if isinstance(delta.content, str)) == "Spain won  in 2024 ."
    assert events[-1].data.usage.connectors == {"web_search": 1}
