"""A small convolutional network for image folders, trained with torch and saved as ONNX.

It follows the scikit-learn estimator protocol (`fit`, `predict`, `predict_proba`, `classes_`) so
the search, cross-validation and evaluation treat it like any other family.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

BATCH = 64


class CNNClassifier:
    """Two convolution blocks and a small dense head; inputs are flattened images in [0, 1]."""

    def __init__(self, channels: int = 16, epochs: int = 30, learning_rate: float = 0.003, seed: int = 0) -> None:
        self.channels = channels
        self.epochs = epochs
        self.learning_rate = learning_rate
        self.seed = seed
        self.image_shape: tuple[int, int, int] | None = None  # (channels, height, width), set by the trainer

    def get_params(self, deep: bool = True) -> dict[str, Any]:
        return {"channels": self.channels, "epochs": self.epochs, "learning_rate": self.learning_rate, "seed": self.seed}

    def set_image_shape(self, shape: tuple[int, int, int]) -> CNNClassifier:
        self.image_shape = tuple(shape)  # type: ignore[assignment]
        return self

    def _network(self, classes: int) -> Any:
        from torch import nn

        c, ch = self.image_shape[0], self.channels  # type: ignore[index]
        return nn.Sequential(
            nn.Conv2d(c, ch, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(ch, 2 * ch, 3, padding=1),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(4),
            nn.Flatten(),
            nn.Linear(2 * ch * 16, 64),
            nn.ReLU(),
            nn.Linear(64, classes),
        )

    def _tensor(self, X: Any) -> Any:
        import numpy as np
        import torch

        if self.image_shape is None:
            raise ValueError("CNNClassifier needs set_image_shape((channels, height, width)) before use")
        array = np.asarray(X, dtype=np.float32).reshape((-1, *self.image_shape))
        return torch.from_numpy(array - 0.5)

    def fit(self, X: Any, y: Any) -> CNNClassifier:
        import numpy as np
        import torch

        torch.manual_seed(self.seed)
        generator = torch.Generator().manual_seed(self.seed)
        self.classes_, codes = np.unique(np.asarray(y), return_inverse=True)
        self.net_ = self._network(len(self.classes_))
        inputs, targets = self._tensor(X), torch.from_numpy(codes.astype(np.int64))
        optimizer = torch.optim.Adam(self.net_.parameters(), lr=self.learning_rate)
        loss = torch.nn.CrossEntropyLoss()
        self.net_.train()
        for _ in range(self.epochs):
            order = torch.randperm(len(inputs), generator=generator)
            for start in range(0, len(inputs), BATCH):
                index = order[start : start + BATCH]
                optimizer.zero_grad()
                loss(self.net_(inputs[index]), targets[index]).backward()
                optimizer.step()
        self.net_.eval()
        return self

    def predict_proba(self, X: Any) -> Any:
        import torch

        with torch.no_grad():
            return torch.softmax(self.net_(self._tensor(X)), dim=1).numpy()

    def predict(self, X: Any) -> Any:
        return self.classes_[self.predict_proba(X).argmax(axis=1)]

    def save_onnx(self, path: Path) -> None:
        """The trained network as ONNX: input `image` (N, C, H, W) in [-0.5, 0.5], output `logits`."""
        import torch

        example = torch.zeros((1, *self.image_shape))  # type: ignore[misc]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                self.net_,
                (example,),
                str(path),
                input_names=["image"],
                output_names=["logits"],
                dynamic_axes={"image": {0: "batch"}, "logits": {0: "batch"}},
                dynamo=False,
            )
