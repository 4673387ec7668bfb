"""The torch device a model runs on (`fermion serve --device`): checked when the source loads, before the server listens.

A GPU that torch cannot see is a clear error at once, not a stack trace from `setup()` after the
replica said it was listening.
"""

from __future__ import annotations

import re

from fermion.models.kinds import SourceError

#: The devices `--device` takes: the CPU, a CUDA GPU (by index, counting from 0) or Apple's GPU.
DEVICE_PATTERN = re.compile(r"cpu|mps|cuda(:\d+)?")


def check_device(device: str, where: str) -> str:
    """`device` when torch here can run on it; else a SourceError naming what this machine has."""
    device = device.strip()
    if not DEVICE_PATTERN.fullmatch(device):
        raise SourceError(f"{where}: --device {device!r} is not a device; use cpu, cuda, cuda:N (N counts from 0) or mps")
    if device == "cpu":
        return device
    import torch

    if device == "mps":
        if not torch.backends.mps.is_available():
            raise SourceError(f"{where}: --device mps, but torch {torch.__version__} sees no Apple GPU here; use --device cpu")
        return device
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    index = int(device.partition(":")[2] or 0)
    if count == 0:
        raise SourceError(
            f"{where}: --device {device}, but torch {torch.__version__} sees no CUDA GPU here; "
            "install a CUDA build of torch on a machine with an NVIDIA GPU (check `nvidia-smi`), or use --device cpu"
        )
    if index >= count:
        raise SourceError(
            f"{where}: --device {device}, but torch sees {count} CUDA GPU(s) here (cuda:0 to cuda:{count - 1}); "
            "pick one of those (CUDA_VISIBLE_DEVICES may hide the others)"
        )
    return device
