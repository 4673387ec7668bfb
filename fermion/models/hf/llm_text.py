"""From generated tokens to text pieces: whole characters only, and nothing past a stop text."""

from __future__ import annotations

from collections.abc import Callable, Sequence


class Detokenizer:
    """Turns tokens into text pieces as they come, holding back incomplete characters."""

    def __init__(self, decode: Callable[[list[int]], str], context: list[int]) -> None:
        self.decode = decode
        self.ids = list(context)
        self.prefix = 0  # ids[prefix:read] were decoded last time: they anchor spacing for the next piece
        self.read = len(self.ids)

    def add(self, token: int) -> str:
        self.ids.append(token)
        return self._advance(final=False)

    def flush(self) -> str:
        return self._advance(final=True) if self.read < len(self.ids) else ""

    def _advance(self, final: bool) -> str:
        before = self.decode(self.ids[self.prefix : self.read])
        after = self.decode(self.ids[self.prefix :])
        if len(after) > len(before) and (final or not after.endswith("\ufffd")):
            self.prefix, self.read = self.read, len(self.ids)
            return after[len(before) :]
        if final:
            self.prefix = self.read = len(self.ids)
        return ""


class StopMatcher:
    """Cuts text at the first stop sequence; holds back text that may be the start of one."""

    def __init__(self, stops: Sequence[str]) -> None:
        self.stops = [s for s in stops if s]
        self.pending = ""

    def feed(self, text: str) -> tuple[str, bool]:
        """(text safe to send, whether a stop sequence was found)."""
        if not self.stops:
            return text, False
        buffer = self.pending + text
        found = [i for i in (buffer.find(s) for s in self.stops) if i >= 0]
        if found:
            self.pending = ""
            return buffer[: min(found)], True
        hold = 0
        for stop in self.stops:
            for size in range(min(len(stop) - 1, len(buffer)), hold, -1):
                if buffer.endswith(stop[:size]):
                    hold = size
                    break
        cut = len(buffer) - hold
        self.pending = buffer[cut:]
        return buffer[:cut], False

    def flush(self) -> str:
        pending, self.pending = self.pending, ""
        return pending
