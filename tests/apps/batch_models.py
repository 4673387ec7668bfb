"""Services the batch tests run datasets through: a batched scorer for tables, an image measurer for image sets."""

from __future__ import annotations

import time

from fermion import File, InvalidInput, Service, endpoint


class Scorer(Service):
    """Doubles `x`; a negative `x` is refused (422), so a batch has rows that fail."""

    @endpoint(max_batch_size=16, max_wait_ms=2)
    def predict(self, x: list[float], tag: list[str]) -> list[dict[str, object]]:
        time.sleep(0.005)  # a model's time per batch: a 10,000-row job runs for some seconds
        for value in x:
            if value < 0:
                raise InvalidInput(f"x must be >= 0, got {value}")
        return [{"double": 2 * value, "tag": tag_ + "!"} for value, tag_ in zip(x, tag, strict=True)]


class Measurer(Service):
    """The size of an image, and its mean brightness."""

    @endpoint
    def predict(self, image: File) -> dict[str, float]:
        from PIL import Image, ImageStat

        with Image.open(image.open()) as picture:
            return {"width": picture.width, "height": picture.height, "mean": ImageStat.Stat(picture.convert("L")).mean[0]}
