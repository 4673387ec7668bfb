"""What the authoring API (`fermion.service`) and the schema builder (`fermion.schema`) both use.

The error for a Service or endpoint Fermion cannot serve, and an endpoint's batch options. Kept
apart so that the schema builder needs nothing from `fermion.service`, which builds schemas.
"""

from __future__ import annotations

from dataclasses import dataclass


class DefinitionError(TypeError):
    """A Service or endpoint is defined in a way Fermion cannot serve; the message says how to fix it."""


@dataclass(frozen=True)
class BatchOptions:
    """How a batched endpoint groups requests: up to `max_batch_size` items, waiting at most `max_wait_ms`."""

    max_batch_size: int
    max_wait_ms: float
    #: Run at once when no batch is running (batches still form while one runs); else always wait.
    adaptive: bool = False
