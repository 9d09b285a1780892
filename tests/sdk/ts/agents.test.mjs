// The agents API through the official TypeScript SDK.
import { test } from "node:test";
import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { Mistral } from "@mistralai/mistralai";
import { HTTPValidationError, SDKError } from "@mistralai/mistralai/models/errors";

const serverURL = process.env.PALAVER_URL;
const client = new Mistral({ apiKey: process.env.PALAVER_KEY, serverURL });
const otherClient = new Mistral({ apiKey: process.env.PALAVER_OTHER_KEY, serverURL });
const unique = () => `sdk-ts-${randomUUID().slice(0, 12)}`;

const ALL_TOOLS = [
  {
    type: "function",
    function: {
      name: "get_weather",
      description: "Weather of a city.",
      strict: false,
      parameters: { type: "object", properties: { city: { type: "string" } }, required: ["city"] },
    },
  },
  { type: "web_search" },
  { type: "web_search_premium", toolConfiguration: { requiresConfirmation: ["web_search"] } },
  { type: "code_interpreter" },
  { type: "image_generation" },
  { type: "document_library", libraryIds: ["0197f425-5e85-7353-b8e7-e8b974b9c613"] },
  { type: "connector", connectorId: "gmail", authorization: { type: "api-key", value: "k" } },
];

async function rejects(promise, check) {
  try {
    await promise;
  } catch (error) {
    check(error);
    return;
  }
  assert.fail("expected the call to fail");
}

test("create with every tool type round-trips without unknown tools", async () => {
  const agent = await client.beta.agents.create({
    model: "mistral-medium-latest",
    name: unique(),
    description: "Every tool type.",
    tools: ALL_TOOLS,
    completionArgs: { temperature: 0.3, topP: 0.95 },
  });

  assert.match(agent.id, /^ag_[0-9a-f]{32}$/);
  assert.equal(agent.version, 0);
  assert.deepEqual(agent.versions, [0]);
  assert.deepEqual(agent.tools.map((t) => t.type), ALL_TOOLS.map((t) => t.type));
  assert.ok(agent.tools.every((t) => !t.isUnknown), "every tool parsed");
  assert.ok(agent.createdAt instanceof Date);
  assert.equal(agent.completionArgs.topP, 0.95);
  const fetched = await client.beta.agents.get({ agentId: agent.id });
  assert.deepEqual(fetched.tools, agent.tools);
  assert.deepEqual(fetched.tools[2].toolConfiguration.requiresConfirmation, ["web_search"]);
});

test("update, version switch, versions and aliases", async () => {
  const agent = await client.beta.agents.create({ model: "m", name: unique(), description: "v0" });

  const updated = await client.beta.agents.update({ agentId: agent.id, updateAgentRequest: { description: "v1" } });
  const switched = await client.beta.agents.updateVersion({ agentId: agent.id, version: 0 });
  const versions = await client.beta.agents.listVersions({ agentId: agent.id });
  const one = await client.beta.agents.getVersion({ agentId: agent.id, version: "1" });
  const alias = await client.beta.agents.createVersionAlias({ agentId: agent.id, alias: "prod", version: 1 });
  const byAlias = await client.beta.agents.get({ agentId: agent.id, agentVersion: "prod" });
  const aliases = await client.beta.agents.listVersionAliases({ agentId: agent.id });
  await client.beta.agents.deleteVersionAlias({ agentId: agent.id, alias: "prod" });

  assert.equal(updated.version, 1);
  assert.equal(switched.version, 0);
  assert.equal(switched.description, "v0");
  assert.deepEqual(versions.map((v) => v.version), [0, 1]);
  assert.equal(one.description, "v1");
  assert.equal(alias.version, 1);
  assert.equal(byAlias.description, "v1");
  assert.deepEqual(aliases.map((a) => a.alias), ["prod"]);
  assert.deepEqual(await client.beta.agents.listVersionAliases({ agentId: agent.id }), []);
});

test("list, list pages and delete", async () => {
  const name = unique();
  const ids = [];
  for (let i = 0; i < 3; i++) ids.push((await client.beta.agents.create({ model: "m", name })).id);

  const listed = await client.beta.agents.list();
  const seen = [];
  for await (const page of await client.beta.agents.listPages({ pageSize: 2, name })) {
    seen.push(...page.result.data.map((a) => a.id));
  }
  await client.beta.agents.delete({ agentId: ids[0] });

  assert.ok(ids.every((id) => listed.some((a) => a.id === id)));
  assert.deepEqual(seen, [...ids].reverse());
  await rejects(client.beta.agents.get({ agentId: ids[0] }), (e) => {
    assert.ok(e instanceof SDKError, String(e));
    assert.equal(e.statusCode, 404);
  });
});

test("invalid input raises HTTPValidationError naming the field", async () => {
  await rejects(client.beta.agents.create({ model: "m", name: "a", completionArgs: { topP: 5 } }), (e) => {
    assert.ok(e instanceof HTTPValidationError, String(e));
    assert.deepEqual(e.detail[0].loc, ["body", "completion_args", "top_p"]);
  });
});

test("a wrong key is a 401 and another key's agents are invisible", async () => {
  const agent = await client.beta.agents.create({ model: "m", name: unique() });
  const stranger = new Mistral({ apiKey: "not-a-key", serverURL });

  await rejects(stranger.beta.agents.list(), (e) => assert.equal(e.statusCode, 401));
  await rejects(otherClient.beta.agents.get({ agentId: agent.id }), (e) => assert.equal(e.statusCode, 404));
  const listed = await otherClient.beta.agents.list({ pageSize: 1000 });
  assert.ok(!listed.some((a) => a.id === agent.id));
});

test("models list validates", async () => {
  const models = await client.models.list();

  const echo = models.data.find((m) => m.id === "echo");
  assert.ok(echo, "echo is listed");
  assert.equal(echo.capabilities.completionChat, true);
});
