"""Conversations through the official Python SDK (responses, streams, function and connector
tools), against palaver and a scripted upstream."""

import pytest

from conftest import SDK_MAJOR, HTTPValidationError, SDKError, assert_complete, modern_only

WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather of a city.",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}


def kinds(entries):
    return [entry.type for entry in entries]


def event_names(stream):
    events = list(stream)
    for event in events:
        assert_complete(event.data, f"event {event.event}")
    return [event.event for event in events], [event.data for event in events]


def test_start_append_history_and_messages_with_an_agent(client, unique, upstream):
    agent = client.beta.agents.create(model="mistral-medium-latest", name=unique, instructions="Be brief.")
    upstream.script({"text": "A physicist."}, {"text": "Un physicien."})

    started = client.beta.conversations.start(agent_id=agent.id, inputs="Who is Albert Einstein?")
    appended = client.beta.conversations.append(conversation_id=started.conversation_id, inputs="Translate to French.")
    history = client.beta.conversations.get_history(conversation_id=started.conversation_id)
    messages = client.beta.conversations.get_messages(conversation_id=started.conversation_id)
    conversation = client.beta.conversations.get(conversation_id=started.conversation_id)

    for parsed in (started, appended, history, messages, conversation):
        assert_complete(parsed)
    assert started.conversation_id.startswith("conv_")
    assert started.outputs[0].content == "A physicist."
    assert started.outputs[0].agent_id == agent.id
    assert started.usage.total_tokens == 12
    assert appended.conversation_id == started.conversation_id
    assert appended.outputs[0].content == "Un physicien."
    assert kinds(history.entries) == ["message.input", "message.output", "message.input", "message.output"]
    assert history.entries[3].id == appended.outputs[0].id
    assert len(messages.messages) == 4
    assert conversation.agent_id == agent.id
    assert upstream.last_request()["messages"][0] == {"role": "system", "content": "Be brief."}
    assert len(upstream.last_request()["messages"]) == 4


def test_a_model_conversation_with_list_inputs_is_listed_and_read_back(client, upstream):
    started = client.beta.conversations.start(
        model="mistral-medium-latest",
        inputs=[{"role": "user", "content": "Who is Albert Einstein?"}],
        instructions="check if it has tool calls",
        completion_args={"temperature": 0.0, "max_tokens": 1000},
        name="named",
    )

    conversation = client.beta.conversations.get(conversation_id=started.conversation_id)
    listed = client.beta.conversations.list(page=0, page_size=100)

    for parsed in (started, conversation, *listed):
        assert_complete(parsed)
    assert started.outputs[0].content == "echo: Who is Albert Einstein?"
    assert conversation.model == "mistral-medium-latest"
    assert conversation.instructions == "check if it has tool calls"
    assert conversation.completion_args.max_tokens == 1000
    assert conversation.name == "named"
    assert started.conversation_id in [c.id for c in listed]
    assert upstream.last_request()["temperature"] == 0.0


def test_restart_branches_into_a_new_conversation(client, upstream):
    upstream.script({"text": "A1"}, {"text": "A2"}, {"text": "Resposta"})
    started = client.beta.conversations.start(model="m", inputs="Q1")
    client.beta.conversations.append(conversation_id=started.conversation_id, inputs="Q2")

    restarted = client.beta.conversations.restart(
        conversation_id=started.conversation_id, from_entry_id=started.outputs[0].id, inputs="Translate to Portuguese."
    )

    assert restarted.conversation_id != started.conversation_id
    assert restarted.outputs[0].content == "Resposta"
    branch = client.beta.conversations.get_history(conversation_id=restarted.conversation_id)
    original = client.beta.conversations.get_history(conversation_id=started.conversation_id)
    assert [e.id for e in branch.entries[:2]] == [e.id for e in original.entries[:2]]
    assert len(original.entries) == 4 and len(branch.entries) == 4


def test_function_calling_round_trip(client, upstream):
    upstream.script(
        {"tool_calls": [{"id": "call00001", "name": "get_weather", "arguments": '{"city": "Paris"}'}]},
        {"text": "It is sunny."},
    )

    started = client.beta.conversations.start(model="m", inputs="Weather in Paris?", tools=[WEATHER_TOOL])
    call = started.outputs[0]
    answered = client.beta.conversations.append(
        conversation_id=started.conversation_id,
        inputs=[{"type": "function.result", "tool_call_id": call.tool_call_id, "result": '{"sky": "clear"}'}],
    )

    assert_complete(started)
    assert_complete(answered)
    assert_complete(client.beta.conversations.get_history(conversation_id=started.conversation_id))
    assert call.type == "function.call"
    assert call.name == "get_weather"
    assert call.arguments == '{"city": "Paris"}'
    assert answered.outputs[0].content == "It is sunny."
    assert upstream.last_request()["messages"][-1] == {
        "role": "tool",
        "tool_call_id": "call00001",
        "name": "get_weather",
        "content": '{"sky": "clear"}',
    }


