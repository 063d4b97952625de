"""A fake Anthropic Messages API on 127.0.0.1 for judge tests: it records every request body and answers
as scripted (valid, malformed, slow, 429 with retry-after, 529, 500)."""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class FakeAnthropic:
    """Answers each request by the next scripted mode (then ``default``); ``grade`` decides verdicts."""

    def __init__(self, default: str = "valid", delay: float = 0.0) -> None:
        self.default = default
        self.delay = delay
        self.script: deque[str] = deque()
        self.bodies: list[str] = []
        self.times: list[tuple[float, str]] = []
        self.lock = threading.Lock()
        self.prefer = "A"
        self.in_flight = 0
        self.max_in_flight = 0
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def __enter__(self) -> FakeAnthropic:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()

    def next_mode(self, body: str) -> str:
        with self.lock:
            self.bodies.append(body)
            mode = self.script.popleft() if self.script else self.default
            self.times.append((time.monotonic(), mode))
            return mode

    def answer(self, request: dict) -> dict:
        """A valid tool call: fail when the graded reply says 'FAILME', prefer ``self.prefer`` in pairs."""
        tool = request["tool_choice"]["name"]
        content = request["messages"][0]["content"]
        if tool == "record_preference":
            choice = self.prefer
            if choice == "content":  # a judge that reads: BETTER beats anything, "worse" loses
                reply_a = content.split("<reply_a>", 1)[1].split("</reply_a>", 1)[0]
                reply_b = content.split("<reply_b>", 1)[1].split("</reply_b>", 1)[0]
                rank = lambda text: 2 if "BETTER" in text else 0 if "worse" in text else 1  # noqa: E731
                choice = (
                    "A" if rank(reply_a) > rank(reply_b) else "B" if rank(reply_b) > rank(reply_a) else "tie"
                )
            data = {"preference": choice, "reason": "one reads better"}
        else:
            fails = "FAILME" in content.rsplit("</conversation>", 1)[0].rsplit("ASSISTANT:", 1)[-1]
            names = request["tools"][0]["input_schema"]["properties"]["metrics"]["properties"]
            data = {
                "verdict": "fail" if fails else "pass",
                "score": 0.2 if fails else 0.9,
                "reason": "the reply misses the question" if fails else "answers it",
                "metrics": {name: spec["enum"][-1 if fails else 0] for name, spec in names.items()},
            }
        return _message(request["model"], tool, data)

    def _handler(self):
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["content-length"])).decode()
                mode = fake.next_mode(body)
                with fake.lock:
                    fake.in_flight += 1
                    fake.max_in_flight = max(fake.max_in_flight, fake.in_flight)
                self._answer(mode, body)

            def _answer(self, mode: str, body: str) -> None:
                try:
                    if fake.delay:
                        time.sleep(fake.delay)
                    if mode == "slow":
                        time.sleep(1.5)
                        mode = "valid"
                finally:
                    # the request is done before its reply leaves: a client that sends its next request on
                    # reading this reply must not find this one still counted
                    with fake.lock:
                        fake.in_flight -= 1
                if mode in ("429", "529", "500"):
                    kind = {"429": "rate_limit_error", "529": "overloaded_error", "500": "api_error"}[mode]
                    headers = {"retry-after": "1"} if mode == "429" else {"x-should-retry": "true"}
                    return self._send(
                        int(mode), {"type": "error", "error": {"type": kind, "message": mode}}, headers
                    )
                request = json.loads(body)
                if mode == "malformed":
                    answer = _message(request["model"], None, None)
                elif mode == "bad_verdict":
                    answer = _message(request["model"], request["tool_choice"]["name"], {"verdict": "maybe"})
                else:
                    answer = fake.answer(request)
                self._send(200, answer, {})

            def _send(self, status: int, payload: dict, headers: dict) -> None:
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                for name, value in headers.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(data)

        return Handler


def _message(model: str, tool: str | None, data: dict | None) -> dict:
    content = (
        [{"type": "tool_use", "id": "toolu_1", "name": tool, "input": data}]
        if tool
        else [{"type": "text", "text": "I think it is fine, probably."}]
    )
    return {
        "id": "msg_1",
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": "tool_use" if tool else "end_turn",
        "stop_sequence": None,
        "usage": {"input_tokens": 100, "output_tokens": 20},
    }
