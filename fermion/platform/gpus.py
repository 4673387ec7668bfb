"""Which GPUs this machine has, and which ones a replica of the local backend gets (`resources.gpus`).

On one machine a GPU is not shared: each replica that asks for N GPUs gets N of its own, named in its
CUDA_VISIBLE_DEVICES, and a replica that asks for none sees none (so it cannot load a model onto a GPU
another replica holds). Ray does its own placement (`backends.ray_config`), with fractions.
"""

from __future__ import annotations

import math
import os
import shutil
import subprocess
from collections.abc import Collection, Mapping, Sequence

#: The variable CUDA (and so torch) reads to know which GPUs a process may see.
VISIBLE_ENV = "CUDA_VISIBLE_DEVICES"


def machine_gpus(environ: Mapping[str, str] = os.environ) -> tuple[str, ...]:
    """The GPUs replicas may use, as CUDA_VISIBLE_DEVICES names them: the ones the platform was given in its
    own CUDA_VISIBLE_DEVICES, else every GPU `nvidia-smi -L` lists (none without nvidia-smi)."""
    given = environ.get(VISIBLE_ENV)
    if given is not None:
        return tuple(name for name in (part.strip() for part in given.split(",")) if name and name != "-1")
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return ()
    try:
        done = subprocess.run([smi, "-L"], capture_output=True, text=True, timeout=10, stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired):
        return ()
    if done.returncode != 0:
        return ()
    listed = [line for line in done.stdout.splitlines() if line.startswith("GPU ")]
    return tuple(str(index) for index in range(len(listed)))


def whole_gpus(gpus: float) -> int:
    """The GPUs a local replica gets for `gpus` (a fraction still takes a whole one on one machine)."""
    return math.ceil(gpus)


def pick_gpus(wanted: float, machine: Sequence[str], in_use: Collection[str]) -> list[str]:
    """`wanted` GPUs of `machine` that no replica holds (`in_use`), lowest first; RuntimeError when too few are free."""
    count = whole_gpus(wanted)
    free = [gpu for gpu in machine if gpu not in in_use]
    if count > len(free):
        raise RuntimeError(
            f"a replica asks for {count} GPU(s) and {len(free)} of this machine's {len(machine)} are free "
            f"({len(in_use)} held by other replicas); it starts once replicas holding GPUs stop"
        )
    return free[:count]
