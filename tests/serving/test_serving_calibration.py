"""Calibration: a monotone map from cosine to acceptance probability, fitted on feedback and
stored; Platt scaling with little feedback, isotonic from 200 judged items."""

from __future__ import annotations

import numpy as np
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from fineloop.serving import calibration, get_serving
from fineloop.serving.calibration import DEFAULT, fit
from fineloop.serving.versions import ensure_champion
from fineloop.store import Store
from fineloop.store.projects import get_project
from fineloop.store.schema import Calibration
from serving.helpers import CATALOG, ids, search

GRID = np.linspace(-1, 1, 401)
QUERIES = [
    "reset my password",
    "card lost",
    "refund payment",
    "cancel plan",
    "invite colleague",
    "export data",
    "change email",
    "where is my invoice",
    "close account",
]


def judged(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Scores where acceptance grows with the cosine, with noise."""
    rng = np.random.default_rng(seed)
    scores = rng.uniform(0, 1, n)
    labels = (rng.uniform(0, 1, n) < scores**2).astype(float)
    return scores, labels


def is_monotone(values: np.ndarray) -> bool:
    return bool(np.all(np.diff(values) >= -1e-12))


def test_default_before_feedback_is_a_sigmoid_around_the_typical_cosine() -> None:
    p = DEFAULT.probability(np.array([0.2, 0.55, 0.75]))

    assert p[0] < 0.05 and p[1] == pytest.approx(0.5) and p[2] > 0.9
    assert is_monotone(DEFAULT.probability(GRID))
    assert fit(*judged(5)).method == "default"  # too few to fit


@pytest.mark.parametrize(("n", "method"), [(60, "platt"), (199, "platt"), (200, "isotonic")])
def test_fits_are_monotone_and_pick_the_method_by_sample_count(n: int, method: str) -> None:
    fitted = fit(*judged(n))

    assert fitted.method == method
    assert fitted.samples == n
    assert is_monotone(fitted.probability(GRID))
    assert fitted.probability(np.array([0.05]))[0] < fitted.probability(np.array([0.95]))[0]
    assert ((fitted.probability(GRID) >= 0) & (fitted.probability(GRID) <= 1)).all()


def test_platt_on_inverted_feedback_stays_increasing() -> None:
    scores, labels = judged(80)

    fitted = fit(scores, 1 - labels)

    assert is_monotone(fitted.probability(GRID))


def test_stored_fit_reads_back_identically(store: Store, catalog: str) -> None:
    fitted = fit(*judged(250))
    version = ensure_champion(store, catalog)
    with store.write() as session:
        project_id = get_project(session, catalog).id
        calibration.save(session, project_id, version.id, fitted)
    with store.read() as session:
        again = calibration.latest(session, project_id, version.id)

    assert again is not None
    assert (again.method, again.samples) == ("isotonic", 250)
    assert np.allclose(again.probability(GRID), fitted.probability(GRID))


def give_feedback(client: TestClient, project: str, rounds: int) -> int:
    """Each search shows all items; the user picks the first and rejects the rest."""
    events = []
    for n in range(rounds):
        body = search(client, project, QUERIES[n % len(QUERIES)], k=len(CATALOG))
        shown = ids(body)
        events.append(
            {
                "kind": "selection",
                "interaction_id": body["interaction_id"],
                "selected": shown[:1],
                "rejected": shown[1:],
            }
        )
    response = client.post(f"/v1/projects/{project}/feedback/batch", json={"events": events})
    assert response.status_code == 201, response.text
    return rounds * len(CATALOG)


def test_refit_on_demand_stores_and_serves_the_fit(
    client: TestClient, catalog: str, store: Store
) -> None:
    client.patch(f"/v1/projects/{catalog}", json={"serving_policy": {"online_adaptation": False}})
    assert search(client, catalog, "refund")["calibration"] == "default"
    samples = give_feedback(client, catalog, 3)

    fitted = client.post(f"/v1/projects/{catalog}/calibration").json()
    get_serving(client.app).background.join()  # an automatic refit may have run as well
    shown = client.get(f"/v1/projects/{catalog}/calibration").json()
    body = search(client, catalog, "refund payment", k=len(CATALOG))

    assert fitted["method"] == "platt" and fitted["samples"] == samples
    assert (shown["method"], shown["params"]) == ("platt", fitted["params"])
    with store.read() as session:
        rows = list(session.scalars(select(Calibration).order_by(Calibration.id)))
    assert (rows[-1].method, rows[-1].samples, rows[-1].params) == (
        "platt",
        samples,
        fitted["params"],
    )
    assert body["calibration"] == "platt"
    probabilities = [hit["probability"] for hit in body["items"]]
    assert probabilities == sorted(probabilities, reverse=True)  # monotone in the score


def test_enough_new_feedback_refits_by_itself_and_turns_isotonic(
    client: TestClient, catalog: str
) -> None:
    search(client, catalog, "refund")
    give_feedback(client, catalog, 23)  # 207 judged items

    search(client, catalog, "refund")  # reads the feedback, schedules the refit
    get_serving(client.app).background.join()

    assert search(client, catalog, "refund")["calibration"] == "isotonic"
    assert client.get(f"/v1/projects/{catalog}/calibration").json()["samples"] >= 200
