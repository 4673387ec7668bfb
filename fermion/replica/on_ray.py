"""The Ray Serve application builder: `fermion.replica.on_ray:build` in a Serve config.

Ray imports it with the arguments of a Serve config: `{"source": ..., "options": {...},
"config": {...}, "sealed_env": {...}}`. Each Serve replica opens the deployment's sealed env into
its own environment (`fermion.replica.sealed_env`), loads the source with `fermion.sources` and
serves it with `fermion.serving.on_ray.serve_application`, the same replica `fermion serve` runs.
"""

from __future__ import annotations

import os
from typing import Any

from fermion.replica.sealed_env import SEALED_ENV_ARG, exposed, open_sealed
from fermion.service import Service
from fermion.serving.config import ServeConfig
from fermion.serving.on_ray import ongoing_limit, serve_application
from fermion.sources import load_service


def build(args: dict[str, Any]) -> Any:
    """Ray Serve application builder: `fermion.replica.on_ray:build` in a Serve config."""
    source = str(args["source"])
    options = dict(args.get("options") or {})
    config_values = dict(args.get("config") or {})
    sealed = args.get(SEALED_ENV_ARG)

    def make_service() -> Service:
        os.environ.update(open_sealed(sealed))  # a Serve replica's process is its own: the env stays for its life
        return load_service(source, options)

    limit = args.get("max_ongoing_requests")
    if not limit:
        # The builder runs in a worker that may build other applications later: the env is there only meanwhile.
        with exposed(sealed):
            limit = ongoing_limit(load_service(source, options), ServeConfig.from_env(**config_values))
    return serve_application(make_service, config_values, limit)
