"""Settings of ``linepulse ingest run``: ``LINEPULSE_*`` environment variables over a YAML file.

Precedence: keyword arguments, then the environment (``LINEPULSE_DATABASE_URL``,
``LINEPULSE_MQTT_URL``, ...: the field name in upper case behind the prefix), then the
YAML file (the same names as keys, lower case), then the defaults below. Everything is
checked at start; an error names the setting and what to write instead. The database URL
and the MQTT password never appear in ``repr`` or in logs.
"""

from __future__ import annotations

import re
import socket
from contextvars import ContextVar
from pathlib import Path
from typing import Annotated, Any

import psycopg
import yaml
from psycopg.conninfo import conninfo_to_dict
from pydantic import (
    BeforeValidator,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    YamlConfigSettingsSource,
)

from edge_agent.contract import ContractError, check_segment
from edge_agent.units import parse_duration, parse_size
from ingest.errors import ConfigError

ENV_PREFIX = "LINEPULSE_"
# flush_interval may not exceed this: the issue promises a flush at least every 250 ms.
MAX_FLUSH_INTERVAL = 0.25

_MQTT_URL = re.compile(r"^(mqtt|mqtts|tcp|ssl)://([^:/\s]+)(?::(\d{1,5}))?/?$")
_GROUP = re.compile(r"^[^/+#\s]{1,64}$")


def _duration(value: object) -> float:
    return parse_duration(value, allow_zero=True)


def _size(value: object) -> int:
    return parse_size(value, allow_zero=True)


Duration = Annotated[float, BeforeValidator(_duration)]
Size = Annotated[int, BeforeValidator(_size)]


def default_client_id() -> str:
    """``linepulse-ingest-<hostname>``: stable across restarts, so the broker session survives."""
    host = re.sub(r"[^A-Za-z0-9_.-]", "-", socket.gethostname()) or "host"
    return f"linepulse-ingest-{host}"


_yaml_file: ContextVar[Path | None] = ContextVar("linepulse_ingest_yaml", default=None)


