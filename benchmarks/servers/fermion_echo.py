"""Fermion's echo for the benchmark: the same validation as every peer (a text field), an async endpoint.

fermion serve benchmarks/servers/fermion_echo.py
"""

from __future__ import annotations

from fermion import Service, endpoint


class Echo(Service):
    """Echoes `text` back as {"output": text}."""

    @endpoint
    async def echo(self, text: str) -> dict[str, str]:
        """Echo the text."""
        return {"output": text}
