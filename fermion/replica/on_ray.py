"""The Ray Serve application builder: `fermion.replica.on_ray:build` in a Serve config.

Ray imports it with the arguments of a Serve config: `{"source": ..., "options": {...},
"config": {...}}`. Each Serve replica loads the source with `fermion.sources` and serves it with
`fermion.serving.on_ray.serve_application`, the same replica `fermion serve` runs.
"""

from __future__ import annotations

import functools
from typing import Any

from fermion.serving.on_ray import serve_application
from fermion.sources import load_service


def build(args: dict[str, Any]) -> Any:
    """Ray Serve application builder: `fermion.replica.on_ray:build` in a Serve config."""
    source = str(args["source"])
    options = dict(args.get("options") or {})
    config_values = dict(args.get("config") or {})
    make_service = functools.partial(load_service, source, options)
    return serve_application(make_service, config_values, args.get("max_ongoing_requests"))