def test_streams_of_start_append_and_restart_parse_without_unknown_events(client, upstream):
    upstream.script({"text": "Hello there friend"}, {"text": "Bonjour"}, {"text": "Olá"})

    names, data = event_names(client.beta.conversations.start_stream(model="m", inputs="hi"))
    conversation_id = data[0].conversation_id
    append_names, _ = event_names(client.beta.conversations.append_stream(conversation_id=conversation_id, inputs="fr"))
    history = client.beta.conversations.get_history(conversation_id=conversation_id)
    restart_names, restart_data = event_names(
        client.beta.conversations.restart_stream(
            conversation_id=conversation_id, from_entry_id=history.entries[1].id, inputs="pt"
        )
    )

    assert names == [
        "conversation.response.started",
        "message.output.delta",
        "message.output.delta",
        "message.output.delta",
        "conversation.response.done",
    ]
    assert "".join(d.content for d in data[1:4]) == history.entries[1].content == "Hello there friend"
    assert all(d.id == history.entries[1].id for d in data[1:4])
    assert all(not type(d).__name__.startswith("Unknown") for d in data)
    assert append_names == ["conversation.response.started", "message.output.delta", "conversation.response.done"]
    assert restart_data[0].conversation_id != conversation_id
    assert restart_names[-1] == "conversation.response.done"


def test_a_streamed_function_call(client, upstream):
    upstream.script({"tool_calls": [{"id": "call00002", "name": "get_weather", "arguments": '{"city": "Rome"}'}]})

    names, data = event_names(client.beta.conversations.start_stream(model="m", inputs="Rome?", tools=[WEATHER_TOOL]))

    assert names == ["conversation.response.started", "function.call.delta", "conversation.response.done"]
    assert data[1].tool_call_id == "call00002"
    assert data[1].arguments == '{"city": "Rome"}'


def test_an_upstream_failure_mid_stream_is_an_error_event(client, upstream):
    upstream.script({"status": 500, "body": '{"message": "boom"}'})

    names, data = event_names(client.beta.conversations.start_stream(model="m", inputs="hi"))

    assert names == ["conversation.response.started", "conversation.response.error"]
    assert data[1].code == 502


def test_store_false_keeps_nothing(client, upstream):
    started = client.beta.conversations.start(model="m", inputs="hi", store=False)

    with pytest.raises(SDKError) as raised:
        client.beta.conversations.get(conversation_id=started.conversation_id)

    assert started.outputs[0].content == "echo: hi"
    assert raised.value.status_code == 404


def test_errors_map_to_the_sdk_exceptions(client, upstream):
    with pytest.raises(SDKError) as missing:
        client.beta.conversations.append(conversation_id="conv_missing", inputs="x")
    with pytest.raises(HTTPValidationError) as invalid:
        client.beta.conversations.start(model="m", inputs="x", completion_args={"top_p": 7})

    assert missing.value.status_code == 404
    assert list(invalid.value.data.detail[0].loc) == ["body", "completion_args", "top_p"]


@modern_only
def test_delete_and_metadata_filter(client, unique, upstream):
    tagged = client.beta.conversations.start(model="m", inputs="x", metadata={"suite": unique})

    filtered = client.beta.conversations.list(metadata={"suite": unique})
    client.beta.conversations.delete(conversation_id=tagged.conversation_id)

    assert [c.id for c in filtered] == [tagged.conversation_id]
    with pytest.raises(SDKError) as raised:
        client.beta.conversations.get(conversation_id=tagged.conversation_id)
    assert raised.value.status_code == 404


@modern_only
def test_agent_version_pins_and_restart_with_agent_version(client, unique, upstream):
    agent = client.beta.agents.create(model="m", name=unique, instructions="zero")
    client.beta.agents.update(agent_id=agent.id, instructions="one")
    client.beta.agents.create_version_alias(agent_id=agent.id, alias="prod", version=0)

    started = client.beta.conversations.start(agent_id=agent.id, agent_version="prod", inputs="x")
    pinned = upstream.last_request()["messages"][0]["content"]
    restarted = client.beta.conversations.restart(
        conversation_id=started.conversation_id, from_entry_id=started.outputs[0].id, inputs="y", agent_version=1
    )
    restarted_system = upstream.last_request()["messages"][0]["content"]

    assert pinned == "zero"
    assert restarted_system == "one"
    assert client.beta.conversations.get(conversation_id=restarted.conversation_id).agent_version == 1


