"""What HAProxy is told and what it says: the text of its config for `fermion up` (the edge's rules,
the routing by maps, the backends) and the log line it sends for each request.

Generic backends b1..bN of server slots, which the runtime API assigns to deployments and points at
replicas (HAProxy 2.6 serves such static slots about twice as fast as servers added with `add
server`: measured). `haproxy.HAProxyFrontDoor` writes it and keeps it in step.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from fermion.platform.gateway.edge import SANDBOX_POLICY
from fermion.platform.gateway.routes import PREFIX

#: How a proxied request is logged to the control plane: deployment, status, total time in ms.
LOG_FORMAT = "%[var(txn.dep)] %ST %Ta"
_LOG_LINE = re.compile(rb"(?:<\d+>)?(?:.*?\s)?(?P<dep>[a-z][a-z0-9-]*) (?P<status>\d{3}) (?P<ms>-?\d+)\s*$")


def parse_log(datagram: bytes) -> tuple[str, int, float] | None:
    """(deployment, status, seconds) from one log datagram, or None for other lines."""
    found = _LOG_LINE.search(datagram.strip())
    if not found or int(found["ms"]) < 0:
        return None
    return found["dep"].decode(), int(found["status"]), int(found["ms"]) / 1000.0


@dataclass(frozen=True)
class Settings:
    """What the config needs to know about the platform and HAProxy's files."""

    host: str
    port: int
    control_port: int
    admin_socket: Path
    log_socket: Path
    grace: float
    timeout: float
    max_body_size: int
    tls_pem: Path | None  # the certificate and key in one file: HAProxy terminates TLS
    deployments_map: Path
    public_map: Path
    tokens_map: Path


def backend_section(name: str, slots: dict[str, str | None]) -> str:
    """One generic backend: its rewriting rules, then a server line per slot (disabled when free)."""
    lines = [
        f"backend {name}",
        "    balance leastconn",
        "    http-reuse always",
        # As the built-in gateway does (gateway.RUN_HEADERS): replica pages in a unique origin, CORS open.
        f'    http-response add-header content-security-policy "{SANDBOX_POLICY.decode()}"',
        "    http-response set-header access-control-allow-origin *",
        f"    http-request set-header x-forwarded-prefix {PREFIX}%[var(txn.dep)]",
        "    http-request del-header authorization",
        f"    http-request set-path /%[path,regsub(^{PREFIX}[^/]+/?,)]",
    ]
    for slot, url in slots.items():
        if url is not None:
            host, port = url.removeprefix("http://").rsplit(":", 1)
            lines.append(f"    server {slot} {host}:{port}")
        else:
            lines.append(f"    server {slot} 127.0.0.1:1 disabled")
    return "\n".join(lines)


def config_text(s: Settings, backends: list[str]) -> str:
    """The whole haproxy.cfg."""
    listen = f"{s.host}:{s.port}" if ":" not in s.host else f"[{s.host}]:{s.port}"
    if s.tls_pem is not None:
        listen += f" ssl crt {s.tls_pem}"
    proto = "https" if s.tls_pem is not None else "http"
    return f"""# Written by `fermion up`; changes are overwritten.
global
    stats socket {s.admin_socket} mode 600 level admin
    log {s.log_socket} len 512 format raw local0
    hard-stop-after {int(s.grace) + 1}s

defaults
    mode http
    log global
    option dontlognull
    # A client that leaves closes its request's server connection too, so the replica cancels the
    # work (without this HAProxy waits for the answer nobody will read).
    option abortonclose
    log-format "{LOG_FORMAT}"
    timeout connect 5s
    timeout client {int(s.timeout)}s
    timeout server {int(s.timeout)}s
    timeout http-request 60s
    timeout http-keep-alive 60s
    retries 2
    retry-on conn-failure
    option redispatch 1

frontend fermion
    bind {listen}
    # Set, never passed on from the client: the control plane (and a replica) builds its URLs from it.
    http-request set-header x-forwarded-proto {proto}
    # Replaces whatever a caller sent: a replica's server takes the client's address from it. (Only the
    # forwarding headers something reads are rewritten here; each edit costs throughput.)
    http-request set-header x-forwarded-for %[src]
    # The edge's rules, as the built-in gateway keeps them: a percent-encoded CR, LF or NUL in the
    # path (a second request in disguise) is refused, and so is a body declared over the limit,
    # before a byte of it is read.
    http-request return status 400 content-type application/json string '{{"error": "bad_request", "status": 400, "message": "the request path has control characters (a percent-encoded CR, LF or NUL, say); remove them"}}' if {{ path -m sub % }} {{ path_reg -i %(0[0-9a-f]|1[0-9a-f]|7f) }}
    http-request return status 413 content-type application/json string '{{"error": "payload_too_large", "status": 413, "message": "request body is over the limit of {s.max_body_size} bytes; send less, or ask the operator to raise `fermion up --max-body-size`"}}' if {{ path_beg {PREFIX} }} {{ req.hdr_val(content-length) gt {s.max_body_size} }}
    http-request set-var(txn.dep) path,field(3,/) if {{ path_beg {PREFIX} }}
    http-request set-var(txn.backend) var(txn.dep),map({s.deployments_map}) if {{ var(txn.dep) -m found }}
    acl routed var(txn.backend) -m found
    acl public var(txn.dep),map({s.public_map}) -m found
    acl token_ok req.hdr(authorization),word(2,' '),sha2(256),hex,lower,map({s.tokens_map}) -m found
    # Cancelling a request must reach the replica that serves it, which only the control plane's
    # gateway knows (HAProxy would pick any replica).
    acl cancel method DELETE
    acl cancel_path path_reg ^{PREFIX}[^/]+/requests/
    use_backend control if cancel cancel_path
    # A browser's CORS preflight carries no token: the control plane's gateway answers it.
    acl preflight method OPTIONS
    acl cors_asks req.hdr(access-control-request-method) -m found
    use_backend control if preflight cors_asks
    use_backend %[var(txn.backend)] if routed public
    use_backend %[var(txn.backend)] if routed token_ok
    default_backend control

backend control
    http-request set-log-level silent  # the control plane counts what it answers itself
    server control 127.0.0.1:{s.control_port}

{(chr(10) * 2).join(backends)}
"""
