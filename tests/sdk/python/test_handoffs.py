"""Handoffs between agents through the official Python SDK (1.9.x and 3.x): handoff entries in
responses and history, the handoff events in streams, client execution, and the 3.x run
helpers completing a run that a server handoff passes to another agent."""

import pytest

from conftest import SDK_MAJOR, assert_complete


def agents(client, unique):
    billing = client.beta.agents.create(
        model="model-b", name=f"{unique}-billing", description="Answers invoice questions.", instructions="Billing."
    )
    triage = client.beta.agents.create(model="model-a", name=f"{unique}-triage", handoffs=[billing.id])
    return triage, billing


def handoff_to(agent, call_id="call0h001"):
    return {"tool_calls": [{"id": call_id, "name": f"handoff_to_{agent.id}", "arguments": "{}"}]}


def test_a_server_handoff_is_parsed_in_the_response_and_the_history(client, unique, upstream):
    triage, billing = agents(client, unique)
    upstream.script(handoff_to(billing), {"text": "Invoice paid."})

    response = client.beta.conversations.start(agent_id=triage.id, inputs="my invoice?")

    assert_complete(response)
    handoff, answer = response.outputs
    assert handoff.type == "agent.handoff"
    assert (handoff.previous_agent_id, handoff.next_agent_id) == (triage.id, billing.id)
    assert handoff.next_agent_name == billing.name
    assert answer.type == "message.output" and answer.agent_id == billing.id and answer.content == "Invoice paid."
    history = client.beta.conversations.get_history(conversation_id=response.conversation_id)
    assert [entry.type for entry in history.entries] == ["message.input", "agent.handoff", "message.output"]
    assert history.entries[1].id == handoff.id
    assert upstream.last_request()["model"] == "model-b"


def test_a_streamed_handoff_parses_its_events(client, unique, upstream):
    triage, billing = agents(client, unique)
    upstream.script(handoff_to(billing), {"text": "Streamed from billing."})

    events = list(client.beta.conversations.start_stream(agent_id=triage.id, inputs="invoice"))

    names = [event.event for event in events]
    assert names[:3] == ["conversation.response.started", "agent.handoff.started", "agent.handoff.done"]
    assert names[-1] == "conversation.response.done"
    assert events[1].data.previous_agent_id == triage.id
    assert events[2].data.next_agent_id == billing.id
    deltas = [event.data for event in events if event.event == "message.output.delta"]
    assert "".join(delta.content for delta in deltas) == "Streamed from billing."
    assert {delta.agent_id for delta in deltas} == {billing.id}


def test_client_execution_stops_at_the_handoff_and_the_target_answers_the_next_append(client, unique, upstream):
    triage, billing = agents(client, unique)
    upstream.script(handoff_to(billing), {"text": "Billing here."})

    started = client.beta.conversations.start(agent_id=triage.id, inputs="invoice", handoff_execution="client")
    appended = client.beta.conversations.append(conversation_id=started.conversation_id, inputs="hello?")

    assert [entry.type for entry in started.outputs] == ["agent.handoff"]
    assert appended.outputs[0].agent_id == billing.id
    assert appended.outputs[0].content == "Billing here."


@pytest.mark.skipif(SDK_MAJOR < 3, reason="the run helpers are tested with the 3.x SDK")
@pytest.mark.parametrize("streamed", [False, True])
def test_the_run_helpers_complete_a_run_that_a_server_handoff_passes_on(client, unique, upstream, streamed):
    import asyncio

    from mistralai.extra.run.context import RunContext
    from mistralai.extra.run.result import RunResult

    triage, billing = agents(client, unique)
    upstream.script(handoff_to(billing), {"text": "Billing took over."})

    async def main():
        async with RunContext(agent_id=triage.id) as run_ctx:
            if not streamed:
                return await client.beta.conversations.run_async(run_ctx=run_ctx, inputs="invoice")
            events = []
            async for event in await client.beta.conversations.run_stream_async(run_ctx=run_ctx, inputs="invoice"):
                events.append(event)
            return events[-1]

    result = asyncio.run(main())

    assert isinstance(result, RunResult)
    assert result.output_as_text == "Billing took over."
    # The stream helper rebuilds only messages and function calls from events.
    expected = ["message.output"] if streamed else ["agent.handoff", "message.output"]
    assert [entry.type for entry in result.output_entries] == expected
