"""`Slot`: what serving keeps per (project, version) — index, feedback memory, calibrator —
and the calibration fit over it."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

import numpy as np

from fineloop.serving import calibration
from fineloop.serving.family import Served
from fineloop.store import Store
from fineloop.tasks.embedding.serving.catalog import Catalog
from fineloop.tasks.embedding.serving.memory import FeedbackMemory


@dataclass
class Slot:
    project: str
    catalog: Catalog
    memory: FeedbackMemory
    calibrator: calibration.Calibrator
    lock: threading.Lock = field(default_factory=threading.Lock)  # memory refreshes
    fit_lock: threading.Lock = field(default_factory=threading.Lock)
    refitting: bool = False  # a background refit is queued or running
    judged_at_fit: int = 0  # labelled items the current calibrator saw


def refit_due(slot: Slot, judged: int) -> bool:
    """FIT_MIN judged items for a first fit, then REFIT_EVERY new ones for each refit."""
    first = slot.calibrator.method == "default"
    step = calibration.FIT_MIN if first else calibration.REFIT_EVERY
    return judged >= calibration.FIT_MIN and judged - slot.judged_at_fit >= step


def refit(
    store: Store, served: Served[Slot], *, only_if_due: bool = False
) -> calibration.Calibrator:
    """Fit on every labelled shown item, store the fit, and serve with it at once."""
    slot = served.resource
    with slot.fit_lock:
        judged = slot.memory.labelled
        if only_if_due and not refit_due(slot, judged):
            return slot.calibrator
        scores, labels = calibration_samples(slot)
        fitted = calibration.fit(scores, labels, served.project.policy.calibration)
        with store.write() as session:
            calibration.save(session, served.project.id, served.version.id, fitted)
        slot.calibrator, slot.judged_at_fit = fitted, judged
    return fitted


def calibration_samples(slot: Slot) -> tuple[np.ndarray, np.ndarray]:
    """(cosine under this version, accepted) for each labelled shown item still listed:
    scores are recomputed with the serving version, so feedback given while another
    version served calibrates this one too."""
    index, memory = slot.catalog.index, slot.memory
    triples = [(r, index.row_of[i], y) for r, i, y in memory.samples() if i in index.row_of]
    if not triples:
        return np.zeros(0), np.zeros(0)
    queries = memory.matrix[[t[0] for t in triples]]
    items = index.vectors([t[1] for t in triples])
    return np.sum(queries * items, axis=1), np.array([t[2] for t in triples], dtype=float)
