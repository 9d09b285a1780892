"""The built-in `mock` model through the official Python SDK: an app's function-calling loop
driven with no model server (directives in the message, auto mode with the run helpers), and
an upstream-style error raised as the SDK raises it."""

import asyncio
import json

import pytest

from conftest import SDK_MAJOR, SDKError

LOOKUP = {
    "type": "function",
    "function": {
        "name": "lookup",
        "description": "Looks a word up.",
        "parameters": {"type": "object", "properties": {"word": {"type": "string"}}, "required": ["word"]},
    },
}


def test_a_call_directive_is_a_function_call_the_app_answers(client):
    started = client.beta.conversations.start(
        model="mock", inputs='Define it [[call:lookup {"word": "palaver"}]]', tools=[LOOKUP]
    )

    (call,) = started.outputs
    assert call.type == "function.call" and call.name == "lookup"
    assert json.loads(call.arguments) == {"word": "palaver"}
    answered = client.beta.conversations.append(
        conversation_id=started.conversation_id,
        inputs=[{"type": "function.result", "tool_call_id": call.tool_call_id, "result": "idle talk"}],
    )
    assert answered.outputs[0].content == "mock: the tools answered — lookup: idle talk"


def test_an_error_directive_raises_as_an_upstream_429_would(client):
    with pytest.raises(SDKError) as raised:
        client.beta.conversations.start(model="mock", inputs="[[error:429]]")

    assert raised.value.status_code == 429


@pytest.mark.skipif(SDK_MAJOR < 3, reason="the run helpers are tested with the 3.x SDK")
def test_the_run_helper_completes_an_auto_mode_loop_with_a_local_function(client):
    from mistralai.extra.run.context import RunContext

    seen = []

    async def main():
        async with RunContext(model="mock") as run_ctx:

            @run_ctx.register_func
            def lookup(word: str) -> str:
                """Looks a word up."""
                seen.append(word)
                return f"{word}: a definition"

            return await client.beta.conversations.run_async(run_ctx=run_ctx, inputs="Define something")

    result = asyncio.run(main())

    assert seen == ["text"], "auto mode called the function once, with arguments from its schema"
    assert result.output_as_text == "mock: the tools answered — lookup: text: a definition"
