// A web search and a cited answer through the official TypeScript SDK: `text` and
// `tool_reference` chunks in the response, the stream and the history.
import { test, beforeEach } from "node:test";
import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { Mistral } from "@mistralai/mistralai";

const control = process.env.PALAVER_UPSTREAM_CONTROL;
const client = new Mistral({ apiKey: process.env.PALAVER_KEY, serverURL: process.env.PALAVER_URL });

const post = (path, body) =>
  fetch(control + path, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(body) });
const script = (...replies) => post("/control/script", replies);

beforeEach(async () => {
  await post("/control/reset", {});
});

const searchThenCite = () =>
  script(
    { tool_calls: [{ id: "call0ws01", name: "web_search", arguments: '{"query": "last euro winner"}' }] },
    { text: "Spain won [1] in 2024 [0]." },
  );

const websearchAgent = () =>
  client.beta.agents.create({ model: "fake-model", name: `ts-${randomUUID()}`, tools: [{ type: "web_search" }] });

test("a cited answer parses as text and tool_reference chunks, in the response and the history", async () => {
  const agent = await websearchAgent();
  await searchThenCite();

  const response = await client.beta.conversations.start({ agentId: agent.id, inputs: "Who won the last Euro?" });

  const [execution, answer] = response.outputs;
  assert.equal(execution.type, "tool.execution");
  assert.equal(execution.name, "web_search");
  assert.deepEqual(
    answer.content.map((chunk) => chunk.type),
    ["text", "tool_reference", "text", "tool_reference", "text"],
  );
  assert.equal(answer.content[1].tool, "web_search");
  assert.equal(answer.content[1].title, "Euro winners 1");
  assert.equal(answer.content[1].url, "https://example.com/euro-1");
  assert.deepEqual(response.usage.connectors, { web_search: 1 });
  const history = await client.beta.conversations.getHistory({ conversationId: response.conversationId });
  assert.deepEqual(history.entries[2].content, answer.content);
});

test("a streamed cited answer parses its reference deltas", async () => {
  const agent = await websearchAgent();
  await searchThenCite();

  const stream = await client.beta.conversations.startStream({ agentId: agent.id, inputs: "Who won?" });
  const events = [];
  for await (const event of stream) events.push(event);

  assert.deepEqual(
    events.slice(1, 3).map((e) => e.event),
    ["tool.execution.started", "tool.execution.done"],
  );
  const deltas = events.filter((e) => e.event === "message.output.delta").map((e) => e.data);
  const references = deltas.filter((d) => typeof d.content !== "string").map((d) => d.content);
  assert.deepEqual(
    references.map((r) => [r.type, r.tool, r.title]),
    [
      ["tool_reference", "web_search", "Euro winners 1"],
      ["tool_reference", "web_search", "Euro winners 0"],
    ],
  );
  assert.deepEqual(events.at(-1).data.usage.connectors, { web_search: 1 });
});
