"""`SpanMemory`: the gazetteer of one NER project (adapt.py), read from its feedback.

Read by watermark (each refresh reads only feedback past the last id seen), in pages,
joined to the interactions the feedback is about. From each correction (resolved against
the spans the interaction showed: spans.corrected_spans) and each label event (its full
span set), compared with what was shown (nothing, for a label without an interaction):
- a span the user added or changed (relabelled, moved) sets its form's label;
- a shown span that no span of the right set overlaps was removed: its form is suppressed
  (a moved boundary is a fix of the span, not a removal, so it suppresses nothing).
The newest feedback wins per form, and at most `MAX_ENTRIES` forms are kept, the newest.
Refreshes run in the background (serving.py); requests read the immutable `view`.
"""

from __future__ import annotations

import logging
from typing import Any

from fineloop.serving.watermark import FeedbackWatermark, project_pages, shown_io
from fineloop.store import Store
from fineloop.tasks.ner.adapt import Entry, Form, View, form_of
from fineloop.tasks.ner.spans import Span, corrected_spans, spans_of, text_of

log = logging.getLogger("fineloop.serving")

MAX_ENTRIES = 20_000
_PAGE = 2_000


class SpanMemory:
    """The project's gazetteer; `refresh` runs on one thread at a time."""

    def __init__(self, project_id: int, max_entries: int = MAX_ENTRIES) -> None:
        self.project_id = project_id
        self.max_entries = max_entries
        self._watermark = FeedbackWatermark()
        self._page = project_pages(project_id, ("correction", "label"), shown_io, _PAGE)
        self._entries: dict[Form, Entry] = {}
        self.view = View()

    @property
    def watermark(self) -> int:
        return self._watermark.mark

    def refresh(self, store: Store) -> int:
        """Read feedback past the watermark and publish a new view if anything changed;
        returns how many feedback rows were new."""
        read, changed = 0, False
        for rows in self._watermark.pages(store, self._page):
            read += len(rows)
            for row in rows:
                changed = self._apply(row) or changed
        if changed:
            self._bound()
            self.view = View.of(self._entries)
        return read

    def _apply(self, row: Any) -> bool:
        """Learn from one feedback row; True if an entry changed."""
        text = text_of(row.input if row.input is not None else row.shown_input)
        payload = row.payload if isinstance(row.payload, dict) else {}
        if text is None:
            return False
        shown = spans_of(row.shown_output)
        if row.kind == "correction":
            try:
                right = corrected_spans(row.shown_output, payload.get("output"))
            except ValueError:  # refused at ingest; an old or imported row may hold anything
                return False
        else:
            right = spans_of({"spans": payload.get("spans")})
        right = [s for s in right if s.end <= len(text)]
        removed = [s for s in shown if s.end <= len(text) and not _overlapped(s, right)]
        was_shown = set(shown)
        added = [s for s in right if s not in was_shown]
        changed = False
        # Removals first: a form both removed and added in one text was said to be an entity.
        for span, label in [(s, None) for s in removed] + [(s, s.label) for s in added]:
            changed = self._set(text[span.start : span.end], label, row.id) or changed
        return changed

    def _set(self, surface: str, label: str | None, feedback_id: int) -> bool:
        form = form_of(surface)
        if form is None:
            return False
        known = self._entries.get(form)
        if known is not None and known.feedback_id > feedback_id:
            return False  # newer feedback about this form was read first (PostgreSQL order)
        self._entries[form] = Entry(label, feedback_id)
        return True

    def _bound(self) -> None:
        if len(self._entries) > self.max_entries:
            newest = sorted(self._entries.items(), key=lambda item: item[1].feedback_id)
            self._entries = dict(newest[-self.max_entries :])


def _overlapped(span: Span, others: list[Span]) -> bool:
    return any(o.start < span.end and span.start < o.end for o in others)
