"""How many replicas this machine can hold: the local backend's answer to "one PATCH started 600 processes".

Each replica asks for memory (its `--memory`, else an estimate from its source). The machine
offers a share of its memory, and the platform a ceiling on replicas in all. CPUs are not
reserved: on one machine replicas share the cores (a replica's `--cpus` sets its compute threads),
so a replica is refused only if it asks for more CPUs than the machine has. GPUs are reserved: each
replica gets whole GPUs of its own (`fermion.platform.gpus`), so they bound the count too. A desired
count that cannot fit is refused by the API with the numbers that say why; the reconciler never
starts a replica that does not fit (whatever the store says) and starts only a few at a time, so a burst of starts can never take the machine or the API down.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fermion.platform.errors import Invalid
from fermion.platform.gpus import machine_gpus, whole_gpus

MIB = 2**20
GIB = 2**30
#: What a replica is assumed to take when it says nothing and its source gives no size: a Python
#: process with Fermion, uvicorn and pydantic loaded is ~100 MiB; this leaves room for a small model.
DEFAULT_REPLICA_MEMORY = 256 * MIB
#: `st:`/`hf:` sources named by a hub id (no folder to measure) load a transformer: assume this.
DEFAULT_MODEL_MEMORY = 1 * GIB
#: The share of the machine's memory replicas may take; the rest is for the platform and the system.
MEMORY_SHARE = 0.8
#: Ceiling on one deployment's max_replicas (per platform: `fermion up --max-replicas-per-deployment`).
DEFAULT_MAX_REPLICAS = 32


@dataclass(frozen=True)
class Machine:
    """The CPUs and memory replicas on this machine share, and the GPUs they take one by one."""

    cpus: int
    memory: int  # bytes
    gpus: tuple[str, ...] = ()  # as CUDA_VISIBLE_DEVICES names them

    @classmethod
    def here(cls) -> Machine:
        """This machine: the CPUs this process may run on, the physical memory and the GPUs (`machine_gpus`)."""
        try:
            cpus = len(os.sched_getaffinity(0))
        except AttributeError:  # pragma: no cover - not Linux
            cpus = os.cpu_count() or 1
        memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        return cls(cpus, memory, machine_gpus())


@dataclass(frozen=True)
class Ask:
    """What one replica of a deployment takes: memory in bytes, CPUs reserved (0: shares them), GPUs of its own."""

    memory: int
    cpus: float = 0.0
    gpus: int = 0

    @classmethod
    def of(cls, source: str, options: Mapping[str, Any]) -> Ask:
        """The replica's `resources` when given, else an estimate from its source."""
        resources = options.get("resources") or {}
        memory = resources.get("memory") or estimate_memory(source)
        return cls(int(memory), float(resources.get("cpus") or 0.0), whole_gpus(resources.get("gpus") or 0.0))


def estimate_memory(source: str) -> int:
    """A replica's memory, guessed from its source: the model files on disk count twice (loaded and
    being loaded), plus the process itself; a hub name, the size of a small transformer."""
    kind, sep, rest = source.partition(":")
    if not sep or len(kind) == 1:  # app.py:Echo (or C:\\… on Windows): a Service, no model to measure
        return DEFAULT_REPLICA_MEMORY
    path = Path(rest.split("@", 1)[0]).expanduser()
    if kind in ("st", "hf", "vllm", "sklearn", "onnx") and path.exists():
        return DEFAULT_REPLICA_MEMORY + 2 * _size_on_disk(path)
    if kind in ("st", "hf", "vllm"):
        return DEFAULT_MODEL_MEMORY
    return DEFAULT_REPLICA_MEMORY


def _size_on_disk(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


@dataclass(frozen=True)
class Capacity:
    """The machine and the platform's ceilings; answers "how many more of these fit?"."""

    machine: Machine
    max_replicas: int = DEFAULT_MAX_REPLICAS  # per deployment
    max_replicas_total: int | None = None  # default: 8 per CPU, at least 16

    @property
    def total(self) -> int:
        """How many replicas may run at once, all deployments together."""
        if self.max_replicas_total is not None:
            return self.max_replicas_total
        return max(16, 8 * self.machine.cpus)

    @property
    def memory(self) -> int:
        """The memory replicas may take together."""
        return int(self.machine.memory * MEMORY_SHARE)

    def room(self, ask: Ask, taken: Iterable[Ask]) -> int:
        """How many more replicas asking `ask` fit beside the replicas `taken` (running or promised)."""
        taken = list(taken)
        left = [self.total - len(taken)]
        left.append((self.memory - sum(t.memory for t in taken)) // max(ask.memory, 1))
        if ask.gpus:
            left.append((len(self.machine.gpus) - sum(t.gpus for t in taken)) // ask.gpus)
        return max(0, min(left))

    def check_ceiling(self, max_replicas: int) -> None:
        """A 422 for a max_replicas above the platform's per-deployment ceiling."""
        if max_replicas > self.max_replicas:
            raise Invalid(
                f"max_replicas is at most {self.max_replicas} on this platform, got {max_replicas} "
                f"(the operator sets the ceiling with `fermion up --max-replicas-per-deployment N`)"
            )

    def check_fits(self, name: str, min_replicas: int, ask: Ask, taken: Iterable[Ask]) -> None:
        """A 422 when `min_replicas` replicas asking `ask` cannot run beside `taken`, with the numbers."""
        if ask.gpus > len(self.machine.gpus):
            has = len(self.machine.gpus)
            fix = f"ask for at most {has} (--gpus)" if has else "leave out --gpus (resources.gpus)"
            raise Invalid(
                f"each replica of {name!r} asks for {ask.gpus} GPU(s) and this machine has "
                f"{has or 'none (nvidia-smi lists no GPU)'}; {fix}, or run the platform where GPUs are "
                "(`fermion up --backend ray` on a Ray cluster with GPU nodes)"
            )
        if ask.cpus > self.machine.cpus:
            raise Invalid(
                f"each replica of {name!r} asks for {ask.cpus:g} CPUs and this machine has {self.machine.cpus}; "
                f"ask for at most {self.machine.cpus} (--cpus)"
            )
        taken = list(taken)
        room = self.room(ask, taken)
        if min_replicas <= room:
            return
        cpus = f", {ask.cpus:g} CPU(s)" if ask.cpus else ""
        gpus = f", {ask.gpus} GPU(s) of its own" if ask.gpus else ""
        has_gpus = f", {len(self.machine.gpus)} GPU(s)" if ask.gpus else ""
        raise Invalid(
            f"min_replicas {min_replicas} does not fit: each replica of {name!r} asks {_size(ask.memory)}{cpus}{gpus}; "
            f"this machine has {self.machine.cpus} CPU(s){has_gpus} and {_size(self.machine.memory)} "
            f"({_size(self.memory)} for replicas), the platform runs at most {self.total} replicas and "
            f"{len(taken)} are taken by other deployments, so at most {room} fit. "
            "Lower min_replicas (max_replicas may stay higher: the autoscaler adds replicas only while they fit), "
            "give replicas less with --memory, or raise the limit with `fermion up --max-replicas-total`"
        )


def _size(n: int) -> str:
    return f"{n / GIB:.1f} GiB" if n >= GIB else f"{n / MIB:.0f} MiB"
