"""Turning text and images into numbers, the same way at training and at serving time.

Text columns become all-MiniLM-L6-v2 sentence embeddings (384 numbers, offline from the packaged
weights); images become their pixels, resized to one square size and scaled to [0, 1].
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

from fermion.models.trained.errors import TrainingError

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

EMBEDDING_MODEL = "all-MiniLM-L6-v2"
EMBED_BATCH = 64
#: Images are resized to at most this many pixels a side.
MAX_IMAGE_SIDE = 32


class TextEmbedder:
    """all-MiniLM-L6-v2, loaded once; thread-safe `embed(texts)` → (n, 384) float32, L2-normalised."""

    _lock = threading.Lock()

    def __init__(self) -> None:
        from fermion.models.kinds import SourceError
        from fermion.models.resolve import offline_hub, resolve_model_dir

        offline_hub()
        try:
            from sentence_transformers import SentenceTransformer
        except ImportError:
            raise TrainingError("text columns need sentence embeddings: pip install 'fermion[st]'") from None
        try:
            folder = resolve_model_dir(EMBEDDING_MODEL, "st")
        except SourceError as exc:
            raise TrainingError(f"text columns need the {EMBEDDING_MODEL} embeddings: {exc}") from None
        from transformers.utils import logging as transformers_logging

        transformers_logging.disable_progress_bar()  # its "Loading weights" bar would cut through ours
        self.model = SentenceTransformer(folder, device="cpu")
        dimension = getattr(self.model, "get_embedding_dimension", None) or self.model.get_sentence_embedding_dimension
        self.dimensions = int(dimension())

    def embed(self, texts: list[str]) -> np.ndarray:
        with self._lock:
            return self.model.encode(
                texts, batch_size=EMBED_BATCH, normalize_embeddings=True, convert_to_numpy=True, show_progress_bar=False
            )


def embedding_columns(column: str, dimensions: int) -> list[str]:
    """The names of the numeric columns that replace text column `column`."""
    return [f"{column}__e{i:03d}" for i in range(dimensions)]


def with_embeddings(frame: pd.DataFrame, text_columns: list[str], embedder: TextEmbedder | None) -> pd.DataFrame:
    """`frame` with each text column replaced by its embedding columns (missing text embeds as empty)."""
    import pandas as pd

    if not text_columns:
        return frame
    assert embedder is not None
    parts = [frame.drop(columns=text_columns)]
    for column in text_columns:
        texts = ["" if v is None or v != v else str(v) for v in frame[column].tolist()]
        vectors = embedder.embed(texts)
        parts.append(pd.DataFrame(vectors, columns=embedding_columns(column, vectors.shape[1]), index=frame.index))
    return pd.concat(parts, axis=1)


# -- images ----------------------------------------------------------------------------------------


def image_geometry(sizes: list[tuple[int, int]], modes: list[str]) -> tuple[int, str]:
    """The square side (the typical smaller side, at most MAX_IMAGE_SIDE) and mode ("L" if all are grey, else "RGB")."""
    import statistics

    side = int(min(MAX_IMAGE_SIDE, statistics.median(min(w, h) for w, h in sizes)))
    mode = "L" if all(m in ("L", "1", "LA", "I", "I;16", "F") for m in modes) else "RGB"
    return max(side, 4), mode


def image_pixels(image: Any, side: int, mode: str) -> np.ndarray:
    """A Pillow image as a flat float32 vector: converted to `mode`, resized to side×side, scaled to [0, 1], channels first."""
    import numpy as np
    from PIL import Image

    picture = image.convert(mode).resize((side, side), Image.Resampling.BILINEAR)
    array = np.asarray(picture, dtype=np.float32) / 255.0
    if array.ndim == 3:
        array = array.transpose(2, 0, 1)
    return array.reshape(-1)


def load_images(files: list[tuple[Any, str]]) -> tuple[np.ndarray, np.ndarray, tuple[int, int, int], str]:
    """(pixels, labels, (channels, side, side), mode) for an image dataset; a file that does not decode is a TrainingError."""
    import numpy as np
    from PIL import Image, UnidentifiedImageError

    opened = []
    for path, label in files:
        try:
            with Image.open(path) as image:
                image.load()
                opened.append((image.copy(), label))
        except (UnidentifiedImageError, OSError, ValueError) as exc:
            raise TrainingError(f"image {path} does not decode ({exc}); remove it from the dataset and add it again") from None
    side, mode = image_geometry([i.size for i, _ in opened], [i.mode for i, _ in opened])
    pixels = np.stack([image_pixels(i, side, mode) for i, _ in opened])
    labels = np.array([label for _, label in opened], dtype=object)
    return pixels, labels, (1 if mode == "L" else 3, side, side), mode


# -- the model's input frame -----------------------------------------------------------------------


def encode_frame(frame: pd.DataFrame, inputs: list[dict[str, Any]], embedder: TextEmbedder | None) -> pd.DataFrame:
    """The frame the fitted pipeline reads: numbers as floats, booleans as 0/1, categories as strings, text as embeddings.

    Training and serving both build their input with this function, so a served model sees its
    requests exactly as it saw its training rows.
    """
    import numpy as np
    import pandas as pd

    columns: dict[str, Any] = {}
    for spec in inputs:
        name, kind = spec["name"], spec["kind"]
        values = frame[name]
        if kind == "number":
            columns[name] = pd.to_numeric(values, errors="coerce").astype(float)
        elif kind == "boolean":
            columns[name] = [np.nan if _missing(v) else float(bool(v)) for v in values.tolist()]
        elif kind == "category":
            columns[name] = np.array([np.nan if _missing(v) else str(v) for v in values.tolist()], dtype=object)
        else:
            columns[name] = values
    encoded = pd.DataFrame(columns, index=frame.index)
    return with_embeddings(encoded, [s["name"] for s in inputs if s["kind"] == "text"], embedder)


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and value != value)
