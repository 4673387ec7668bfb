"""Version 2 of examples/echo.py for rolling-update tests: the same endpoints, another answer."""

from __future__ import annotations

from fermion import Service, endpoint


class Echo(Service):
    """Echoes text back, version 2."""

    @endpoint
    def predict(self, text: str, times: int = 1) -> dict[str, str]:
        """Echo the text, repeated."""
        return {"output": "echo v2: " + text * times}
