"""The examples of the public documentation page the product started from ("Agents &
Conversations"), run as written: the Python ones below, the curl ones from
`seed_curl_examples.txt` (copied from the page as printed). Only three things differ: the
client points at palaver (`server_url`, the test key), the 3.x SDK is imported from
`mistralai.client` (its only import path), and the hosted entry id in the restart example
is replaced by an entry of this run, since it names an entry of the hosted service."""

import os
import re
import subprocess

import pytest

from conftest import KEY, URL, Mistral


@pytest.fixture
def seed_client():
    # The page writes `client = Mistral(api_key)`; the one change: where the server is.
    api_key = KEY
    return Mistral(api_key=api_key, server_url=URL)


def test_the_python_examples_run_in_order_with_the_documented_shapes(seed_client, upstream):
    client = seed_client

    # --- Creating an Agent
    simple_agent = client.beta.agents.create(
        model="mistral-medium-2505", description="A simple Agent with persistent state.", name="Simple Agent"
    )
    websearch_agent = client.beta.agents.create(
        model="mistral-medium-2505",
        description="Agent able to search information over the web, such as news, weather, sport results...",
        name="Websearch Agent",
        instructions="You have the ability to perform web searches with `web_search` to find up-to-date information.",
        tools=[{"type": "web_search"}],
        completion_args={
            "temperature": 0.3,
            "top_p": 0.95,
        },
    )
    assert simple_agent.version == 0 and simple_agent.id.startswith("ag_")
    assert websearch_agent.tools[0].type == "web_search"

    # --- Updating an Agent
    simple_agent = client.beta.agents.update(
        agent_id=simple_agent.id,
        description="An edited simple agent.",
        completion_args={
            "temperature": 0.3,
            "top_p": 0.95,
        },
    )
    assert simple_agent.version == 1
    assert simple_agent.completion_args.top_p == 0.95

    # --- Change Version
    simple_agent = client.beta.agents.update_version(agent_id=simple_agent.id, version=0)
    assert simple_agent.version == 0
    assert simple_agent.description == "A simple Agent with persistent state."

    # --- Starting a Conversation (string, list, and without an agent)
    response = client.beta.conversations.start(
        agent_id=simple_agent.id,
        inputs="Who is Albert Einstein?",
        # store=False
    )
    assert response.outputs[0].type == "message.output"
    assert response.outputs[0].role == "assistant"
    assert response.outputs[0].agent_id == simple_agent.id
    response = client.beta.conversations.start(
        agent_id=simple_agent.id,
        inputs=[{"role": "user", "content": "Who is Albert Einstein?"}],
        # store=False
    )
    model_response = client.beta.conversations.start(
        model="mistral-medium-latest",
        inputs=[{"role": "user", "content": "Who is Albert Einstein?"}],
        # store=False
    )
    assert model_response.outputs[0].content == "echo: Who is Albert Einstein?"

    # --- Continue a Conversation
    response = client.beta.conversations.append(conversation_id=response.conversation_id, inputs="Translate to French.")
    assert response.outputs[0].content == "echo: Translate to French."
    assert response.usage.total_tokens > 0

    # --- Retrieve Conversations
    conversations_list = client.beta.conversations.list(page=0, page_size=100)
    assert response.conversation_id in [c.id for c in conversations_list]
    conversation = client.beta.conversations.get(conversation_id=response.conversation_id)
    assert conversation.agent_id == simple_agent.id
    conversation = client.beta.conversations.get_history(conversation_id=response.conversation_id)
    assert [e.type for e in conversation.entries] == ["message.input", "message.output"] * 2
    first_answer_id = conversation.entries[1].id
    conversation = client.beta.conversations.get_messages(conversation_id=response.conversation_id)
    assert len(conversation.messages) == 4

    # --- Restart Conversation (the page's id is one of the hosted service's)
    conversation = client.beta.conversations.restart(
        conversation_id=response.conversation_id, from_entry_id=first_answer_id, inputs="Translate to Portuguese."
    )
    assert conversation.conversation_id != response.conversation_id
    assert conversation.outputs[0].content == "echo: Translate to Portuguese."

    # --- Streaming Output: Start, Continue, Restart
    response = client.beta.conversations.start_stream(agent_id=websearch_agent.id, inputs="Who is Albert Einstein?")
    events = list(response)
    assert events[0].event == "conversation.response.started"
    assert events[-1].event == "conversation.response.done"
    conversation_id = events[0].data.conversation_id
    response = client.beta.conversations.append_stream(conversation_id=conversation_id, inputs="Translate to French.")
    assert [e.event for e in response][-1] == "conversation.response.done"
    history = client.beta.conversations.get_history(conversation_id=conversation_id)
    response = client.beta.conversations.restart_stream(
        conversation_id=conversation_id, from_entry_id=history.entries[1].id, inputs="Translate to Portuguese."
    )
    restart_events = list(response)
    assert restart_events[0].data.conversation_id != conversation_id
    assert "".join(e.data.content for e in restart_events if e.event == "message.output.delta") == (
        "echo: Translate to Portuguese."
    )


SEED_CURL = os.path.join(os.path.dirname(__file__), "seed_curl_examples.txt")


def curl_examples():
    """The page's curl commands, in page order: the blocks of `seed_curl_examples.txt`
    between its `# ---` lines."""
    with open(SEED_CURL, encoding="utf-8") as handle:
        blocks = handle.read().split("# ---\n")[1:]
    return [block.strip("\n") for block in blocks]


def test_the_curl_examples_run_with_the_documented_shapes(upstream):
    import json

    examples = curl_examples()
    assert len(examples) == 12, "the page's curl examples were all found"
    env = dict(os.environ, MISTRAL_API_KEY=KEY)
    ids = {}
    outputs = []
    for command in examples:
        # The page's placeholders and hosted ids name objects of the hosted service: use this
        # run's. The commands are otherwise run as printed.
        command = command.replace("https://api.mistral.ai", URL)
        command = re.sub(r"ag_[0-9a-f]{32}", lambda _: ids["agent"], command)
        for placeholder, key in (("<agent_id>", "agent"), ("<conv_id>", "conversation"), ("<entry_id>", "entry")):
            command = command.replace(placeholder, ids.get(key, placeholder))
        result = subprocess.run(
            ["bash", "-c", command + " --silent --show-error --fail-with-body"], env=env, capture_output=True, text=True
        )
        assert result.returncode == 0, f"{command}\n{result.stdout}\n{result.stderr}"
        outputs.append(result.stdout)
        if result.stdout.startswith("event:"):
            assert "event: conversation.response.done" in result.stdout
            continue
        payload = json.loads(result.stdout)
        if isinstance(payload, dict) and payload.get("object") == "agent":
            ids.setdefault("agent", payload["id"])
        if isinstance(payload, dict) and payload.get("object") == "conversation.response":
            ids.setdefault("conversation", payload["conversation_id"])
            ids.setdefault("entry", payload["outputs"][0]["id"])
            assert payload["outputs"][0]["type"] == "message.output"
    agent_update = json.loads(outputs[1])
    version_switch = json.loads(outputs[2])
    assert agent_update["version"] == 1 and agent_update["description"] == "An edited simple agent."
    assert version_switch["version"] == 0
    assert json.loads(outputs[10])["conversation_id"] != ids["conversation"], "restart answers a new conversation"
