"""/api/v1/live: every machine's state and product now, and the gateways."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query

from api.auth.deps import ViewerDep
from api.db import INT4_MAX, SessionDep
from api.errors import ERRORS, ErrorResponse
from api.live import service
from api.live.schemas import LivePublic

router = APIRouter(prefix="/live", tags=["live"], responses=ERRORS)

_NOT_FOUND: dict[int | str, dict[str, Any]] = {
    404: {"model": ErrorResponse, "description": "No such site"}
}


@router.get("", response_model=LivePublic, responses=_NOT_FOUND)
def live(
    session: SessionDep,
    _key: ViewerDep,
    site_id: Annotated[
        int | None, Query(ge=1, le=INT4_MAX, description="Only this site's machines and gateways")
    ] = None,
) -> LivePublic:
    """Every machine's current state (since when), current product, and gateways online/offline."""
    return service.live(session, site_id=site_id)
