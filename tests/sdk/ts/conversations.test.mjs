// Conversations through the official TypeScript SDK, against palaver and a scripted upstream.
import { test, beforeEach } from "node:test";
import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { Mistral } from "@mistralai/mistralai";
import { HTTPValidationError, SDKError } from "@mistralai/mistralai/models/errors";

const serverURL = process.env.PALAVER_URL;
const control = process.env.PALAVER_UPSTREAM_CONTROL;
const client = new Mistral({ apiKey: process.env.PALAVER_KEY, serverURL });

const post = (path, body) =>
  fetch(control + path, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(body) });
const script = (...replies) => post("/control/script", replies);
const lastRequest = async () => (await (await fetch(control + "/control/requests")).json()).at(-1);

beforeEach(async () => {
  await post("/control/reset", {});
});

async function collect(stream) {
  const events = [];
  for await (const event of stream) events.push(event);
  return events;
}

const weatherTool = {
  type: "function",
  function: { name: "get_weather", description: "Weather.", parameters: { type: "object", properties: {} } },
};

test("start, append, history, messages and get with an agent", async () => {
  const agent = await client.beta.agents.create({ model: "m", name: `ts-${randomUUID()}`, instructions: "Sys." });
  await script({ text: "A1" }, { text: "A2" });

  const started = await client.beta.conversations.start({ agentId: agent.id, inputs: "Q1" });
  const appended = await client.beta.conversations.append({
    conversationId: started.conversationId,
    conversationAppendRequest: { inputs: "Q2" },
  });
  const history = await client.beta.conversations.getHistory({ conversationId: started.conversationId });
  const messages = await client.beta.conversations.getMessages({ conversationId: started.conversationId });
  const conversation = await client.beta.conversations.get({ conversationId: started.conversationId });

  assert.equal(started.outputs[0].content, "A1");
  assert.ok(started.outputs[0].createdAt instanceof Date);
  assert.equal(appended.outputs[0].content, "A2");
  assert.deepEqual(history.entries.map((e) => e.type), ["message.input", "message.output", "message.input", "message.output"]);
  assert.equal(messages.messages.length, 4);
  assert.equal(conversation.agentId, agent.id);
  assert.equal((await lastRequest()).messages.length, 4);
});

test("a model conversation, list, restart and delete", async () => {
  const started = await client.beta.conversations.start({
    model: "m",
    inputs: [{ role: "user", content: "Q1" }],
    tools: [weatherTool],
    completionArgs: { temperature: 0.2 },
  });
  const restarted = await client.beta.conversations.restart({
    conversationId: started.conversationId,
    conversationRestartRequest: { fromEntryId: started.outputs[0].id, inputs: "again" },
  });
  const listed = await client.beta.conversations.list();
  const conversation = await client.beta.conversations.get({ conversationId: started.conversationId });
  await client.beta.conversations.delete({ conversationId: restarted.conversationId });

  assert.notEqual(restarted.conversationId, started.conversationId);
  assert.equal(restarted.outputs[0].content, "echo: again");
  assert.ok(listed.some((c) => c.id === started.conversationId));
  assert.equal(conversation.model, "m");
  assert.equal(conversation.tools[0].type, "function");
  await assert.rejects(client.beta.conversations.get({ conversationId: restarted.conversationId }), (e) => {
    assert.ok(e instanceof SDKError);
    assert.equal(e.statusCode, 404);
    return true;
  });
});

test("function calling round trip", async () => {
  await script({ tool_calls: [{ id: "callTS001", name: "get_weather", arguments: '{"city":"Lyon"}' }] }, { text: "Sunny." });

  const started = await client.beta.conversations.start({ model: "m", inputs: "Lyon?", tools: [weatherTool] });
  const call = started.outputs[0];
  const answered = await client.beta.conversations.append({
    conversationId: started.conversationId,
    conversationAppendRequest: { inputs: [{ type: "function.result", toolCallId: call.toolCallId, result: "sun" }] },
  });

  assert.equal(call.type, "function.call");
  assert.equal(call.name, "get_weather");
  assert.equal(answered.outputs[0].content, "Sunny.");
  assert.deepEqual((await lastRequest()).messages.at(-1), { role: "tool", tool_call_id: "callTS001", name: "get_weather", content: "sun" });
});

test("startStream, appendStream and restartStream parse every event", async () => {
  await script({ text: "one two three" }, { text: "four" }, { text: "five" });

  const started = await collect(await client.beta.conversations.startStream({ model: "m", inputs: "hi" }));
  const conversationId = started[0].data.conversationId;
  const appended = await collect(
    await client.beta.conversations.appendStream({ conversationId, conversationAppendStreamRequest: { inputs: "more" } }),
  );
  const history = await client.beta.conversations.getHistory({ conversationId });
  const restarted = await collect(
    await client.beta.conversations.restartStream({
      conversationId,
      conversationRestartStreamRequest: { fromEntryId: history.entries[1].id, inputs: "again" },
    }),
  );

  assert.deepEqual(started.map((e) => e.event), [
    "conversation.response.started",
    "message.output.delta",
    "message.output.delta",
    "message.output.delta",
    "conversation.response.done",
  ]);
  assert.ok([...started, ...appended, ...restarted].every((e) => !e.data.isUnknown), "no unknown events");
  const deltas = started.filter((e) => e.event === "message.output.delta");
  assert.equal(deltas.map((e) => e.data.content).join(""), history.entries[1].content);
  assert.ok(deltas.every((e) => e.data.id === history.entries[1].id && e.data.outputIndex === 0));
  assert.equal(appended.at(-1).event, "conversation.response.done");
  assert.equal(appended.at(-1).data.usage.totalTokens, 11);
  assert.notEqual(restarted[0].data.conversationId, conversationId);
});

