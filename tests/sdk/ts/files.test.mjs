// The Files API through the official TypeScript SDK: upload, list, retrieve, download (a
// ReadableStream), signed URL, delete, and another key's 404.
import { test } from "node:test";
import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { Mistral } from "@mistralai/mistralai";
import { SDKError } from "@mistralai/mistralai/models/errors";

const serverURL = process.env.PALAVER_URL;
const client = new Mistral({ apiKey: process.env.PALAVER_KEY, serverURL });
const otherClient = new Mistral({ apiKey: process.env.PALAVER_OTHER_KEY, serverURL });
const unique = () => `sdk-ts-${randomUUID().slice(0, 12)}`;

const CONTENT = new Uint8Array(1024 * 1024 + 5).map((_, i) => (i * 7919) % 251);

const upload = (fileName, content = CONTENT) => client.files.upload({ file: { fileName, content }, purpose: "ocr" });

async function rejects(promise, check) {
  try {
    await promise;
  } catch (error) {
    check(error);
    return;
  }
  assert.fail("expected the call to fail");
}

test("an upload lists, retrieves and downloads byte for byte", async () => {
  const fileName = `${unique()}.bin`;

  const uploaded = await upload(fileName);

  assert.equal(uploaded.filename, fileName);
  assert.equal(uploaded.sizeBytes, CONTENT.length);
  assert.equal(uploaded.purpose, "ocr");
  assert.equal(typeof uploaded.createdAt, "number");
  const retrieved = await client.files.retrieve({ fileId: uploaded.id });
  assert.equal(retrieved.id, uploaded.id);
  assert.equal(retrieved.deleted, false);
  const listed = await client.files.list({ page: 0, pageSize: 100 });
  assert.ok(listed.data.some((f) => f.id === uploaded.id));
  assert.ok(listed.total >= 1);
  const found = await client.files.list({ search: fileName, purpose: "ocr", source: ["upload"] });
  assert.deepEqual(found.data.map((f) => f.id), [uploaded.id]);
  assert.equal(found.total, 1);
  const stream = await client.files.download({ fileId: uploaded.id });
  const bytes = new Uint8Array(await new Response(stream).arrayBuffer());
  assert.deepEqual(bytes, CONTENT);
});

test("a signed URL downloads without a key", async () => {
  const uploaded = await upload(`${unique()}.png`, new TextEncoder().encode("not really a PNG"));

  const { url } = await client.files.getSignedUrl({ fileId: uploaded.id, expiry: 2 });

  const response = await fetch(url);
  assert.equal(response.status, 200);
  assert.equal(response.headers.get("content-type"), "application/octet-stream");
  assert.equal(await response.text(), "not really a PNG");
});

test("a deleted file is gone, and another key's file is a 404", async () => {
  const kept = await upload(`${unique()}.txt`, new TextEncoder().encode("mine"));
  const doomed = await upload(`${unique()}.txt`, new TextEncoder().encode("soon gone"));

  const deleted = await client.files.delete({ fileId: doomed.id });

  assert.equal(deleted.id, doomed.id);
  assert.equal(deleted.deleted, true);
  await rejects(client.files.retrieve({ fileId: doomed.id }), (error) => {
    assert.ok(error instanceof SDKError);
    assert.equal(error.statusCode, 404);
  });
  await rejects(otherClient.files.retrieve({ fileId: kept.id }), (error) => {
    assert.ok(error instanceof SDKError);
    assert.equal(error.statusCode, 404);
  });
});
