"""A real HTTP server speaking OpenAI's /v1/chat/completions, for the LLM judge's tests.

It judges deterministically: the longer summary (or answer) wins (equal lengths tie), one
containing GARBAGE in position A gets an answer with no verdict, and `fail_first`
statuses are answered (in order) before any real answer. A failure's message echoes the
bearer token back, as OpenAI's 401 does ("Incorrect API key provided: sk-..."), so that
tests can check the key never comes out of raydaa's errors and logs.
"""

from __future__ import annotations

import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

# both built-in layouts: TL;DR's "Summary" markers and the chat prompt's "Answer" ones
SUMMARY = re.compile(
    r"\[The Start of Assistant ([AB])'s (?:Summary|Answer)\]\n(.*?)\n\[The End of", re.S
)


def longer_wins(messages: list[dict]) -> str:
    summaries = dict(SUMMARY.findall(messages[-1]["content"]))
    a, b = summaries["A"], summaries["B"]
    if "GARBAGE" in a:
        return "Both are fine, I suppose."
    winner = "A" if len(a) > len(b) else "B" if len(b) > len(a) else "C"
    return f"Explanation.\n\nComparison: one is longer.\n\nWinner: {winner}"


class JudgeServer:
    def __init__(self, decide=longer_wins, fail_first: tuple[int, ...] = ()) -> None:
        self.decide, self.fail_first = decide, list(fail_first)
        self.requests: list[dict] = []  # every request body, failed ones included
        self.lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 (http.server's name)
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with server.lock:
                    server.requests.append(
                        {"path": self.path, "body": body, "auth": self.headers.get("Authorization")}
                    )
                    status = server.fail_first.pop(0) if server.fail_first else 200
                if self.path != "/v1/chat/completions":
                    status = 404
                if status != 200:
                    token = (self.headers.get("Authorization") or "").removeprefix("Bearer ")
                    message = f"scripted {status}: Incorrect API key provided: {token}"
                    payload = {"error": {"message": message, "type": "test"}}
                else:
                    payload = {
                        "id": f"cmpl-{len(server.requests)}",
                        "object": "chat.completion",
                        "created": 0,
                        "model": body["model"],
                        "choices": [
                            {
                                "index": 0,
                                "message": {
                                    "role": "assistant",
                                    "content": server.decide(body["messages"]),
                                },
                                "finish_reason": "stop",
                            }
                        ],
                        "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
                    }
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):  # keep test output clean
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> JudgeServer:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
