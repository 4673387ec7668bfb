"""What HAProxy is told and what it says: the text of its config for `fermion up` (the edge's rules,
the routing by maps, the backends) and the log line it sends for each request.

Generic backends b1..bN of server slots, which the runtime API assigns to deployments and points at
replicas (HAProxy 2.6 serves such static slots about twice as fast as servers added with `add
server`: measured). `haproxy.HAProxyFrontDoor` writes it and keeps it in step.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from fermion.platform.gateway.edge import SANDBOX_POLICY
from fermion.platform.gateway.routes import PREFIX
from fermion.platform.rates import PERIODS

#: How a proxied request is logged to the control plane: deployment, status, total time in ms.
LOG_FORMAT = "%[var(txn.dep)] %ST %Ta"
_DEPLOYMENT = re.compile(rb"[a-z][a-z0-9-]*\Z")


def parse_log(datagram: bytes) -> tuple[str, int, float] | None:
    """(deployment, status, seconds) from one log datagram (its last three words; a syslog header may come
    before them), or None for other lines. On the hot path of every request HAProxy proxies: split, not a regex search."""
    words = datagram.split()
    if len(words) < 3:
        return None
    deployment, status, ms = words[-3:]
    if len(status) != 3 or not status.isdigit() or not ms.isdigit() or _DEPLOYMENT.match(deployment.rpartition(b">")[2]) is None:
        return None
    return deployment.rpartition(b">")[2].decode(), int(status), int(ms) / 1000.0


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
    rates_map: Path


#: A token as HAProxy checks it: (SHA-256 hex of the token, the deployments it is narrowed to (none: all), its
#: rate as `fermion.platform.rates` writes it, e.g. '10/s').
Grant = tuple[str, tuple[str, ...], str | None]


def token_maps(grants: Iterable[Grant]) -> tuple[dict[str, str], dict[str, str]]:
    """The tokens map (hash → 1, or hash:deployment → 1 for each deployment of a narrowed token) and the
    rates map (hash → limit:unit:period seconds)."""
    tokens: dict[str, str] = {}
    rates: dict[str, str] = {}
    for digest, reach, rate in grants:
        for key in [f"{digest}:{name}" for name in reach] or [digest]:
            tokens[key] = "1"
        if rate is not None:
            limit, unit = rate.split("/")
            rates[digest] = f"{limit}:{unit}:{PERIODS[unit]}"  # the stick table counting it is rate_<unit>
    return tokens, rates


def slot_link(backend: str, slot: str) -> str:
    """A Unix-socket slot's address, relative to HAProxy's folder (its working directory): a symlink the
    control plane points at the replica's socket. Relative, so a deep data dir never outgrows the 107
    bytes a socket address holds."""
    return f"links/{backend}-{slot}"


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
        # /run/<name>/<rest> → /<rest>: the path from its 4th '/'-field on (no regex: this runs on every call).
        f"    http-request set-path /%[path,field({PREFIX.count('/') + 2},/,0)]",
    ]
    for slot, url in slots.items():
        if slot.startswith("u"):
            lines.append(f"    server {slot} unix@{slot_link(name, slot)}" + (" disabled" if url is None else ""))
        elif url is not None:
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
    # A token is known by its SHA-256; one narrowed to deployments is in the map as hash:deployment.
    http-request set-var(txn.tok) req.hdr(authorization),word(2,' '),sha2(256),hex,lower if {{ var(txn.dep) -m found }} {{ req.hdr(authorization) -m found }}
    acl token_ok var(txn.tok),map({s.tokens_map}) -m found
    acl token_ok var(txn.tok),concat(:,txn.dep,),map({s.tokens_map}) -m found
    # A token's rate (limit:unit:seconds): its calls counted in the stick table of that period, as the
    # built-in gateway counts them (fermion.platform.rates), and refused beyond with 429 and Retry-After.
    http-request set-var(txn.rate) var(txn.tok),map({s.rates_map}) if {{ var(txn.tok) -m found }}
    http-request set-var(txn.rlim) var(txn.rate),field(1,:) if {{ var(txn.rate) -m found }}
    http-request set-var(txn.rper) var(txn.rate),field(3,:) if {{ var(txn.rate) -m found }}
    http-request track-sc0 var(txn.tok) table rate_s if {{ var(txn.rate),field(2,:) -m str s }}
    http-request track-sc0 var(txn.tok) table rate_min if {{ var(txn.rate),field(2,:) -m str min }}
    http-request track-sc0 var(txn.tok) table rate_h if {{ var(txn.rate),field(2,:) -m str h }}
    http-request set-var(txn.rnow) sc0_http_req_rate if {{ var(txn.rate) -m found }}
    http-request set-var(txn.rover) var(txn.rnow),sub(txn.rlim) if {{ var(txn.rate) -m found }}
    acl over_rate var(txn.rover) -m int gt 0
    http-request set-var(txn.rwait) var(txn.rover),add(1),mul(txn.rper),add(txn.rnow),sub(1),div(txn.rnow) if over_rate
    http-request return status 429 content-type application/json hdr retry-after %[var(txn.rwait)] hdr x-ratelimit-limit %[var(txn.rlim)] hdr x-ratelimit-remaining 0 hdr x-ratelimit-reset %[var(txn.rwait)] lf-string '{{"error": "too_many_requests", "status": 429, "message": "this token is over its rate of %[var(txn.rate),field(1,:)]/%[var(txn.rate),field(2,:)]; retry in %[var(txn.rwait)] s"}}' if over_rate
    http-response set-header x-ratelimit-limit %[var(txn.rlim)] if {{ var(txn.rlim) -m found }}
    http-response set-header x-ratelimit-remaining %[var(txn.rlim),sub(txn.rnow)] if {{ var(txn.rlim) -m found }}
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

# Calls per token in the last second, minute and hour (entries expire once their window has passed).
backend rate_s
    stick-table type string len 64 size 100k expire 2s store http_req_rate(1s)
backend rate_min
    stick-table type string len 64 size 100k expire 2m store http_req_rate(1m)
backend rate_h
    stick-table type string len 64 size 100k expire 2h store http_req_rate(1h)

{(chr(10) * 2).join(backends)}
"""
