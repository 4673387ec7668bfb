"""The smallest useful Service: echo text back, with a GET endpoint and a default argument.

The inputs are bounded in the signature (at most 10,000 characters, 1 to 100 times), so one request
cannot make the replica build a gigabyte string: anything larger is answered 422 before `predict` runs.

    fermion serve examples/echo.py
    fermion call http://127.0.0.1:8000 predict text=hello times=2
"""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from fermion import Service, endpoint


class Echo(Service):
    """Echoes text back."""

    def setup(self) -> None:
        self.prefix = "echo: "

    @endpoint
    def predict(
        self, text: Annotated[str, Field(max_length=10_000)], times: Annotated[int, Field(ge=1, le=100)] = 1
    ) -> dict[str, str]:
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
