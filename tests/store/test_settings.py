"""Settings: defaults, FINELOOP_* variables, a TOML file, and which one wins.

Precedence, highest first: arguments to `get_settings` > environment > config file > defaults.
"""

from __future__ import annotations

import secrets
from pathlib import Path

import pytest
from pydantic import ValidationError

from fineloop.api import create_app
from fineloop.config import get_settings

ONE = "secret-one-0123456789abcdefghijklmnop"  # configured keys: at least 32 characters
TWO = "secret-two-0123456789abcdefghijklmnop"
LONG = "a-secret-long-enough-0123456789abcdef"


def test_defaults_keep_everything_in_a_local_folder(tmp_path: Path) -> None:
    settings = get_settings()
    assert settings.data_dir == Path(".fineloop")
    expected = (tmp_path / ".fineloop" / "fineloop.db").resolve()
    assert settings.resolved_database_url == f"sqlite:///{expected}"
    assert settings.is_sqlite
    assert settings.resolved_artifact_root == str((tmp_path / ".fineloop" / "artifacts").resolve())
    assert settings.sqlite_synchronous == "FULL"
    assert settings.configured_keys() == []


def test_environment_variables_configure_every_field(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FINELOOP_DATA_DIR", "/srv/fineloop")
    monkeypatch.setenv("FINELOOP_DATABASE_URL", "postgresql+psycopg://app@db:5432/fineloop")
    monkeypatch.setenv("FINELOOP_API_KEYS", f"{ONE}:ingest, {TWO}:admin")
    monkeypatch.setenv("FINELOOP_MAX_BATCH_EVENTS", "50")
    monkeypatch.setenv("FINELOOP_SQLITE_SYNCHRONOUS", "normal")
    settings = get_settings()
    assert settings.data_dir == Path("/srv/fineloop")
    assert settings.resolved_database_url == "postgresql+psycopg://app@db:5432/fineloop"
    assert not settings.is_sqlite
    assert settings.configured_keys() == [(ONE, "ingest"), (TWO, "admin")]
    assert settings.max_batch_events == 50
    assert settings.sqlite_synchronous == "NORMAL"


def test_config_file_given_as_argument(tmp_path: Path) -> None:
    config = tmp_path / "fineloop.toml"
    config.write_text('[fineloop]\ndata_dir = "/var/lib/fineloop"\nmax_request_bytes = 1024\n')
    settings = get_settings(config)
    assert settings.data_dir == Path("/var/lib/fineloop")
    assert settings.max_request_bytes == 1024


def test_config_file_named_by_fineloop_config(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "plain.toml"
    config.write_text('data_dir = "from-file"\nartifact_root = "s3://bucket/fineloop"\n')
    monkeypatch.setenv("FINELOOP_CONFIG", str(config))
    settings = get_settings()
    assert settings.data_dir == Path("from-file")
    assert settings.resolved_artifact_root == "s3://bucket/fineloop"


def test_overrides_beat_environment_beat_file_beat_defaults(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "fineloop.toml"
    config.write_text(
        '[fineloop]\ndata_dir = "file-dir"\nmax_request_bytes = 111\nmax_import_bytes = 222\n'
    )
    monkeypatch.setenv("FINELOOP_CONFIG", str(config))
    monkeypatch.setenv("FINELOOP_DATA_DIR", "env-dir")
    monkeypatch.setenv("FINELOOP_MAX_REQUEST_BYTES", "333")
    settings = get_settings(data_dir="override-dir")
    assert settings.data_dir == Path("override-dir")  # override beats env and file
    assert settings.max_request_bytes == 333  # env beats file
    assert settings.max_import_bytes == 222  # file beats default
    assert settings.max_batch_events == 10_000  # default


def test_config_argument_beats_fineloop_config(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    named = tmp_path / "named.toml"
    named.write_text('data_dir = "named"\n')
    given = tmp_path / "given.toml"
    given.write_text('data_dir = "given"\n')
    monkeypatch.setenv("FINELOOP_CONFIG", str(named))
    assert get_settings(given).data_dir == Path("given")


@pytest.mark.parametrize(
    "entry", [LONG, f"{LONG}:owner", ":admin", f"{LONG}:", "x" * 31 + ":admin"], ids=str
)
def test_bad_api_keys_entry_stops_the_start_with_a_clear_error(entry: str) -> None:
    with pytest.raises(ValidationError, match="FINELOOP_API_KEYS entry 2") as caught:
        get_settings(api_keys=f"{ONE}:ingest,{entry}")
    assert ONE not in str(caught.value)  # never echo a secret
    assert LONG not in str(caught.value)


def test_a_short_key_is_refused_with_how_to_make_one() -> None:
    with pytest.raises(ValidationError, match="31 characters; keys must be 32 to 256") as caught:
        get_settings(api_keys="y" * 31 + ":admin")
    assert "secrets.token_urlsafe(32)" in str(caught.value)
    assert "y" * 31 not in str(caught.value)


def test_a_key_longer_than_a_header_may_carry_is_refused() -> None:
    with pytest.raises(ValidationError, match="257 characters"):
        get_settings(api_keys="z" * 257 + ":admin")


def test_a_generated_key_is_accepted() -> None:
    key = secrets.token_urlsafe(32)
    assert get_settings(api_keys=f"{key}:admin").configured_keys() == [(key, "admin")]


def test_the_app_refuses_to_start_with_a_bad_api_keys_entry(tmp_path: Path) -> None:
    settings = get_settings(data_dir=tmp_path / "data").model_copy(
        update={"api_keys": "no-scope-here"}  # model_copy skips validation: create_app checks
    )
    with pytest.raises(ValueError, match="FINELOOP_API_KEYS"):
        create_app(settings)


def test_unknown_key_in_config_file_is_an_error(tmp_path: Path) -> None:
    config = tmp_path / "fineloop.toml"
    config.write_text('[fineloop]\ndata_dri = "typo"\n')
    with pytest.raises(ValidationError, match="data_dri"):
        get_settings(config)


def test_bad_value_in_environment_is_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FINELOOP_SQLITE_SYNCHRONOUS", "sometimes")
    with pytest.raises(ValidationError, match="OFF, NORMAL, FULL, EXTRA"):
        get_settings()


def test_missing_config_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        get_settings(tmp_path / "absent.toml")