test("a failing upstream mid-stream yields conversation.response.error", async () => {
  await script({ status: 500, body: '{"message":"boom"}' });

  const events = await collect(await client.beta.conversations.startStream({ model: "m", inputs: "hi" }));

  assert.deepEqual(events.map((e) => e.event), ["conversation.response.started", "conversation.response.error"]);
  assert.equal(events[1].data.code, 502);
});

test("invalid input raises HTTPValidationError with the field", async () => {
  await assert.rejects(
    client.beta.conversations.start({ model: "m", inputs: "x", completionArgs: { topP: 9 } }),
    (e) => {
      assert.ok(e instanceof HTTPValidationError, String(e));
      assert.deepEqual(e.detail[0].loc, ["body", "completion_args", "top_p"]);
      return true;
    },
  );
});

test("agent completions, JSON and stream", async () => {
  const agent = await client.beta.agents.create({ model: "m", name: `ts-${randomUUID()}` });
  await script({ text: "Short." }, { text: "Streamed words." });

  const completed = await client.agents.complete({ agentId: agent.id, messages: [{ role: "user", content: "hi" }] });
  const stream = await client.agents.stream({ agentId: agent.id, messages: [{ role: "user", content: "hi" }] });
  let text = "";
  for await (const chunk of stream) text += chunk.data.choices[0]?.delta?.content ?? "";

  assert.equal(completed.choices[0].message.content, "Short.");
  assert.equal(text, "Streamed words.");
});

// zod fills in defaults such as `object: "entry"`, so a dropped field would pass the SDK's
// parsing; the contract says to always send them. Read the raw bodies too.
test("always-sent fields are on the wire", async () => {
  const headers = { authorization: `Bearer ${process.env.PALAVER_KEY}`, "content-type": "application/json" };
  const raw = async (path, init) => (await fetch(serverURL + path, { headers, ...init })).json();
  const started = await raw("/v1/conversations", { method: "POST", body: JSON.stringify({ model: "m", inputs: "hi" }) });
  const history = await raw(`/v1/conversations/${started.conversation_id}/history`);
  const agent = await raw("/v1/agents", { method: "POST", body: JSON.stringify({ model: "m", name: "wire" }) });

  assert.equal(started.object, "conversation.response");
  assert.equal(history.object, "conversation.history");
  for (const entry of [...started.outputs, ...history.entries]) {
    for (const field of ["object", "type", "id", "created_at"]) assert.ok(field in entry, `entry.${field} missing`);
    assert.equal(entry.object, "entry");
  }
  for (const field of ["object", "id", "versions", "deployment_chat", "source", "created_at", "updated_at"]) {
    assert.ok(field in agent, `agent.${field} missing`);
  }
  // And the SDK parses the same bodies.
  await client.beta.conversations.getHistory({ conversationId: started.conversation_id });
});

test("handoffs parse in responses, history and streams", async () => {
  const billing = await client.beta.agents.create({ model: "model-b", name: `ts-billing-${randomUUID()}` });
  const triage = await client.beta.agents.create({
    model: "model-a",
    name: `ts-triage-${randomUUID()}`,
    handoffs: [billing.id],
  });
  const handoff = { tool_calls: [{ id: "call0h002", name: `handoff_to_${billing.id}`, arguments: "{}" }] };
  await script(handoff, { text: "Billing here." }, handoff, { text: "Streamed billing." });

  const response = await client.beta.conversations.start({ agentId: triage.id, inputs: "invoice" });
  const history = await client.beta.conversations.getHistory({ conversationId: response.conversationId });
  const events = await collect(await client.beta.conversations.startStream({ agentId: triage.id, inputs: "again" }));

  assert.deepEqual(
    response.outputs.map((o) => o.type),
    ["agent.handoff", "message.output"],
  );
  assert.equal(response.outputs[0].previousAgentId, triage.id);
  assert.equal(response.outputs[0].nextAgentId, billing.id);
  assert.equal(response.outputs[1].agentId, billing.id);
  assert.deepEqual(
    history.entries.map((e) => e.type),
    ["message.input", "agent.handoff", "message.output"],
  );
  const names = events.map((e) => e.event);
  assert.deepEqual(names.slice(0, 3), ["conversation.response.started", "agent.handoff.started", "agent.handoff.done"]);
  assert.equal(events[2].data.nextAgentId, billing.id);
  assert.equal(names.at(-1), "conversation.response.done");
});

test("the mock model's call directive is a function call the app answers", async () => {
  const lookup = {
    type: "function",
    function: { name: "lookup", parameters: { type: "object", properties: { word: { type: "string" } } } },
  };
  const started = await client.beta.conversations.start({
    model: "mock",
    inputs: 'Define it [[call:lookup {"word": "palaver"}]]',
    tools: [lookup],
  });
  const call = started.outputs[0];
  assert.equal(call.type, "function.call");
  assert.deepEqual(JSON.parse(call.arguments), { word: "palaver" });

  const answered = await client.beta.conversations.append({
    conversationId: started.conversationId,
    conversationAppendRequest: {
      inputs: [{ type: "function.result", toolCallId: call.toolCallId, result: "idle talk" }],
    },
  });

  assert.equal(answered.outputs[0].content, "mock: the tools answered — lookup: idle talk");
});
