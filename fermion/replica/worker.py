"""One worker process of `fermion serve --workers N`: load the source, serve the socket it inherited.

`fermion.serving.server.run_workers` starts `python -m fermion.replica.worker --fd N --config JSON`
followed by `worker_args(source, options)`.
"""

from __future__ import annotations

import argparse
import json
import socket
import sys
from typing import Any

from fermion.serving.config import ServeConfig
from fermion.serving.server import EXIT_USAGE, configure_logging, run_replica


def worker_args(source: str, options: dict[str, Any] | None = None) -> list[str]:
    """The arguments after `--fd`/`--config` that make a worker serve `source` with `options`."""
    return ["--options", json.dumps(options or {}), "--", source]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fermion.replica.worker")
    parser.add_argument("--fd", type=int, required=True)
    parser.add_argument("--config", required=True)
    parser.add_argument("--options", default="{}")
    parser.add_argument("source")
    args = parser.parse_args(argv)
    config = ServeConfig(**json.loads(args.config))
    configure_logging(config.log_level)
    from fermion.sources import SourceError, load_service

    try:
        service = load_service(args.source, json.loads(args.options))
    except SourceError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    sock = socket.socket(fileno=args.fd)
    return run_replica(service, config, sock, accept_before_ready=False)


if __name__ == "__main__":
    sys.exit(main())
