"""Every route in /openapi.json, fuzzed: no input makes the server answer 5xx, and every
answer is one the document lists, in the shape it gives.

schemathesis generates valid and invalid inputs from each route's OpenAPI entry (bodies,
path and query parameters, headers) and sends them to the in-process app. The project is a
real embedding project on the tiny model with a few items, so search, select, calibration
and /v1/embeddings encode and rank for real. Bounded for CI: a few examples per route,
derandomized so a failure reproduces; once with API keys configured, once in open mode.

Each route runs as its own Hypothesis test over schemathesis's strategy for it (valid and
invalid inputs), rather than through `schemathesis.pytest.from_fixture`: that loader sets
`node._nodeid`, which pytest 9 no longer has.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, Phase, given
from hypothesis import settings as fuzz_settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from fineloop.api import create_app
from fineloop.config import Settings
from serving.helpers import CATALOG, items

ADMIN_KEY = "fuzz-admin-" + "k" * 40
SPARE_KEY = "fuzz-spare-" + "s" * 40  # the key the fuzzer may revoke, so ours stays valid
PROJECT = "shop"
SERVING = [
    "POST /v1/projects/{project}/search",
    "POST /v1/projects/{project}/select",
    "POST /v1/embeddings",
]
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]


def _app(settings: Settings, tiny_model: Path) -> tuple[Any, int]:
    """The app over a fresh store, with project `shop` on the tiny model and a few items;
    and the id of the spare key (the only one the fuzzer may revoke)."""
    app = create_app(settings)
    headers = {"Authorization": f"Bearer {ADMIN_KEY}"}
    with TestClient(app) as client:
        created = client.post(
            "/v1/projects",
            json={"name": PROJECT, "task": "embedding", "base_model": str(tiny_model)},
            headers=headers,
        )
        assert created.status_code == 201, created.text
        stored = client.put(
            f"/v1/projects/{PROJECT}/items", json={"items": items(CATALOG)}, headers=headers
        )
        assert stored.status_code == 200, stored.text
        found = client.post(
            f"/v1/projects/{PROJECT}/search", json={"query": "reset password"}, headers=headers
        )
        assert found.status_code == 200, found.text  # the model and index are loaded
        keys = client.get("/v1/keys", headers=headers).json()
    spare = [key["id"] for key in keys if key["name"] == "configured-2"]
    return app, spare[0] if spare else 1


# Examples per route: with keys, the full run; open mode differs only in the key check.
# About 55-75 s and 25 s on 2 shared cores (SQLite and PostgreSQL alike).
EXAMPLES = {"keys": 40, "open": 15}
FUZZ = fuzz_settings(
    derandomize=True,
    deadline=None,
    database=None,
    phases=[Phase.explicit, Phase.generate, Phase.shrink],
    suppress_health_check=list(HealthCheck),
    print_blob=False,
)


@pytest.mark.parametrize("mode", ["keys", "open"])
def test_no_input_answers_5xx_or_off_the_document(
    mode: str, settings: Settings, tiny_model: Path
) -> None:
    update: dict[str, Any] = {"models_root": tiny_model.parent}  # base models are read from here
    if mode == "keys":
        update["api_keys"] = f"{ADMIN_KEY}:admin,{SPARE_KEY}:ingest"
    settings = settings.model_copy(update=update)
    app, spare_key = _app(settings, tiny_model)
    headers = {"Authorization": f"Bearer {ADMIN_KEY}"} if mode == "keys" else {}
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    failures: list[str] = []
    answered: dict[str, Counter[int]] = {}
    operations = [result.ok() for result in schema.get_all_operations()]
    # Last, since a key created in open mode ends open mode for the routes after it.
    operations.sort(key=lambda operation: operation.path.startswith("/v1/keys"))
    for operation in operations:
        label = operation.label
        answered[label] = Counter()
        try:
            known = {"project": PROJECT, "key_id": spare_key}
            _fuzz(operation, EXAMPLES[mode], headers, known, answered[label])
        except (Exception, BaseExceptionGroup) as error:  # every failing route is reported
            failures.append(f"{label}: {error}")
    app.state.store.close()
    print("\n".join(f"{label}: {dict(sorted(codes.items()))}" for label, codes in answered.items()))
    assert not failures, f"{len(failures)} route(s) failed:\n\n" + "\n\n".join(failures)
    assert len(answered) >= 40  # every route of the document was fuzzed
    for label in SERVING:  # and the model did real work, not only the validation
        assert answered[label][200] > 0, f"{label} never answered 200: {answered[label]}"


def _fuzz(
    operation: Any,
    examples: int,
    headers: dict[str, str],
    known: dict[str, Any],
    answered: Counter[int],
) -> None:
    """Valid and invalid inputs for one route. Most routes live under a project: most cases
    use the real one (a random name only reaches the 404), and DELETE /v1/keys/{key_id}
    may revoke only the spare key, so the admin key keeps working."""
    names = {parameter.name for parameter in operation.path_parameters}
    fixed = {name: value for name, value in known.items() if name in names}
    strategies = [
        operation.as_strategy(mode, path_parameters=fixed or None)
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)
    ]
    if fixed and "key_id" not in fixed:
        strategies.append(operation.as_strategy(GenerationMode.POSITIVE))
    if operation.path == "/v1/embeddings":  # `model` names the project: embed for real
        strategies.append(operation.as_strategy(GenerationMode.POSITIVE).map(_naming_the_project))

    @fuzz_settings(FUZZ, max_examples=examples)
    @given(case=st.one_of(strategies))
    def run(case: Any) -> None:
        try:
            response = case.call_and_validate(headers=headers, checks=CHECKS)
            answered[response.status_code] += 1
        except (AssertionError, BaseExceptionGroup):
            raise  # a failed check: schemathesis's report names the request
        except Exception as error:  # the in-process client re-raises what answered 500
            raise AssertionError(f"500 ({error!r}) for\n{case.as_curl_command(headers)}") from error

    run()


def _naming_the_project(case: Any) -> Any:
    case.body = {**case.body, "model": PROJECT}
    return case


def test_every_route_documents_its_errors_in_fineloops_shape(client: TestClient) -> None:
    """The document a client generates code from lists each route's 4xx, with our error
    body rather than FastAPI's default 422 shape (which no fineloop error has)."""
    document = client.get("/openapi.json").json()
    assert "HTTPValidationError" not in document["components"]["schemas"]
    for path, methods in document["paths"].items():
        for method, entry in methods.items():
            codes = set(entry["responses"])
            assert "400" in codes, f"{method.upper()} {path}"
            if path != "/healthz":
                assert {"401", "403", "429"} <= codes, f"{method.upper()} {path}: {codes}"
            if entry.get("parameters") or entry.get("requestBody"):
                assert "422" in codes, f"{method.upper()} {path}: {codes}"
            if "requestBody" in entry:
                assert {"413", "415"} <= codes, f"{method.upper()} {path}: {codes}"