class IngestSettings(BaseSettings):
    """Everything the ingest service needs; see the module docstring for where values come from."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="forbid", frozen=True)

    database_url: str = Field(repr=False, min_length=1)
    mqtt_url: str = "mqtt://127.0.0.1:1883"
    mqtt_username: str | None = None
    mqtt_password: SecretStr | None = None
    mqtt_ca_file: Path | None = None
    mqtt_cert_file: Path | None = None
    mqtt_key_file: Path | None = None
    mqtt_tls_insecure: bool = False  # skip hostname verification (test rigs only)
    mqtt_client_id: str = Field(default_factory=default_client_id, min_length=1, max_length=256)
    mqtt_keepalive: int = Field(default=30, ge=5, le=3600)
    topic_prefix: str = "linepulse"
    shared_group: str = "linepulse-ingest"  # empty: a plain (non-shared) subscription
    session_expiry: Duration = Field(default=86400.0, ge=0, le=0xFFFFFFFF)
    receive_maximum: int = Field(default=400, ge=1, le=65535)
    batch_max_messages: int = Field(default=200, ge=1)
    batch_max_samples: int = Field(default=200_000, ge=1)
    flush_interval: Duration = Field(default=0.25, gt=0, le=MAX_FLUSH_INTERVAL)
    max_held_messages: int = Field(default=600, ge=1)
    max_message_bytes: Size = Field(default=1024 * 1024, ge=1024)
    dead_letter_max_bytes: Size = Field(default=64 * 1024, ge=0)
    health_host: str = "127.0.0.1"
    health_port: int | None = Field(default=9108, ge=0, le=65535)  # None: no endpoint
    maintenance_interval: Duration = Field(default=60.0, ge=0)  # 0: no periodic maintenance
    db_reconnect_max_delay: Duration = Field(default=5.0, gt=0, le=300)
    mqtt_reconnect_max_delay: int = Field(default=5, ge=1, le=300)
    shutdown_timeout: Duration = Field(default=10.0, gt=0)
    workers: int = Field(default=1, ge=1, le=64)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Keyword arguments, then the environment, then the YAML file given to ``load``."""
        path = _yaml_file.get()
        if path is None:
            return (init_settings, env_settings)
        return (init_settings, env_settings, YamlConfigSettingsSource(settings_cls, path))

    @field_validator("database_url")
    @classmethod
    def _database(cls, v: str) -> str:
        try:
            conninfo_to_dict(v)
        except psycopg.ProgrammingError:
            # psycopg's message may quote the URL, password included: say it our way
            raise ValueError(
                "not a valid PostgreSQL URL: expected postgresql://user@host:port/dbname"
            ) from None
        return v

    @field_validator("mqtt_url")
    @classmethod
    def _url(cls, v: str) -> str:
        if not _MQTT_URL.match(v):
            raise ValueError(f"{v!r} is not a broker URL like mqtt://host:1883 or mqtts://host")
        return v

    @field_validator("topic_prefix")
    @classmethod
    def _prefix(cls, v: str) -> str:
        try:
            return check_segment(v, what="topic_prefix")
        except ContractError as err:
            raise ValueError(str(err)) from None

    @field_validator("shared_group")
    @classmethod
    def _group(cls, v: str) -> str:
        if v and not _GROUP.match(v):
            raise ValueError(
                f"{v!r} is not a shared subscription group: 1-64 characters without '/', '+',"
                " '#' or spaces (or empty for no shared subscription)"
            )
        return v

    @field_validator("mqtt_ca_file", "mqtt_cert_file", "mqtt_key_file")
    @classmethod
    def _readable(cls, v: Path | None) -> Path | None:
        if v is not None and not v.is_file():
            raise ValueError(f"{str(v)!r} is not a readable file")
        return v

    @model_validator(mode="after")
    def _consistent(self) -> IngestSettings:
        if self.batch_max_messages > self.receive_maximum:
            raise ValueError(
                f"batch_max_messages ({self.batch_max_messages}) is above receive_maximum"
                f" ({self.receive_maximum}): the broker would never send a full batch; raise"
                " receive_maximum (twice the batch keeps the writer busy) or lower the batch"
            )
        if self.max_held_messages < self.receive_maximum:
            raise ValueError(
                f"max_held_messages ({self.max_held_messages}) is below receive_maximum"
                f" ({self.receive_maximum}): the broker may send receive_maximum messages"
                " before any ack; raise max_held_messages or lower receive_maximum"
            )
        if self.mqtt_key_file is not None and self.mqtt_cert_file is None:
            raise ValueError("mqtt_key_file is set without mqtt_cert_file")
        if self.workers > 1 and not self.shared_group:
            raise ValueError(
                "workers > 1 needs a shared_group: without a shared subscription every worker"
                " would receive every message"
            )
        return self

    # ---------------------------------------------------------------- derived values

    @property
    def mqtt_tls(self) -> bool:
        """TLS to the broker: an mqtts:// (ssl://) URL or any TLS file given."""
        files = (self.mqtt_ca_file, self.mqtt_cert_file, self.mqtt_key_file)
        return self.mqtt_url.startswith(("mqtts://", "ssl://")) or any(files)

    @property
    def mqtt_host(self) -> str:
        m = _MQTT_URL.match(self.mqtt_url)
        assert m is not None  # checked by the validator
        return m.group(2)

    @property
    def mqtt_port(self) -> int:
        m = _MQTT_URL.match(self.mqtt_url)
        assert m is not None
        return int(m.group(3)) if m.group(3) else (8883 if self.mqtt_tls else 1883)

    @property
    def topic_filter(self) -> str:
        """The plain filter of the whole v1 namespace (what message callbacks match)."""
        return f"{self.topic_prefix}/v1/#"

    @property
    def subscription(self) -> str:
        """What to subscribe: the shared form of ``topic_filter`` unless no group is set."""
        if self.shared_group:
            return f"$share/{self.shared_group}/{self.topic_filter}"
        return self.topic_filter

    @classmethod
    def load(cls, config_file: str | Path | None = None, **overrides: Any) -> IngestSettings:
        """Read the environment and the optional YAML file; raise ConfigError saying what to fix."""
        path = Path(config_file) if config_file is not None else None
        if path is not None:
            _check_yaml(path)
        token = _yaml_file.set(path)
        try:
            return cls(**overrides)
        except ValidationError as err:
            raise ConfigError(describe(err, path)) from None
        finally:
            _yaml_file.reset(token)


def _check_yaml(path: Path) -> None:
    """Fail early, with the file named, on an unreadable file or one that is not a mapping."""
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as err:
        raise ConfigError(f"{path}: cannot read the config file: {err.strerror}") from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        raise ConfigError(f"{where}: not valid YAML: {getattr(err, 'problem', err)}") from None
    if data is not None and not isinstance(data, dict):
        raise ConfigError(f"{path}: the config must be a mapping of setting: value")


def describe(err: ValidationError, path: Path | None = None) -> str:
    """One line per problem: the setting (and its environment variable) and what is wrong."""
    lines = []
    source = f" (in {path} or the environment)" if path else ""
    for e in err.errors():
        name = ".".join(str(p) for p in e["loc"]) or "(settings)"
        msg = e["msg"].removeprefix("Value error, ")
        if e["type"] == "missing" and name == "database_url":
            msg = "required: set LINEPULSE_DATABASE_URL (postgresql://user@host:port/db)"
        elif e["type"] == "extra_forbidden":
            msg = "unknown setting (check the spelling)"
        env = f" [{ENV_PREFIX}{name.upper()}]" if e["loc"] else ""
        lines.append(f"{name}{env}{source}: {msg}")
    return "\n".join(lines)
