// Testing an app built on the Agents API against palaver's `mock` model, with node:test and
// the official TypeScript SDK. (This file is the README's testing guide, verbatim.)
import { test, beforeEach } from "node:test";
import assert from "node:assert/strict";
import { Mistral } from "@mistralai/mistralai";

const serverURL = process.env.PALAVER_URL ?? "http://127.0.0.1:8000";
const apiKey = process.env.PALAVER_KEY ?? "test-key";

// palaver's mock control API (rules and journal of this key's workspace).
async function control(method, path, body) {
  const response = await fetch(serverURL + path, {
    method,
    headers: { authorization: `Bearer ${apiKey}`, "content-type": "application/json" },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  return response.json();
}

// --- the app under test: asks a model, runs the functions it calls, returns the answer
const weatherTool = {
  type: "function",
  function: {
    name: "get_weather",
    description: "Current weather in a city.",
    parameters: { type: "object", properties: { city: { type: "string" } }, required: ["city"] },
  },
};
const getWeather = ({ city }) => ({ Rome: "22C and sunny" })[city] ?? "unknown";

async function answer(client, question) {
  let response = await client.beta.conversations.start({ model: "mock", inputs: question, tools: [weatherTool] });
  for (;;) {
    const calls = response.outputs.filter((output) => output.type === "function.call");
    if (calls.length === 0) return response.outputs.at(-1).content;
    const inputs = calls.map((call) => ({
      type: "function.result",
      toolCallId: call.toolCallId,
      result: getWeather(JSON.parse(call.arguments)),
    }));
    response = await client.beta.conversations.append({
      conversationId: response.conversationId,
      conversationAppendRequest: { inputs },
    });
  }
}

// --- the tests
beforeEach(async () => {
  await control("DELETE", "/palaver/mock/rules"); // no rules, empty journal
});

test("the app runs the function the model calls and returns the final answer", async () => {
  await control("POST", "/palaver/mock/rules", {
    rules: [
      {
        when: { message_contains: "weather", last: "user" },
        replies: [{ calls: [{ name: "get_weather", arguments: { city: "Rome" } }] }],
      },
      { when: { last: "tool" }, replies: [{ text: "It is 22C and sunny in Rome." }] },
    ],
  });
  const client = new Mistral({ apiKey, serverURL });

  const result = await answer(client, "What is the weather in Rome?");

  assert.equal(result, "It is 22C and sunny in Rome.");
  const { requests } = await control("GET", "/palaver/mock/journal");
  assert.deepEqual(requests[0].tools.map((tool) => tool.function.name), ["get_weather"]);
  assert.equal(requests[1].messages.at(-1).content, "22C and sunny");
});
