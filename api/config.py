"""Settings of ``linepulse api run``, from ``LINEPULSE_*`` environment variables.

``LINEPULSE_DATABASE_URL``, ``LINEPULSE_API_HOST``, ``LINEPULSE_API_PORT``,
``LINEPULSE_CORS_ORIGINS`` (a JSON list or comma-separated origins; none by default, so
browsers on other origins are refused), ``LINEPULSE_ENVIRONMENT`` (development or
production: the default database credentials are refused in production),
``LINEPULSE_MAX_RANGE_DAYS`` (the longest time range a query may ask for), pool sizes.
The database URL never appears in ``repr`` or in logs.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BeforeValidator, Field, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

ENV_PREFIX = "LINEPULSE_"
# The development default: refused when environment is production.
DEFAULT_DATABASE_URL = "postgresql://linepulse:linepulse@127.0.0.1:5432/linepulse"


def _origins(value: object) -> object:
    """Comma-separated origins, or a JSON list, or a list."""
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            import json

            return json.loads(text)
        return [part.strip() for part in text.split(",") if part.strip()]
    return value


class ApiSettings(BaseSettings):
    """Everything the API server needs; see the module docstring for the variables."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore", frozen=True)

    database_url: str = Field(default=DEFAULT_DATABASE_URL, repr=False, min_length=1)
    api_host: str = "127.0.0.1"
    api_port: int = Field(default=8000, ge=1, le=65535)
    cors_origins: Annotated[list[str], NoDecode, BeforeValidator(_origins)] = Field(
        default_factory=list
    )
    environment: Literal["development", "production"] = "development"
    max_range_days: int = Field(default=366, ge=1, le=3660)
    pool_size: int = Field(default=5, ge=1, le=100)
    max_overflow: int = Field(default=10, ge=0, le=100)
    pool_timeout_s: float = Field(default=10.0, gt=0)
    statement_timeout_s: float = Field(default=30.0, gt=0)
    # Helper connections that compute a site's lines side by side (0: one after another).
    oee_workers: int = Field(default=2, ge=0, le=16)

    @model_validator(mode="after")
    def _no_default_secrets(self) -> ApiSettings:
        if self.environment != "development" and self.database_url == DEFAULT_DATABASE_URL:
            raise ValueError(
                "LINEPULSE_DATABASE_URL is the development default (password 'linepulse');"
                " set a real one in production"
            )
        if "*" in self.cors_origins and self.environment != "development":
            raise ValueError("LINEPULSE_CORS_ORIGINS='*' is only allowed in development")
        return self
