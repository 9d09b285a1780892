"""A scripted fake of an OpenAI-compatible model server for the SDK suites (stdlib only).

POST /v1/chat/completions   answers with the next scripted reply, or by default with
                            "echo: <last user message>"; streamed when asked
                            (`"stream": true`), else one JSON answer
POST /control/script        body: a JSON list of replies to queue
POST /control/reset         forgets the queue and the recorded requests
GET  /control/requests      every chat request body received so far
GET  /v1/models             one model card
POST /mcp                   a small MCP server (Streamable HTTP, JSON answers) with the tool
                            `delete_order`, for palaver's `orders` connector
GET  /control/mcp-calls     the `tools/call` params it received
GET  /searxng/search        a SearXNG JSON answer with two hits, for palaver's `[web_search]`

A reply is {"text": "..."} or {"tool_calls": [{"id", "name", "arguments"}], "text": "..."}
or {"status": 500, "body": "..."}.

Usage: python3 fake_upstream.py PORT
"""

import json
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

LOCK = threading.Lock()
SCRIPT = []
REQUESTS = []
MCP_CALLS = []

MCP_TOOLS = [{"name": "delete_order", "description": "Deletes an order.",
              "inputSchema": {"type": "object", "properties": {"id": {"type": "integer"}}}}]


def last_user_text(body):
    for message in reversed(body.get("messages", [])):
        if message.get("role") in ("user", "tool"):
            content = message.get("content")
            if isinstance(content, list):
                return "".join(part.get("text", "") for part in content if isinstance(part, dict))
            return content or ""
    return ""


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def send_json(self, status, payload):
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def read_json(self):
        length = int(self.headers.get("Content-Length") or 0)
        return json.loads(self.rfile.read(length) or b"null")

    def do_GET(self):
        if self.path == "/control/requests":
            with LOCK:
                self.send_json(200, list(REQUESTS))
        elif self.path == "/control/mcp-calls":
            with LOCK:
                self.send_json(200, list(MCP_CALLS))
        elif self.path.startswith("/searxng/search"):
            query = parse_qs(urlparse(self.path).query).get("q", [""])[0]
            results = [{"url": "https://example.com/euro-%d" % i, "title": "Euro winners %d" % i,
                        "content": "Result %d about %s" % (i, query), "engine": "fake"} for i in range(2)]
            self.send_json(200, {"query": query, "results": results})
        elif self.path == "/v1/models":
            self.send_json(200, {"object": "list", "data": [{"id": "fake-model", "object": "model"}]})
        else:
            self.send_json(404, {"message": "no such path"})

    def do_POST(self):
        body = self.read_json()
        if self.path == "/control/script":
            with LOCK:
                SCRIPT.extend(body)
            return self.send_json(200, {"queued": len(body)})
        if self.path == "/control/reset":
            with LOCK:
                SCRIPT.clear()
                REQUESTS.clear()
                MCP_CALLS.clear()
            return self.send_json(200, {})
        if self.path == "/mcp":
            return self.mcp(body)
        if self.path != "/v1/chat/completions":
            return self.send_json(404, {"message": "no such path"})
        with LOCK:
            REQUESTS.append(body)
            reply = SCRIPT.pop(0) if SCRIPT else {"text": "echo: " + last_user_text(body)}
        if "status" in reply:
            data = reply.get("body", "{}").encode()
            self.send_response(reply["status"])
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
            return
        words = reply.get("text", "").split(" ") if reply.get("text") else []
        calls = reply.get("tool_calls", [])
        completion = len(words) + len(calls)
        usage = {"prompt_tokens": 10, "completion_tokens": completion, "total_tokens": 10 + completion}
        finish = "tool_calls" if calls else "stop"
        if body.get("stream") is not True:
            message = {"role": "assistant", "content": " ".join(words)}
            if calls:
                message["tool_calls"] = [{"id": call["id"], "type": "function",
                                          "function": {"name": call["name"], "arguments": call["arguments"]}}
                                         for call in calls]
            return self.send_json(200, {"id": "cmpl-fake", "object": "chat.completion", "created": 1,
                                        "model": body.get("model"), "usage": usage,
                                        "choices": [{"index": 0, "message": message, "finish_reason": finish}]})
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Connection", "close")
        self.end_headers()

        def chunk(delta, finish=None, usage=None):
            payload = {"id": "cmpl-fake", "object": "chat.completion.chunk", "created": 1, "model": body.get("model"),
                       "choices": [{"index": 0, "delta": delta, "finish_reason": finish}] if usage is None else []}
            if usage is not None:
                payload["usage"] = usage
            self.wfile.write(b"data: " + json.dumps(payload).encode() + b"\n\n")
            self.wfile.flush()

        for index, word in enumerate(words):
            chunk({"role": "assistant", "content": word if index == 0 else " " + word})
        for index, call in enumerate(calls):
            chunk({"tool_calls": [{"index": index, "id": call["id"], "type": "function",
                                   "function": {"name": call["name"], "arguments": call["arguments"]}}]})
        chunk({}, finish)
        chunk({}, usage=usage)
        self.wfile.write(b"data: [DONE]\n\n")
        self.wfile.flush()
        self.close_connection = True

    def mcp(self, message):
        method, rpc_id = message.get("method"), message.get("id")
        if method == "notifications/initialized":
            self.send_response(202)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        if method == "initialize":
            result = {"protocolVersion": "2025-06-18", "capabilities": {"tools": {}},
                      "serverInfo": {"name": "fake-orders", "version": "1"}}
        elif method == "tools/list":
            result = {"tools": MCP_TOOLS}
        elif method == "tools/call":
            params = message.get("params", {})
            with LOCK:
                MCP_CALLS.append(params)
            text = "Order %s deleted." % params.get("arguments", {}).get("id")
            result = {"content": [{"type": "text", "text": text}]}
        else:
            return self.send_json(200, {"jsonrpc": "2.0", "id": rpc_id,
                                        "error": {"code": -32601, "message": "no such method"}})
        self.send_json(200, {"jsonrpc": "2.0", "id": rpc_id, "result": result})


if __name__ == "__main__":
    server = ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Handler)
    server.daemon_threads = True
    server.serve_forever()
