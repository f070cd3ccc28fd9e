"""A local OpenAI-compatible chat-completions server for the judge tests: it prefers the brighter
image, except as the prompt's text scripts it (rate-limited / flaky / slow / down / garbage /
biased / tie), and counts the requests per prompt (``Judge.counts``) and in all (``Judge.total``)."""

from __future__ import annotations

import base64
import io
import json
import re
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np


def _brightness(url: str) -> float:
    from PIL import Image

    return float(np.asarray(Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1])))).mean())


class Judge(BaseHTTPRequestHandler):
    """Prefers the brighter image, except as scripted by the prompt's text."""

    counts: Counter = Counter()
    total = 0
    delay = 0.0  # seconds per answer (a kill test's window)
    lock = threading.Lock()

    def log_message(self, *args):  # quiet
        pass

    def _reply(self, code: int, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_POST(self):
        req = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        user = req["messages"][1]["content"]
        text = user[0]["text"]
        prompt = re.search(r'\*\*Text Prompt:\*\* "(.*)"', text).group(1)
        with self.lock:
            Judge.counts[prompt] += 1
            Judge.total += 1
            n = Judge.counts[prompt]
        if Judge.delay:
            time.sleep(Judge.delay)
        assert req["temperature"] == 0 and req["messages"][0]["role"] == "system"
        if prompt.startswith("rate-limited") and n <= 2:
            return self._reply(429, {"error": {"message": "slow down", "type": "rate_limit"}})
        if prompt.startswith("flaky") and n == 1:
            return self._reply(500, {"error": {"message": "boom"}})
        if prompt.startswith("slow") and n == 1:
            time.sleep(1.5)
        if prompt.startswith("down"):
            return self._reply(503, {"error": {"message": "unavailable"}})
        first, second = (_brightness(c["image_url"]["url"]) for c in user[1:])
        if prompt.startswith("garbage"):
            answer = "Both images are lovely."
        elif prompt.startswith("biased"):
            answer = "Reasoning... [[Winner: Image A]]"
        elif prompt.startswith("tie"):
            answer = "[[Winner: Tie]]"
        else:
            answer = f"A is {'brighter' if first > second else 'darker'}. [[Winner: Image {'A' if first > second else 'B'}]]"
        self._reply(200, {"id": "x", "object": "chat.completion", "created": 0, "model": req["model"],
                          "choices": [{"index": 0, "finish_reason": "stop",
                                       "message": {"role": "assistant", "content": answer}}],
                          "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}})


def serve():
    """Generator for a fixture: the server's base URL while it runs (``yield from serve()``)."""
    Judge.counts, Judge.total, Judge.delay = Counter(), 0, 0.0
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Judge)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/v1"
    httpd.shutdown()
