"""Ingest settings: environment over YAML over defaults, checked at start, secrets hidden."""

from __future__ import annotations

from pathlib import Path

import pytest

from ingest.config import IngestSettings, default_client_id
from ingest.errors import ConfigError

DB = "postgresql://ingest:s3cret@db.example:5432/linepulse"


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for key in list(os.environ):
        if key.startswith("LINEPULSE_"):
            monkeypatch.delenv(key)


def test_defaults_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LINEPULSE_DATABASE_URL", DB)
    s = IngestSettings.load()
    assert s.database_url == DB
    assert (s.mqtt_host, s.mqtt_port, s.mqtt_tls) == ("127.0.0.1", 1883, False)
    assert s.mqtt_client_id == default_client_id()
    assert s.mqtt_client_id.startswith("linepulse-ingest-")
    assert s.subscription == "$share/linepulse-ingest/linepulse/v1/#"
    assert s.topic_filter == "linepulse/v1/#"
    assert s.flush_interval <= 0.25
    assert s.receive_maximum >= s.batch_max_messages
    assert s.max_held_messages >= s.receive_maximum


def test_yaml_file_with_environment_overrides(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    f = tmp_path / "ingest.yaml"
    f.write_text(
        f"database_url: {DB}\n"
        "mqtt_url: mqtts://broker.example\n"
        "mqtt_username: ingest\n"
        "mqtt_password: hunter2\n"
        "shared_group: ''\n"
        "flush_interval: 100ms\n"
        "dead_letter_max_bytes: 16KiB\n"
        "batch_max_samples: 20000\n"
    )
    monkeypatch.setenv("LINEPULSE_BATCH_MAX_SAMPLES", "30000")
    s = IngestSettings.load(f)
    assert (s.mqtt_host, s.mqtt_port, s.mqtt_tls) == ("broker.example", 8883, True)
    assert s.subscription == "linepulse/v1/#"  # no group: a plain subscription
    assert s.flush_interval == pytest.approx(0.1)
    assert s.dead_letter_max_bytes == 16 * 1024
    assert s.batch_max_samples == 30000  # the environment wins over the file
    assert s.mqtt_password is not None and s.mqtt_password.get_secret_value() == "hunter2"
    text = repr(s) + str(s)
    assert "hunter2" not in text and "s3cret" not in text


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({}, "LINEPULSE_DATABASE_URL"),
        ({"database_url": "postgresql://u:pw@h/db?bogus=1"}, "not a valid PostgreSQL URL"),
        ({"database_url": DB, "flush_interval": "300ms"}, "flush_interval"),
        ({"database_url": DB, "mqtt_url": "http://x"}, "mqtt_url"),
        ({"database_url": DB, "topic_prefix": "a/b"}, "topic_prefix"),
        ({"database_url": DB, "shared_group": "a/b"}, "shared_group"),
        ({"database_url": DB, "receive_maximum": 10}, "receive_maximum"),
        ({"database_url": DB, "max_held_messages": 10}, "max_held_messages"),
        ({"database_url": DB, "mqtt_ca_file": "/nonexistent/ca.pem"}, "mqtt_ca_file"),
        ({"database_url": DB, "workers": 2, "shared_group": ""}, "shared_group"),
        ({"database_url": DB, "batch_size": 3}, "unknown setting"),
    ],
)
def test_bad_settings_are_named(values: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message) as err:
        IngestSettings.load(**values)  # type: ignore[arg-type]
    assert "pw" not in str(err.value)


def test_bad_yaml_names_the_file(tmp_path: Path) -> None:
    f = tmp_path / "bad.yaml"
    f.write_text("database_url: [unclosed\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml:"):
        IngestSettings.load(f)
    f.write_text("- a list\n")
    with pytest.raises(ConfigError, match="mapping"):
        IngestSettings.load(f)
    f.write_text(f"database_url: {DB}\nflush_intervall: 1s\n")
    with pytest.raises(ConfigError, match=r"flush_intervall.*unknown setting"):
        IngestSettings.load(f)
    with pytest.raises(ConfigError, match="cannot read"):
        IngestSettings.load(tmp_path / "missing.yaml")


def test_the_entry_point_reports_config_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from ingest.service import main

    assert main(["--config", str(tmp_path / "missing.yaml")]) == 2
    assert "cannot read the config file" in capsys.readouterr().err
    f = tmp_path / "ingest.yaml"
    f.write_text(f"database_url: {DB}\nworkers: 2\nshared_group: ''\n")
    assert main(["--config", str(f)]) == 2
    assert "shared_group" in capsys.readouterr().err
