"""The smallest Service, plus a module attribute that is not one (tests/test_sources.py)."""

from __future__ import annotations

from fermion import Service, endpoint


class Echo(Service):
    """Sends the text back."""

    @endpoint
    def echo(self, text: str) -> str:
        """Return the text unchanged."""
        return text


def shout(text: str) -> str:
    """A plain function: not something Fermion can serve."""
    return text.upper()
