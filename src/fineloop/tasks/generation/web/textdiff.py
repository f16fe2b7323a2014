"""A word-level diff of two texts, as segments a template renders (escaped) with <del>/<ins>.

A correction reads best as what the user changed in the reply; difflib finds it. Long texts
are not diffed (quadratic in the worst case): the page shows them side by side instead.
"""

from __future__ import annotations

import re
from difflib import SequenceMatcher
from typing import TypedDict

MAX_DIFF_CHARS = 4000  # longer texts are shown side by side, not diffed
_WORDS = re.compile(r"\s+|\S+\s*")  # a word with the spaces after it


class Segment(TypedDict):
    op: str  # "same", "del" (only in the reply) or "ins" (only in the correction)
    text: str


def word_diff(before: str, after: str) -> list[Segment] | None:
    """Segments turning `before` into `after`; None when either text is too long to diff."""
    if len(before) > MAX_DIFF_CHARS or len(after) > MAX_DIFF_CHARS:
        return None
    old, new = _WORDS.findall(before), _WORDS.findall(after)
    segments: list[Segment] = []
    matcher = SequenceMatcher(None, old, new, autojunk=False)
    for tag, i1, i2, j1, j2 in matcher.get_opcodes():
        if tag == "equal":
            _add(segments, "same", "".join(old[i1:i2]))
            continue
        _add(segments, "del", "".join(old[i1:i2]))
        _add(segments, "ins", "".join(new[j1:j2]))
    return segments


def _add(segments: list[Segment], op: str, text: str) -> None:
    if not text:
        return
    if segments and segments[-1]["op"] == op:
        segments[-1]["text"] += text
    else:
        segments.append({"op": op, "text": text})
