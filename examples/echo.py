"""The smallest useful Service: echo text back, with a GET endpoint and a default argument.

    fermion serve examples/echo.py
    fermion call http://127.0.0.1:8000 predict text=hello times=2
"""

from __future__ import annotations

from fermion import Service, endpoint


class Echo(Service):
    """Echoes text back."""

    def setup(self) -> None:
        self.prefix = "echo: "

    @endpoint
    def predict(self, text: str, times: int = 1) -> dict[str, str]:
        """Echo the text, repeated.

        Args:
            text: What to echo.
            times: How many times to repeat it.
        """
        return {"output": self.prefix + text * times}

    @endpoint(method="GET")
    def info(self) -> dict[str, str]:
        """What this service is."""
        return {"name": "echo", "prefix": self.prefix}
