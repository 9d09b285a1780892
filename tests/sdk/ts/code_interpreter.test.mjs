// A file written by code_interpreter, shown as a `tool_file` chunk and downloaded with
// `files.download`, through the official TypeScript SDK.
import { test, beforeEach } from "node:test";
import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { Mistral } from "@mistralai/mistralai";

const control = process.env.PALAVER_UPSTREAM_CONTROL;
const client = new Mistral({ apiKey: process.env.PALAVER_KEY, serverURL: process.env.PALAVER_URL });

const post = (path, body) =>
  fetch(control + path, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(body) });

beforeEach(async () => {
  await post("/control/reset", {});
});

test("a file the code wrote is a tool_file the SDK downloads", async () => {
  const agent = await client.beta.agents.create({
    model: "fake-model",
    name: `ts-${randomUUID()}`,
    tools: [{ type: "code_interpreter" }],
  });
  const code = "open('report.txt', 'w').write('written in the sandbox')";
  await post("/control/script", [
    { tool_calls: [{ id: "call0ci01", name: "code_interpreter", arguments: JSON.stringify({ code }) }] },
    { text: "Saved it." },
  ]);

  const response = await client.beta.conversations.start({ agentId: agent.id, inputs: "Write a report" });

  const [execution, answer] = response.outputs;
  assert.equal(execution.name, "code_interpreter");
  const file = answer.content[1];
  assert.equal(file.type, "tool_file");
  assert.equal(file.tool, "code_interpreter");
  assert.equal(file.fileName, "report.txt");
  const stream = await client.files.download({ fileId: file.fileId });
  assert.equal(await new Response(stream).text(), "written in the sandbox");
});
