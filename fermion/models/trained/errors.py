"""The error of training and of finding a trained model, raised on both sides of the registry."""

from __future__ import annotations


class TrainingError(ValueError):
    """Training cannot start or finish; `message` says what is wrong and what to do."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message
