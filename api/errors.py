"""API errors: one base class and the handlers that make every error the same JSON.

Every error body is ``{"error": {"code": ..., "message": ..., "field": ...}}``; validation
errors add ``details`` (one entry per problem). Unexpected exceptions are logged with their
traceback and answered with a generic 500: no stack trace ever reaches a client.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from sqlalchemy.exc import DBAPIError, OperationalError
from starlette.exceptions import HTTPException as StarletteHTTPException

log = structlog.get_logger("api")

NAIVE_TIMESTAMP = "timestamps need a UTC offset, e.g. 2026-01-01T06:00:00+01:00"
NOT_JSON = "the body is not valid JSON"
# FastAPI's 400 for a body it cannot read at all (not UTF-8, say): for the client the same
# mistake as malformed JSON, so it gets the same 422.
_UNREADABLE_BODY = "There was an error parsing the body"
# Locations FastAPI puts first in an error's loc; the field is what follows.
_SOURCES = {"body", "query", "path", "header", "cookie"}
_HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    406: "not_acceptable",
    409: "conflict",
    413: "too_large",
    415: "unsupported_media_type",
    422: "validation_error",
    429: "too_many_requests",
    503: "unavailable",
}


class ApiError(Exception):
    """An error the client should see: HTTP status, a stable code, a message, maybe a field."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        field: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.field = field
        self.headers = headers


class NotFound(ApiError):
    """404: the thing asked for does not exist."""

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(404, "not_found", message, field)


class Conflict(ApiError):
    """409: the request clashes with what is stored."""

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(409, "conflict", message, field)


class Invalid(ApiError):
    """422: a value the schema accepts but the rules do not."""

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(422, "validation_error", message, field)


class ErrorBody(BaseModel):
    """The inside of an error response."""

    code: str
    message: str
    field: str | None = None


class ErrorResponse(BaseModel):
    """Every error the API returns."""

    error: ErrorBody


# For route declarations: responses={**ERRORS} documents the error shape in OpenAPI.
ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorResponse, "description": "Missing, invalid or revoked API key"},
    403: {"model": ErrorResponse, "description": "The key's role is too low"},
    422: {"model": ErrorResponse, "description": "Invalid input; `field` names it"},
}


def error_json(
    status: int,
    code: str,
    message: str,
    *,
    field: str | None = None,
    details: list[dict[str, Any]] | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    """The JSON response for an error."""
    body: dict[str, Any] = {"code": code, "message": message, "field": field}
    if details:
        body["details"] = details
    return JSONResponse({"error": body}, status_code=status, headers=headers)


def field_name(loc: Sequence[int | str]) -> str | None:
    """``('body', 'parent_id')`` → ``parent_id``; ``('query', 'level')`` → ``level``."""
    parts = list(loc)
    if parts and parts[0] in _SOURCES:
        parts = parts[1:]
    return ".".join(str(p) for p in parts) or None


def _problem(err: dict[str, Any]) -> str:
    kind = err.get("type", "")
    if kind == "timezone_aware":
        return NAIVE_TIMESTAMP
    if kind == "missing":
        return "this field is required"
    if kind == "json_invalid":
        return NOT_JSON
    message = str(err.get("msg", "invalid value"))
    return message.removeprefix("Value error, ")


async def _api_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ApiError)
    return error_json(exc.status, exc.code, exc.message, field=exc.field, headers=exc.headers)


def _field(err: dict[str, Any]) -> str | None:
    # A JSON syntax error's loc holds a character offset, not a field.
    return None if err.get("type") == "json_invalid" else field_name(err.get("loc", ()))


async def _validation(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    problems = [(_field(e), _problem(e)) for e in exc.errors()]
    field, problem = problems[0] if problems else (None, "invalid request")
    details = [{"field": f, "message": m} for f, m in problems]
    message = f"{field}: {problem}" if field else problem
    return error_json(422, "validation_error", message, field=field, details=details)


async def _http(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    if exc.status_code == 400 and exc.detail == _UNREADABLE_BODY:
        return error_json(422, "validation_error", NOT_JSON)
    code = _HTTP_CODES.get(exc.status_code, "error")
    message = exc.detail if isinstance(exc.detail, str) else code.replace("_", " ")
    if exc.status_code == 404 and message == "Not Found":
        message = "no such endpoint"
    headers = dict(exc.headers) if exc.headers else None
    return error_json(exc.status_code, code, message, headers=headers)


async def _database_down(request: Request, exc: Exception) -> JSONResponse:
    log.warning("database unavailable", path=request.url.path, error=str(exc).splitlines()[0])
    return error_json(503, "unavailable", "the database is unavailable; try again shortly")


async def _database_error(request: Request, exc: Exception) -> JSONResponse:
    # A value PostgreSQL refuses that validation let through: the client's input, not a crash;
    # anything else about the database is ours.
    sqlstate = getattr(getattr(exc, "orig", None), "sqlstate", None) or ""
    if sqlstate.startswith("22"):
        log.info("value refused by the database", path=request.url.path, sqlstate=sqlstate)
        return error_json(422, "validation_error", "a value is out of range or malformed")
    if sqlstate == "57014":
        return error_json(503, "unavailable", "the query took too long; ask for less data")
    return await _unexpected(request, exc)


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    log.error(
        "unhandled error",
        method=request.method,
        path=request.url.path,
        exc_info=(type(exc), exc, exc.__traceback__),
    )
    return error_json(500, "internal_error", "internal error; it has been logged")


def install_handlers(app: FastAPI) -> None:
    """Register the handlers on ``app``."""
    app.add_exception_handler(ApiError, _api_error)
    app.add_exception_handler(RequestValidationError, _validation)
    app.add_exception_handler(StarletteHTTPException, _http)
    app.add_exception_handler(OperationalError, _database_down)
    app.add_exception_handler(DBAPIError, _database_error)
    app.add_exception_handler(Exception, _unexpected)
