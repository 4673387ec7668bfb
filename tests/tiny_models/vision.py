"""Tiny random vision models (ViT classifier, YOLOS detector, SegFormer segmenter) and test images.

Images are 32×32 internally; any uploaded size is resized by the saved image processor.
"""

from __future__ import annotations

import io
from pathlib import Path

CLASSES = ("cat", "dog", "bird")
DETECTION_CLASSES = ("person", "car", "tree")
SEGMENT_CLASSES = ("background", "road", "sky")


def _labels(names: tuple[str, ...]) -> dict[str, dict]:
    return {"id2label": dict(enumerate(names)), "label2id": {name: i for i, name in enumerate(names)}}


def image_classifier(folder: Path) -> Path:
    """ViT image classification over `CLASSES`."""
    import torch
    from transformers import ViTConfig, ViTForImageClassification, ViTImageProcessor

    torch.manual_seed(0)
    config = ViTConfig(
        image_size=32,
        patch_size=8,
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        **_labels(CLASSES),
    )
    ViTForImageClassification(config).save_pretrained(folder)
    ViTImageProcessor(size={"height": 32, "width": 32}).save_pretrained(folder)
    return folder


def object_detector(folder: Path) -> Path:
    """YOLOS object detection over `DETECTION_CLASSES` (a ViT backbone, so nothing to download)."""
    import torch
    from transformers import YolosConfig, YolosForObjectDetection, YolosImageProcessor

    torch.manual_seed(0)
    config = YolosConfig(
        image_size=[32, 32],
        patch_size=8,
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        num_detection_tokens=4,
        **_labels(DETECTION_CLASSES),
    )
    YolosForObjectDetection(config).save_pretrained(folder)
    YolosImageProcessor(size={"height": 32, "width": 32}).save_pretrained(folder)
    return folder


def segmenter(folder: Path) -> Path:
    """SegFormer semantic segmentation over `SEGMENT_CLASSES`."""
    import torch
    from transformers import SegformerConfig, SegformerForSemanticSegmentation, SegformerImageProcessor

    torch.manual_seed(0)
    config = SegformerConfig(
        num_encoder_blocks=2,
        depths=[1, 1],
        sr_ratios=[2, 1],
        hidden_sizes=[8, 16],
        patch_sizes=[7, 3],
        strides=[4, 2],
        num_attention_heads=[1, 2],
        mlp_ratios=[2, 2],
        decoder_hidden_size=16,
        **_labels(SEGMENT_CLASSES),
    )
    SegformerForSemanticSegmentation(config).save_pretrained(folder)
    SegformerImageProcessor(size={"height": 32, "width": 32}).save_pretrained(folder)
    return folder


def image_bytes(width: int = 48, height: int = 40, fmt: str = "PNG") -> bytes:
    """A small colourful image (a gradient with a square) encoded as `fmt`."""
    from PIL import Image, ImageDraw

    image = Image.new("RGB", (width, height))
    image.putdata([((x * 255) // width, (y * 255) // height, 128) for y in range(height) for x in range(width)])
    ImageDraw.Draw(image).rectangle((width // 4, height // 4, width // 2, height // 2), fill=(250, 250, 20))
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    return buffer.getvalue()
