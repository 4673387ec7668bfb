"""One reading of a base URL for every client: `Client`, `Platform` and `fermion call` take `localhost:8000` as plain HTTP."""

from __future__ import annotations


def http_url(url: object, what: str = "the client") -> str:
    """`url` as an http:// or https:// base URL without a trailing slash; no scheme means http://.

    `ValueError` (naming `what` needs it) for anything else, e.g. `ftp://...` or an empty string.
    """
    text = url.strip() if isinstance(url, str) else ""
    if not text:
        raise ValueError(f"{what} needs a URL like http://127.0.0.1:8000, got {url!r}")
    if "://" not in text:
        text = "http://" + text  # `localhost:8000` means plain HTTP
    if not text.startswith(("http://", "https://")):
        raise ValueError(f"{what} needs an http:// or https:// URL, got {url!r}")
    return text.rstrip("/")
