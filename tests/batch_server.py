"""A loopback server speaking OpenAI's Files and Batch APIs (and chat completions online), for the faults a real
provider cannot be made to give on demand: batches that take a while, complete, partly fail, expire or fail, and
output files with malformed lines. Every chat request is answered `echo <last user turn>` (3 prompt and 2 completion
tokens, or `answer(body)`), so a batch answer and an online answer of one request are the same.

    server = BatchServer(outcomes=["expired", "completed"], delay_s=0.5)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    ... TeacherConfig(base_url=server.url, mode="batch") ...
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections import Counter
from email.parser import BytesParser
from email.policy import default as email_policy
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

OUTCOMES = ("completed", "partial", "expired", "failed", "malformed")


class BatchServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, outcomes=(), delay_s: float = 0.0, batches_api: bool = True, answer=None):
        super().__init__(("127.0.0.1", 0), BatchHandler)
        self.outcomes = list(outcomes)  # per batch created, in order; then "completed"
        self.delay_s, self.batches_api, self.answer = delay_s, batches_api, answer
        self.files: dict[str, bytes] = {}
        self.batches: dict[str, dict] = {}
        self.lock = threading.RLock()
        self.creates = 0
        self.answered: Counter = Counter()  # last user turn -> answers delivered (batch and online)
        self.batch_sizes: list[int] = []  # requests per batch created
        self.online = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/v1"

    def reply(self, body: dict) -> dict:
        prompt = body["messages"][-1]["content"] if "messages" in body else body.get("prompt", "")
        content = self.answer(body) if self.answer else f"echo {prompt}"
        with self.lock:
            self.answered[prompt] += 1
        return {"id": "chatcmpl-x", "object": "chat.completion", "created": 0, "model": body.get("model", "m"),
                "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": content}}],
                "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}}

    def add_file(self, content: bytes, purpose: str, name: str = "file.jsonl") -> dict:
        with self.lock:
            file_id = f"file-{len(self.files) + 1}"
            self.files[file_id] = content
        return {"id": file_id, "object": "file", "bytes": len(content), "created_at": int(time.time()),
                "filename": name, "purpose": purpose, "status": "processed"}

    def settle(self, batch: dict) -> None:
        """Finish a batch whose time has come: answer its lines as its outcome says."""
        if batch["status"] != "in_progress" or time.time() < batch["_due"]:
            return
        outcome = batch["_outcome"]
        lines = [json.loads(line) for line in self.files[batch["input_file_id"]].splitlines() if line.strip()]
        out, errors = [], []
        for k, line in enumerate(lines):
            if outcome == "failed" or (outcome == "expired" and k >= len(lines) // 2):
                continue
            if outcome == "partial" and k % 3 == 1:
                errors.append({"id": f"req-{k}", "custom_id": line["custom_id"],
                               "response": {"status_code": 400, "body": {"error": {
                                   "message": "the prompt was flagged", "type": "invalid_request_error"}}},
                               "error": None})
                continue
            if outcome == "malformed" and k % 4 == 1:
                out.append('{"custom_id": "' + line["custom_id"] + '", "response": {"status_c')
                continue
            out.append(json.dumps({"id": f"req-{k}", "custom_id": line["custom_id"],
                                   "response": {"status_code": 200, "request_id": f"r{k}",
                                                "body": self.reply(line["body"])}, "error": None}))
        good = sum(1 for x in out if x.endswith("}") and '"status_code": 200' in x)
        batch["request_counts"] = {"total": len(lines), "completed": good, "failed": len(errors)}
        if out:
            batch["output_file_id"] = self.add_file("\n".join(out).encode() + b"\n", "batch_output")["id"]
        if errors:
            batch["error_file_id"] = self.add_file(
                "\n".join(json.dumps(e) for e in errors).encode() + b"\n", "batch_output")["id"]
        batch["status"] = {"expired": "expired", "failed": "failed"}.get(outcome, "completed")
        if outcome == "failed":
            batch["errors"] = {"object": "list", "data": [{"code": "invalid_file", "message": "the file was refused"}]}
        batch["completed_at"] = int(time.time())


class BatchHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def _send(self, status: int, payload) -> None:
        data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json" if not isinstance(payload, bytes) else
                         "application/octet-stream")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _body(self) -> bytes:
        return self.rfile.read(int(self.headers.get("content-length") or 0))

    def do_POST(self):
        server, path, raw = self.server, self.path.split("?")[0], self._body()
        if path == "/v1/chat/completions":
            with server.lock:
                server.online += 1
            return self._send(200, server.reply(json.loads(raw)))
        if not server.batches_api and (path.startswith("/v1/batches") or path.startswith("/v1/files")):
            return self._send(404, {"error": {"message": "Not Found", "type": "not_found"}})
        if path == "/v1/files":
            message = BytesParser(policy=email_policy).parsebytes(
                b"Content-Type: " + self.headers["content-type"].encode() + b"\r\n\r\n" + raw)
            parts = {p.get_param("name", header="content-disposition"): p for p in message.iter_parts()}
            upload = parts["file"]
            return self._send(200, server.add_file(upload.get_payload(decode=True),
                                                   parts["purpose"].get_content().strip(),
                                                   upload.get_filename() or "file.jsonl"))
        if path == "/v1/batches":
            body = json.loads(raw)
            if body["input_file_id"] not in server.files:
                return self._send(404, {"error": {"message": "no such file"}})
            lines = [line for line in server.files[body["input_file_id"]].splitlines() if line.strip()]
            with server.lock:
                server.creates += 1
                outcome = server.outcomes.pop(0) if server.outcomes else "completed"
                batch_id = f"batch_{server.creates}"
                server.batch_sizes.append(len(lines))
                server.batches[batch_id] = {
                    "id": batch_id, "object": "batch", "endpoint": body["endpoint"], "errors": None,
                    "input_file_id": body["input_file_id"], "completion_window": body["completion_window"],
                    "status": "in_progress", "output_file_id": None, "error_file_id": None,
                    "created_at": int(time.time()), "request_counts": {"total": len(lines), "completed": 0,
                                                                      "failed": 0},
                    "metadata": body.get("metadata"), "_outcome": outcome, "_due": time.time() + server.delay_s}
                shown = {k: v for k, v in server.batches[batch_id].items() if not k.startswith("_")}
            return self._send(200, shown)
        match = re.fullmatch(r"/v1/batches/([\w-]+)/cancel", path)
        if match and match.group(1) in server.batches:
            batch = server.batches[match.group(1)]
            batch["status"] = "cancelled"
            return self._send(200, {k: v for k, v in batch.items() if not k.startswith("_")})
        return self._send(404, {"error": {"message": f"no route {path}"}})

    def do_GET(self):
        server, path = self.server, self.path.split("?")[0]
        if not server.batches_api:
            return self._send(404, {"error": {"message": "Not Found"}})
        if path == "/v1/batches":  # newest first, as the API lists them
            listed = [{k: v for k, v in b.items() if not k.startswith("_")} for b in reversed(server.batches.values())]
            return self._send(200, {"object": "list", "data": listed, "has_more": False})
        match = re.fullmatch(r"/v1/batches/([\w-]+)", path)
        if match and match.group(1) in server.batches:
            batch = server.batches[match.group(1)]
            with server.lock:
                server.settle(batch)
            return self._send(200, {k: v for k, v in batch.items() if not k.startswith("_")})
        match = re.fullmatch(r"/v1/files/([\w-]+)/content", path)
        if match and match.group(1) in server.files:
            return self._send(200, server.files[match.group(1)])
        return self._send(404, {"error": {"message": f"no route {path}"}})
