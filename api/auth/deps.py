"""Authentication and roles as FastAPI dependencies.

A key comes in ``Authorization: Bearer <key>`` or ``X-API-Key: <key>``. Missing, malformed,
unknown, wrong or revoked keys are a 401; a key whose role is below the one an endpoint
needs is a 403. Roles are ordered viewer < operator < admin.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer

from api.auth.keys import RANK, ApiKey, Role, authenticate
from api.db import SessionDep
from api.errors import ApiError

# auto_error=False: our own 401 (JSON, naming what is wrong) instead of FastAPI's.
_bearer = HTTPBearer(auto_error=False, description="`Authorization: Bearer lp_..._...`")
_header = APIKeyHeader(name="X-API-Key", auto_error=False, description="`X-API-Key: lp_..._...`")
_CHALLENGE = {"WWW-Authenticate": "Bearer"}


def _unauthorized(message: str) -> ApiError:
    return ApiError(401, "unauthorized", message, headers=_CHALLENGE)


def current_key(
    request: Request,
    session: SessionDep,
    bearer: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    header: Annotated[str | None, Depends(_header)],
) -> ApiKey:
    """The key of this request (401 when there is none or it is not valid)."""
    presented = bearer.credentials if bearer is not None else header
    if not presented:
        raise _unauthorized(
            "an API key is required: send 'Authorization: Bearer <key>' or 'X-API-Key: <key>'"
        )
    key = authenticate(session, presented.strip())
    if key is None:
        raise _unauthorized("the API key is invalid or has been revoked")
    request.state.api_key = key
    return key


def require_role(role: Role) -> Callable[[ApiKey], ApiKey]:
    """A dependency that lets keys of ``role`` or higher through (403 otherwise)."""
    needed = RANK[role]

    def check(key: Annotated[ApiKey, Depends(current_key)]) -> ApiKey:
        if RANK[key.role] < needed:
            raise ApiError(
                403, "forbidden", f"this needs the {role} role; the key '{key.name}' is {key.role}"
            )
        return key

    check.__name__ = f"require_{role}"
    return check


ViewerDep = Annotated[ApiKey, Depends(require_role("viewer"))]
OperatorDep = Annotated[ApiKey, Depends(require_role("operator"))]
AdminDep = Annotated[ApiKey, Depends(require_role("admin"))]
