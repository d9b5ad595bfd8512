"""A stand-in for ``vllm serve``: the same command line, an OpenAI-compatible
server that answers with fixed text, and a record of how it was started.

    python fake_vllm.py serve SNAPSHOT --host H --port P --served-model-name NAME [...]

Writes ``{"argv", "env"}`` of each start (``env``: its whole environment, so a
test can prove a variable was NOT passed), and each request body, as JSON lines
to ``$FAKE_VLLM_LOG``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

WORDS = ["Hello", " from", " the", " fake", " vLLM", " server."]


def log(entry: dict[str, Any]) -> None:
    path = os.environ.get("FAKE_VLLM_LOG")
    if path:
        with open(path, "a", encoding="utf-8") as f:
            f.write(json.dumps(entry) + "\n")


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("command", choices=["serve"])
    p.add_argument("model")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--served-model-name", default=None)
    args, extra = p.parse_known_args()
    name = args.served_model_name or args.model
    if not os.path.isfile(os.path.join(args.model, "config.json")):
        print(f"fake vllm: no config.json in {args.model}", file=sys.stderr)
        return 2
    log({"start": True, "argv": sys.argv[1:], "extra": extra, "pid": os.getpid(),
         "env": dict(os.environ)})

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *a: Any) -> None:
            pass

        def _json(self, status: int, obj: Any) -> None:
            data = json.dumps(obj).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            if self.path == "/health":
                self._json(200, {})
            elif self.path == "/v1/models":
                self._json(200, {"object": "list", "data": [{"id": name, "object": "model"}]})
            else:
                self._json(404, {"error": {"message": "not found", "type": "NotFoundError", "code": 404}})

        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", "0"))))
            log({"request": body})
            if body.get("model") != name:
                self._json(404, {"error": {"message": f"model {body.get('model')} does not exist",
                                           "type": "NotFoundError", "code": 404}})
                return
            base = {"id": "chatcmpl-fake", "created": int(time.time()), "model": name}
            if not body.get("stream"):
                self._json(200, {**base, "object": "chat.completion", "choices": [
                    {"index": 0, "message": {"role": "assistant", "content": "".join(WORDS)},
                     "finish_reason": "stop"}],
                    "usage": {"prompt_tokens": 3, "completion_tokens": len(WORDS), "total_tokens": 3 + len(WORDS)}})
                return
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()

            def send(obj: Any) -> None:
                data = f"data: {obj if isinstance(obj, str) else json.dumps(obj)}\n\n".encode()
                self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
                self.wfile.flush()

            for w in WORDS:
                send({**base, "object": "chat.completion.chunk",
                      "choices": [{"index": 0, "delta": {"content": w}, "finish_reason": None}]})
                time.sleep(0.01)
            send({**base, "object": "chat.completion.chunk",
                  "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
            send("[DONE]")
            self.wfile.write(b"0\r\n\r\n")

    server = ThreadingHTTPServer((args.host, args.port), Handler)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
