"""Feedback bodies are read with orjson only where it reads them as `json.loads` does."""

from __future__ import annotations

import json

import pytest
from fastapi.testclient import TestClient

from fineloop.api.jsonbody import read_json

BODIES = [
    b'{"events": [{"kind": "thumb", "value": "up"}]}',
    b'{"a": 1, "a": 2}',  # the last duplicate wins in both
    b" [0.1, 2.5e-310, 1.7976931348623157e308, 5e-324, -0, -0.0, 1E2] ",
    b'{"s": "\\u00e9\\u0000\\ud83d\\ude00 caf\xc3\xa9"}',
    b"[9223372036854775807, -9223372036854775808, 18446744073709551616, 2e19]",
    b'["\\ud800"]',  # a lone surrogate: orjson refuses, json keeps it
    b"[NaN, Infinity, -Infinity, 1e400]",  # refused later, by validation, with a message
    b"\xef\xbb\xbf[1]",  # UTF-8 byte order mark
    "[1, 2]".encode("utf-16"),
]


@pytest.mark.parametrize("body", BODIES)
def test_read_json_gives_what_json_loads_gives(body: bytes) -> None:
    assert repr(read_json(body)) == repr(json.loads(body))  # repr: nan != nan, types kept


@pytest.mark.parametrize("body", [b"[1]x", b'{"a": 01}', b"[1,]", b'"\x01"', b"\xff"])
def test_a_body_json_refuses_raises_its_error(body: bytes) -> None:
    with pytest.raises((json.JSONDecodeError, UnicodeDecodeError)) as expected:
        json.loads(body)
    with pytest.raises(type(expected.value)) as raised:
        read_json(body)
    assert str(raised.value) == str(expected.value)


def test_an_integer_past_64_bits_is_refused_by_name_not_rounded(
    client: TestClient, project: str
) -> None:
    body = b'{"events": [{"kind": "thumb", "value": "up", "input": "q", "metadata": {"n": %d}}]}'
    response = client.post(
        f"/v1/projects/{project}/feedback/batch",
        content=body % 2**70,
        headers={"content-type": "application/json"},
    )
    assert response.status_code == 422, response.text
    assert "outside the 64-bit range" in response.text
    assert str(2**70) in response.text


def test_a_malformed_batch_is_a_422_and_stores_nothing(client: TestClient, project: str) -> None:
    url = f"/v1/projects/{project}/feedback/batch"
    response = client.post(
        url, content=b'{"events": [', headers={"content-type": "application/json"}
    )
    assert response.status_code == 422, response.text
    nan = b'{"events": [{"kind": "rating", "value": NaN, "input": "q"}]}'
    response = client.post(url, content=nan, headers={"content-type": "application/json"})
    assert response.status_code == 422, response.text
    assert client.get(f"/v1/projects/{project}/feedback").json()["items"] == []
