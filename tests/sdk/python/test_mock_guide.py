"""Testing an app built on the Agents API against palaver's `mock` model: script the
model, run the app's function-calling loop through the official SDK, assert on what the
model was sent. (This file is the README's testing guide, verbatim.)"""

import json
import os
import urllib.request

import pytest

try:
    from mistralai.client import Mistral  # mistralai 2.x / 3.x
except ImportError:
    from mistralai import Mistral  # mistralai 1.9.x

PALAVER_URL = os.environ.get("PALAVER_URL", "http://127.0.0.1:8000")
PALAVER_KEY = os.environ.get("PALAVER_KEY", "test-key")


def control(method, path, body=None):
    """palaver's mock control API (rules and journal of this key's workspace)."""
    request = urllib.request.Request(
        PALAVER_URL + path,
        data=None if body is None else json.dumps(body).encode(),
        method=method,
        headers={"Authorization": f"Bearer {PALAVER_KEY}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request) as response:
        return json.loads(response.read())


# --- the app under test: asks a model, runs the functions it calls, returns the answer
WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather in a city.",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}


def get_weather(city):
    return {"Rome": "22C and sunny"}.get(city, "unknown")


def answer(client, question):
    response = client.beta.conversations.start(model="mock", inputs=question, tools=[WEATHER_TOOL])
    while calls := [output for output in response.outputs if output.type == "function.call"]:
        results = [
            {"type": "function.result", "tool_call_id": call.tool_call_id,
             "result": get_weather(**json.loads(call.arguments))}
            for call in calls
        ]
        response = client.beta.conversations.append(conversation_id=response.conversation_id, inputs=results)
    return response.outputs[-1].content


# --- the tests
@pytest.fixture
def model():
    control("DELETE", "/palaver/mock/rules")  # no rules, empty journal
    yield
    control("DELETE", "/palaver/mock/rules")


def test_the_app_runs_the_function_the_model_calls_and_returns_the_final_answer(model):
    control("POST", "/palaver/mock/rules", {"rules": [
        {"when": {"message_contains": "weather", "last": "user"},
         "replies": [{"calls": [{"name": "get_weather", "arguments": {"city": "Rome"}}]}]},
        {"when": {"last": "tool"}, "replies": [{"text": "It is 22C and sunny in Rome."}]},
    ]})
    client = Mistral(api_key=PALAVER_KEY, server_url=PALAVER_URL)

    result = answer(client, "What is the weather in Rome?")

    assert result == "It is 22C and sunny in Rome."
    first, second = control("GET", "/palaver/mock/journal")["requests"]
    assert [tool["function"]["name"] for tool in first["tools"]] == ["get_weather"]
    assert second["messages"][-1]["role"] == "tool"
    assert second["messages"][-1]["content"] == "22C and sunny"


def test_the_app_surfaces_a_rate_limit(model):
    control("POST", "/palaver/mock/rules", {"rules": [{"replies": [{"error": {"status": 429}}]}]})
    client = Mistral(api_key=PALAVER_KEY, server_url=PALAVER_URL)

    with pytest.raises(Exception) as raised:
        answer(client, "What is the weather in Rome?")

    assert "429" in str(raised.value)
