"""Cutting a reply at its first stop string, whole or as it streams.

transformers' `stop_strings` stops generating once the text ends with a stop string but
leaves it in the output; the reply must end before it. While streaming, text that could be
the start of a stop string is held back until the next chunk shows whether it is, so the
streamed chunks join to exactly what `cut_at_stop` returns for the whole text.
"""

from __future__ import annotations

from collections.abc import Sequence


def cut_at_stop(text: str, stops: Sequence[str]) -> tuple[str, bool]:
    """`text` up to its earliest stop string, and whether one was found."""
    found = [index for index in (text.find(stop) for stop in stops) if index >= 0]
    if not found:
        return text, False
    return text[: min(found)], True


class StopCutter:
    """Feed chunks in order; each `feed` returns what may be shown now. After a stop
    string, `stopped` is True and everything else is dropped."""

    def __init__(self, stops: Sequence[str]) -> None:
        self.stops = [stop for stop in stops if stop]
        self.stopped = False
        self._held = ""

    def feed(self, chunk: str) -> str:
        if self.stopped:
            return ""
        text = self._held + chunk
        kept, self.stopped = cut_at_stop(text, self.stops)
        if self.stopped:
            self._held = ""
            return kept
        hold = self._partial_tail(text)
        self._held = text[len(text) - hold :] if hold else ""
        return text[: len(text) - hold]

    def finish(self) -> str:
        """What was held back once the text ends (no stop string can complete now)."""
        held, self._held = ("" if self.stopped else self._held), ""
        return held

    def _partial_tail(self, text: str) -> int:
        """Length of the longest end of `text` that begins some stop string."""
        longest = 0
        for stop in self.stops:
            for size in range(min(len(stop) - 1, len(text)), longest, -1):
                if text.endswith(stop[:size]):
                    longest = size
                    break
        return longest