@pytest.mark.skipif(SDK_MAJOR < 3, reason="the run helpers are tested with the 3.x SDK")
def test_run_async_executes_a_registered_local_function(client, upstream):
    import asyncio

    from mistralai.extra.run.context import RunContext

    upstream.script(
        {"tool_calls": [{"id": "call00003", "name": "get_weather", "arguments": '{"city": "Oslo"}'}]},
        {"text": "Cold in Oslo."},
    )

    async def main():
        async with RunContext(model="mistral-medium-latest") as run_ctx:

            @run_ctx.register_func
            def get_weather(city: str) -> str:
                """Weather of a city."""
                return f"-3C in {city}"

            return await client.beta.conversations.run_async(run_ctx=run_ctx, inputs="Weather in Oslo?")

    result = asyncio.run(main())

    assert result.output_as_text == "Cold in Oslo."
    tool_message = upstream.last_request()["messages"][-1]
    assert tool_message["role"] == "tool" and tool_message["content"] == "-3C in Oslo"


@pytest.mark.skipif(SDK_MAJOR < 3, reason="the run helpers are tested with the 3.x SDK")
def test_run_stream_async_executes_a_registered_local_function(client, upstream):
    import asyncio

    from mistralai.extra.run.context import RunContext
    from mistralai.extra.run.result import RunResult

    upstream.script(
        {"tool_calls": [{"id": "call00004", "name": "add", "arguments": '{"a": 2, "b": 3}'}]},
        {"text": "The sum is 5."},
    )

    async def main():
        async with RunContext(model="mistral-medium-latest") as run_ctx:

            @run_ctx.register_func
            def add(a: int, b: int) -> int:
                """Adds two numbers."""
                return a + b

            events = []
            stream = await client.beta.conversations.run_stream_async(run_ctx=run_ctx, inputs="2+3?")
            async for event in stream:
                events.append(event)
            return events

    events = asyncio.run(main())

    result = events[-1]
    assert isinstance(result, RunResult)
    assert result.output_as_text == "The sum is 5."
    assert upstream.last_request()["messages"][-1]["content"] == "5"


def test_agent_completions_json_and_stream(client, unique, upstream):
    agent = client.beta.agents.create(model="m", name=unique, instructions="Answer shortly.")
    upstream.script({"text": "Short answer."}, {"text": "Streamed answer."})

    completed = client.agents.complete(agent_id=agent.id, messages=[{"role": "user", "content": "hi"}])
    sent = upstream.last_request()
    chunks = list(client.agents.stream(agent_id=agent.id, messages=[{"role": "user", "content": "hi"}]))

    assert completed.choices[0].message.content == "Short answer."
    assert completed.choices[0].finish_reason == "stop"
    assert completed.usage.total_tokens == 12
    assert sent["messages"][0] == {"role": "system", "content": "Answer shortly."}
    text = "".join(c.data.choices[0].delta.content or "" for c in chunks if c.data.choices)
    assert text == "Streamed answer."
    assert chunks[-1].data.choices[0].finish_reason == "stop"


def _orders_agent(client, unique):
    """An agent whose `orders` connector (tests/sdk/fake_upstream.py's MCP server) needs a
    confirmation before `delete_order` runs."""
    return client.beta.agents.create(
        model="mistral-medium-latest",
        name=unique,
        tools=[{"type": "connector", "connector_id": "orders",
                "tool_configuration": {"requires_confirmation": ["delete_order"]}}],
    )


@pytest.mark.skipif(SDK_MAJOR < 3, reason="the run helpers are tested with the 3.x SDK")
@pytest.mark.parametrize("decision", ["confirm", "reject"])
def test_run_async_defers_a_server_tool_until_the_user_decides(client, upstream, unique, decision):
    import asyncio

    from mistralai.extra.exceptions import DeferredToolCallsException
    from mistralai.extra.run.context import RunContext

    agent = _orders_agent(client, unique)
    upstream.script(
        {"tool_calls": [{"id": "call00007", "name": "delete_order", "arguments": '{"id": 7}'}]},
        {"text": "Done." if decision == "confirm" else "Kept it."},
    )

    async def main():
        async with RunContext(agent_id=agent.id) as run_ctx:
            with pytest.raises(DeferredToolCallsException) as deferred:
                await client.beta.conversations.run_async(run_ctx=run_ctx, inputs="Delete order 7")
            calls = deferred.value.deferred_calls
            assert [c.tool_name for c in calls] == ["delete_order"]
            assert calls[0].function_call.confirmation_status == "pending"
            assert upstream.mcp_calls() == [], "nothing runs before the decision"
            answer = calls[0].confirm() if decision == "confirm" else calls[0].reject()
            return await client.beta.conversations.run_async(run_ctx=run_ctx, inputs=[answer])

    result = asyncio.run(main())

    if decision == "confirm":
        assert upstream.mcp_calls() == [{"name": "delete_order", "arguments": {"id": 7}}]
        assert result.output_as_text == "Done."
        execution = [e for e in result.output_entries if e.type == "tool.execution"]
        assert execution and execution[0].info["output"] == "Order 7 deleted."
        assert upstream.last_request()["messages"][-1]["content"] == "Order 7 deleted."
    else:
        assert upstream.mcp_calls() == []
        assert result.output_as_text == "Kept it."
        assert upstream.last_request()["messages"][-1]["content"] == "The user denied this tool call."
