"""What a replica asks for: CPUs, GPUs and memory (`--cpus`, `--gpus`, `--memory`), kept in a
deployment's options under "resources" — settings of the platform, which `fermion serve` never sees.

The local backend counts them against this machine (`capacity`); on Ray they become the Serve
replica's `ray_actor_options` (`backends.ray_config`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from fermion.platform.errors import Invalid

#: Options that are settings of the platform, not of the source (`fermion serve` never sees them).
PLATFORM_OPTIONS = ("resources",)


@dataclass(frozen=True)
class Resources:
    """What one replica reserves on a Ray node: CPUs, GPUs (both may be fractional) and memory in bytes."""

    cpus: float = 1.0
    gpus: float = 0.0
    memory: int | None = None

    @classmethod
    def from_options(cls, options: Mapping[str, Any]) -> Resources:
        raw = options.get("resources") or {}
        return cls(float(raw.get("cpus", 1.0)), float(raw.get("gpus", 0.0)), raw.get("memory"))

    def actor_options(self) -> dict[str, Any]:
        """Ray's `ray_actor_options` for a Serve replica."""
        result: dict[str, Any] = {"num_cpus": self.cpus}
        if self.gpus:
            result["num_gpus"] = self.gpus
        if self.memory:
            result["memory"] = self.memory
        return result

    def needs(self) -> dict[str, float]:
        """In Ray's resource names, for comparing with what a node has."""
        needed = {"CPU": self.cpus, "GPU": self.gpus, "memory": float(self.memory or 0)}
        return {key: value for key, value in needed.items() if value}

    def compute_threads(self) -> int:
        """Torch/BLAS threads that match the CPUs reserved (at least one)."""
        return max(1, math.floor(self.cpus))


def check_resources(raw: object) -> dict[str, Any]:
    """Validate {"cpus": 0.5, "gpus": 1, "memory": 2147483648}; returns it with only the keys given."""
    if not isinstance(raw, Mapping):
        raise Invalid(f'resources must be a mapping like {{"cpus": 1, "gpus": 0, "memory": "2GiB"}}, got {raw!r}')
    unknown = set(raw) - {"cpus", "gpus", "memory"}
    if unknown:
        raise Invalid(f"unknown resource(s) {', '.join(sorted(unknown))}: use cpus, gpus and memory")
    result: dict[str, Any] = {}
    for key in ("cpus", "gpus"):
        if key in raw:
            value = raw[key]
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
                raise Invalid(f"{key} must be a number ≥ 0 (fractions share a device), got {value!r}")
            result[key] = float(value)
    if result.get("cpus") == 0 and "cpus" in raw:
        raise Invalid("cpus must be more than 0 (e.g. 0.5 to put two replicas on one CPU)")
    if "memory" in raw:
        memory = raw["memory"]
        if isinstance(memory, str):
            from fermion.serving.config import parse_size

            try:
                memory = parse_size(memory)
            except ValueError:
                raise Invalid(f"memory must be bytes or a size like 512MiB or 2GB, got {raw['memory']!r}") from None
        if isinstance(memory, bool) or not isinstance(memory, int) or memory <= 0:
            raise Invalid(f"memory must be a positive number of bytes or a size like 2GiB, got {raw['memory']!r}")
        result["memory"] = memory
    return result


def serve_flags(options: Mapping[str, Any]) -> list[str]:
    """The `fermion serve` flags for a deployment's source options (`--task`, `--device`, `--trust-pickle`)."""
    flags = []
    for key in ("task", "device"):
        if options.get(key):
            flags += [f"--{key}", str(options[key])]
    if options.get("trust_pickle"):
        flags.append("--trust-pickle")
    return flags


def source_options(options: Mapping[str, Any]) -> dict[str, Any]:
    """The options `fermion serve` (and so `load_service`) takes, without the platform's own."""
    return {key: value for key, value in options.items() if key not in PLATFORM_OPTIONS}
