"""`hf:` vision tasks: image classification, object detection and image segmentation.

Images arrive as `fermion.File` (a multipart upload, or base64 in JSON) and are decoded with
Pillow; bytes that are not an image answer 422. Classification and segmentation are batched;
detection takes a per-request `threshold`, so it runs one request at a time.
"""

from __future__ import annotations

import base64
import io
from typing import Annotated, Any

from pydantic import BaseModel, Field

from fermion.models.hf._pipeline import (
    TOP_LABELS,
    LabelScore,
    ModelService,
    check_model_dir,
    describe_labels,
    for_model,
    load_pipeline,
    model_name,
    ranked,
)
from fermion.models.kinds import SourceError
from fermion.responses import InvalidInput
from fermion.service import Service, endpoint
from fermion.types import File

#: A 2×2 PNG, so that "try it" in /docs sends a real image.
EXAMPLE_PNG = "iVBORw0KGgoAAAANSUhEUgAAAAIAAAACCAIAAAD91JpzAAAAFklEQVR4nGP4z8DA8J+BkYHh////DAAe9gT9Ce00PgAAAABJRU5ErkJggg=="
ImageFile = Annotated[
    File,
    Field(
        description="An image (PNG, JPEG, WebP, GIF, BMP, ...): a multipart upload, or base64 in JSON.", examples=[EXAMPLE_PNG]
    ),
]
Threshold = Annotated[float, Field(ge=0.0, le=1.0, description="Leave out objects scored below this.")]


class Box(BaseModel):
    """A bounding box in pixels of the uploaded image (origin at the top left)."""

    xmin: int = Field(description="Left edge.", examples=[12])
    ymin: int = Field(description="Top edge.", examples=[40])
    xmax: int = Field(description="Right edge.", examples=[220])
    ymax: int = Field(description="Bottom edge.", examples=[310])


class Detection(BaseModel):
    """An object found in the image."""

    label: str = Field(description="Its class, from the model's labels.", examples=["cat"])
    score: float = Field(description="The model's confidence, from 0 to 1.", examples=[0.97])
    box: Box = Field(description="Where it is.")


class Segment(BaseModel):
    """One region of the image and what it shows."""

    label: str = Field(description="The region's class, from the model's labels.", examples=["road"])
    score: float | None = Field(
        description="The model's confidence; null for semantic segmentation, which has none.", examples=[None]
    )
    mask: str = Field(
        description="A base64 PNG the size of the uploaded image: white (255) where the region is, black (0) elsewhere.",
        examples=[EXAMPLE_PNG],
    )


def open_image(file: File) -> Any:
    """The upload as an RGB Pillow image, turned upright; 422 when it is not an image Pillow can read."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    what = ", ".join(part for part in (file.filename, file.content_type, f"{file.size} bytes") if part)
    try:
        image = Image.open(file.open())
        image.load()
    except Image.DecompressionBombError:
        raise InvalidInput(f"the image is too large ({what}); send one under {Image.MAX_IMAGE_PIXELS} pixels") from None
    except UnidentifiedImageError:
        raise InvalidInput(
            f"the file is not an image ({what}: no image format recognised); send a PNG, JPEG, WebP, GIF or BMP"
        ) from None
    except (OSError, ValueError, SyntaxError) as exc:
        raise InvalidInput(f"the file is not an image ({what}: {exc}); send a PNG, JPEG, WebP, GIF or BMP") from None
    return ImageOps.exif_transpose(image).convert("RGB")


def _png_base64(mask: Any) -> str:
    buffer = io.BytesIO()
    mask.convert("L").save(buffer, format="PNG", optimize=False)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


class ImageClassification(ModelService):
    task = "image-classification"

    def setup(self) -> None:
        self.pipe = load_pipeline(self.task, self.model_dir, self.device)

    @endpoint(max_batch_size=16, max_wait_ms=5)
    def classify(self, image: list[ImageFile]) -> list[list[LabelScore]]:
        """Classify an image: the model's labels with scores, best first (at most 5)."""
        images = [open_image(file) for file in image]
        results = self.pipe(images, top_k=TOP_LABELS, batch_size=len(images))
        return [ranked(result) for result in results]


class ObjectDetection(ModelService):
    task = "object-detection"

    def setup(self) -> None:
        self.pipe = load_pipeline(self.task, self.model_dir, self.device)

    @endpoint(max_concurrency=1)
    def detect(self, image: ImageFile, threshold: Threshold = 0.5) -> list[Detection]:
        """Find objects in an image: each with its label, score and bounding box, best first."""
        found = self.pipe(open_image(image), threshold=threshold)
        detections = [
            Detection(label=str(d["label"]), score=float(d["score"]), box=Box(**{k: int(v) for k, v in d["box"].items()}))
            for d in found
        ]
        return sorted(detections, key=lambda d: -d.score)


class ImageSegmentation(ModelService):
    task = "image-segmentation"

    def setup(self) -> None:
        self.pipe = load_pipeline(self.task, self.model_dir, self.device)

    @endpoint(max_batch_size=8, max_wait_ms=5)
    def segment(self, image: list[ImageFile]) -> list[list[Segment]]:
        """Segment an image: its regions, each with a label, a score and a mask (base64 PNG)."""
        images = [open_image(file) for file in image]
        results = self.pipe(images, batch_size=len(images))
        return [
            [
                Segment(
                    label=str(s["label"]),
                    score=None if s.get("score") is None else float(s["score"]),
                    mask=_png_base64(s["mask"]),
                )
                for s in result
            ]
            for result in results
        ]


SERVICES: dict[str, type[ModelService]] = {
    "image-classification": ImageClassification,
    "object-detection": ObjectDetection,
    "image-segmentation": ImageSegmentation,
}
_DESCRIPTIONS = {
    "image-classification": "Image classification with {name}. Labels: {labels}.",
    "object-detection": "Object detection with {name}. Labels: {labels}.",
    "image-segmentation": "Image segmentation with {name}. Labels: {labels}.",
}


def build(model_dir: str, task: str, device: str | None = None) -> Service:
    """The Service for one vision `task` of the model in `model_dir`, on `device` (default the CPU)."""
    source = f"hf:{model_dir}"
    check_model_dir(model_dir, source)
    if task not in SERVICES:
        raise SourceError(f"{source}: task '{task}' is not one of {', '.join(SERVICES)}")
    description = _DESCRIPTIONS[task].format(name=model_name(model_dir), labels=describe_labels(model_dir))
    return for_model(SERVICES[task], model_dir, description, device=device)
