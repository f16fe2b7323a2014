"""Calibration: a monotone map from a version's raw cosine to P(the user accepts the item).

Fitted on judged shown items — (cosine under the serving version, 1 if picked else 0):
- with at least `ISOTONIC_MIN` samples, isotonic regression (sklearn, increasing,
  out-of-bounds clipped), evaluated from its stored thresholds by linear interpolation,
  exactly as `IsotonicRegression.predict` does;
- with fewer (but at least `FIT_MIN`, both labels present), Platt scaling: a logistic
  regression on the cosine (sklearn), its slope kept positive so the map stays increasing;
- before that, `DEFAULT`: a logistic curve centred at cosine 0.55 with slope 12. For
  all-MiniLM-L6-v2 the median cosine of a query to its right item is 0.75 (StackFAQ) and
  0.63 (Banking77), to the closest wrong item 0.50 and 0.57, to a typical wrong item 0.08
  and 0.15; the centre sits between the first two, so p(0.75) = 0.92, p(0.50) = 0.35.

The serving loop refits when `REFIT_EVERY` judged samples arrived since the last fit (or on
`POST /v1/projects/{p}/calibration`); fits are stored in the `calibrations` table.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

import numpy as np
from sqlalchemy import select
from sqlalchemy.orm import Session

from fineloop.store.schema import Calibration

Method = Literal["default", "platt", "isotonic"]
Mode = Literal["auto", "isotonic", "platt"]
ISOTONIC_MIN = 200
FIT_MIN = 10
REFIT_EVERY = 50
DEFAULT_CENTRE = 0.55
DEFAULT_SLOPE = 12.0


@dataclass(frozen=True)
class Calibrator:
    method: Method
    params: dict[str, Any]
    samples: int = 0
    fitted_at: datetime | None = field(default=None, compare=False)

    def probability(self, scores: np.ndarray) -> np.ndarray:
        scores = np.asarray(scores, dtype=np.float64)
        if self.method == "isotonic":
            x = np.asarray(self.params["x"], dtype=np.float64)
            y = np.asarray(self.params["y"], dtype=np.float64)
            return np.asarray(np.interp(scores, x, y))  # clips outside [x[0], x[-1]]
        slope, intercept = float(self.params["slope"]), float(self.params["intercept"])
        return 1.0 / (1.0 + np.exp(-(slope * scores + intercept)))

    def public(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "params": self.params,
            "samples": self.samples,
            "fitted_at": self.fitted_at.isoformat() if self.fitted_at else None,
        }


DEFAULT = Calibrator(
    "default", {"slope": DEFAULT_SLOPE, "intercept": -DEFAULT_SLOPE * DEFAULT_CENTRE}
)


def fit(scores: np.ndarray, labels: np.ndarray, mode: Mode = "auto") -> Calibrator:
    """Fit on (cosine, accepted) pairs; DEFAULT when there is too little to fit."""
    scores = np.asarray(scores, dtype=np.float64)
    labels = np.asarray(labels, dtype=np.float64)
    n = len(scores)
    if n < FIT_MIN or len(np.unique(labels)) < 2:
        return Calibrator(DEFAULT.method, DEFAULT.params, n, _now())
    if mode == "isotonic" or (mode == "auto" and n >= ISOTONIC_MIN):
        return _isotonic(scores, labels)
    return _platt(scores, labels)


def _isotonic(scores: np.ndarray, labels: np.ndarray) -> Calibrator:
    from sklearn.isotonic import IsotonicRegression  # type: ignore[import-untyped]

    model = IsotonicRegression(out_of_bounds="clip", increasing=True, y_min=0.0, y_max=1.0)
    model.fit(scores, labels)
    params = {
        "x": [float(v) for v in model.X_thresholds_],
        "y": [float(v) for v in model.y_thresholds_],
    }
    return Calibrator("isotonic", params, len(scores), _now())


def _platt(scores: np.ndarray, labels: np.ndarray) -> Calibrator:
    from sklearn.linear_model import LogisticRegression  # type: ignore[import-untyped]

    model = LogisticRegression(C=100.0)
    model.fit(scores.reshape(-1, 1), labels.astype(int))
    slope = float(model.coef_[0][0])
    intercept = float(model.intercept_[0])
    if slope <= 0:
        # The feedback shows no increasing relation: keep the base rate, nearly flat but
        # still increasing, so ranking by probability stays ranking by cosine.
        rate = float(np.clip(labels.mean(), 1e-3, 1 - 1e-3))
        slope, intercept = 1e-3, math.log(rate / (1 - rate))
    return Calibrator("platt", {"slope": slope, "intercept": intercept}, len(scores), _now())


def _now() -> datetime:
    return datetime.now(UTC)


def latest(session: Session, project_id: int, version_id: int) -> Calibrator | None:
    row = session.scalar(
        select(Calibration)
        .where(Calibration.project_id == project_id, Calibration.version_id == version_id)
        .order_by(Calibration.id.desc())
        .limit(1)
    )
    if row is None:
        return None
    method: Method = "isotonic" if row.method == "isotonic" else "platt"
    if row.method == "default":
        method = "default"
    return Calibrator(method, row.params, row.samples, row.fitted_at)


def save(session: Session, project_id: int, version_id: int, calibrator: Calibrator) -> None:
    session.add(
        Calibration(
            project_id=project_id,
            version_id=version_id,
            method=calibrator.method,
            params=calibrator.params,
            samples=calibrator.samples,
            fitted_at=calibrator.fitted_at or _now(),
        )
    )
    session.flush()
