"""Teacher client against a real HTTP server on loopback that misbehaves on purpose (a 429, a 400).

The fault server is a fake only for faults the real embedded server cannot be made to produce.
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from pipelines.teacher import Request, Teacher, TeacherConfig


class FaultServer(ThreadingHTTPServer):
    def __init__(self, script):
        super().__init__(("127.0.0.1", 0), Handler)
        self.script = list(script)  # status codes to answer in order; then 200s
        self.hits = []


class Handler(BaseHTTPRequestHandler):
    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["content-length"])))
        self.server.hits.append((time.monotonic(), body["messages"][-1]["content"]))
        status = self.server.script.pop(0) if self.server.script else 200
        if status == 200:
            payload = {"id": "x", "object": "chat.completion", "created": 0, "model": body["model"],
                       "choices": [{"index": 0, "finish_reason": "stop",
                                    "message": {"role": "assistant",
                                                "content": "echo " + body["messages"][-1]["content"]}}],
                       "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}}
        else:
            payload = {"error": {"message": f"status {status}", "type": "test"}}
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        if status == 429:
            self.send_header("retry-after", "1")
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


@pytest.fixture
def fault_server():
    servers = []

    def start(script):
        server = FaultServer(script)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.shutdown()


def teacher_for(server, tmp_path, max_concurrency=1):
    config = TeacherConfig(base_url=f"http://127.0.0.1:{server.server_address[1]}/v1", model="m",
                           max_concurrency=max_concurrency)
    return Teacher(config, tmp_path / "requests.sqlite", tmp_path / "server.log", log=lambda m: None)


def ask(text):
    return Request([{"role": "user", "content": text}], {"max_tokens": 4})


def test_429_is_retried_after_retry_after_and_the_answer_cached(fault_server, tmp_path):
    server = fault_server([429])
    teacher = teacher_for(server, tmp_path)
    [result] = teacher.chat_many([ask("hi")])
    assert result.text == "echo hi" and result.error is None
    assert len(server.hits) == 2 and server.hits[1][0] - server.hits[0][0] >= 0.95  # Retry-After: 1 honoured
    assert teacher.stats["retries"] == 1 and teacher.stats["tokens_out"] == 2
    [again] = teacher.chat_many([ask("hi")])
    assert again.cached and again.text == "echo hi" and len(server.hits) == 2
    teacher.close()


def test_client_error_is_not_retried_and_becomes_an_error_result(fault_server, tmp_path):
    server = fault_server([400])
    teacher = teacher_for(server, tmp_path)
    bad, good = teacher.chat_many([ask("a"), ask("b")])
    assert bad.text is None and bad.error.startswith("http 400") and good.text == "echo b"
    assert len(server.hits) == 2 and teacher.stats["failures"] == 1
    teacher.close()


def test_results_keep_input_order_under_concurrency(fault_server, tmp_path):
    server = fault_server([503, 500])
    teacher = teacher_for(server, tmp_path, max_concurrency=4)
    results = teacher.chat_many([ask(str(i)) for i in range(8)])
    assert [r.text for r in results] == [f"echo {i}" for i in range(8)]
    teacher.close()
