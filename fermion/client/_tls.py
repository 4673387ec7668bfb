"""How every client checks an https:// server: against `ca_cert=` (or `$FERMION_CA_CERT`), else the system's CAs.

Verification is never turned off: a certificate the client cannot verify is an error that says
which option to give, not a warning.
"""

from __future__ import annotations

import os
import ssl
from pathlib import Path

CA_CERT_ENV = "FERMION_CA_CERT"


class CACertError(ValueError):
    """The CA file cannot be used; the message names it and what to give instead."""


def tls_verify(ca_cert: str | Path | None = None) -> ssl.SSLContext | bool:
    """What httpx's `verify=` gets: a context trusting `ca_cert` (else `$FERMION_CA_CERT`), or True (httpx's defaults).

    `CACertError` naming the file when it cannot be read or holds no certificate.
    """
    given = ca_cert if ca_cert not in (None, "") else os.environ.get(CA_CERT_ENV) or None
    if given is None:
        return True
    where = "ca_cert" if ca_cert not in (None, "") else f"${CA_CERT_ENV}"
    path = Path(given).expanduser()
    if not path.is_file():
        raise CACertError(f"{where} {given}: no such file; give the PEM file of the CA that signed the server's certificate")
    try:
        return ssl.create_default_context(cafile=str(path))
    except (ssl.SSLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", None) or getattr(exc, "strerror", None) or exc
        raise CACertError(f"{where} {given} is not a PEM CA certificate ({reason})") from None


def certificate_problem(error: BaseException) -> str | None:
    """Why the server's certificate was refused, when that is what `error` (or what caused it) says; else None."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, ssl.SSLCertVerificationError):
            return current.verify_message or current.reason or str(current)
        current = current.__cause__ or current.__context__
    text = str(error)
    return "certificate verify failed" if "CERTIFICATE_VERIFY_FAILED" in text else None


def certificate_advice(url: str, problem: str) -> str:
    """The one line a client says when `url`'s certificate was refused."""
    return (
        f"cannot verify the TLS certificate of {url} ({problem}); if a private CA signed it, "
        f"give its PEM file with --ca-cert FILE (Python: ca_cert=) or set {CA_CERT_ENV}"
    )


def plain_http_hint(url: str) -> str:
    """What to add when a plain-HTTP connection broke: the server may speak HTTPS on that port."""
    return "; if it serves HTTPS, use an https:// URL" if url.startswith("http://") else ""
