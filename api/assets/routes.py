"""/api/v1/assets: the ISA-95 asset tree and the tags on each asset."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Response, status

from api.assets import service
from api.assets.schemas import (
    AssetCreate,
    AssetDetail,
    AssetNode,
    AssetPublic,
    AssetUpdate,
    Level,
    TagPublic,
)
from api.auth.deps import AdminDep, ViewerDep
from api.db import INT4_MAX, SessionDep
from api.errors import ERRORS, ErrorResponse

router = APIRouter(prefix="/assets", tags=["assets"], responses=ERRORS)

AssetIdPath = Annotated[int, Path(ge=1, le=INT4_MAX, description="The asset's id", examples=[3])]
_NOT_FOUND: dict[int | str, dict[str, Any]] = {
    404: {"model": ErrorResponse, "description": "No such asset"}
}
_CONFLICT: dict[int | str, dict[str, Any]] = {
    409: {"model": ErrorResponse, "description": "The path exists, or it has children"}
}


@router.get("", response_model=list[AssetPublic])
def list_assets(
    session: SessionDep,
    _key: ViewerDep,
    level: Annotated[Level | None, Query(description="Only assets of this level")] = None,
    parent: Annotated[
        int | None, Query(ge=1, le=INT4_MAX, description="Only direct children of this asset")
    ] = None,
) -> list[AssetPublic]:
    """List assets (flat, in path order), optionally of one level or under one parent."""
    return service.list_assets(session, level=level, parent_id=parent)


@router.get("/tree", response_model=list[AssetNode])
def asset_tree(session: SessionDep, _key: ViewerDep) -> list[AssetNode]:
    """The whole asset tree, each root with its nested children."""
    return service.tree(session)


@router.get("/{asset_id}", response_model=AssetDetail, responses=_NOT_FOUND)
def get_asset(asset_id: AssetIdPath, session: SessionDep, _key: ViewerDep) -> AssetDetail:
    """One asset with its direct children."""
    return service.get_asset(session, asset_id)


@router.get("/{asset_id}/tags", response_model=list[TagPublic], responses=_NOT_FOUND)
def asset_tags(asset_id: AssetIdPath, session: SessionDep, _key: ViewerDep) -> list[TagPublic]:
    """The tags of an asset with unit, datatype and latest value, time and quality."""
    return service.tags(session, asset_id)


@router.post(
    "", response_model=AssetPublic, status_code=status.HTTP_201_CREATED, responses=_CONFLICT
)
def create_asset(data: AssetCreate, session: SessionDep, key: AdminDep) -> AssetPublic:
    """Create an asset (admin): a site, or an area/line/machine under its parent level."""
    return service.create(session, data, actor=key)


@router.patch("/{asset_id}", response_model=AssetPublic, responses={**_NOT_FOUND, **_CONFLICT})
def update_asset(
    asset_id: AssetIdPath, data: AssetUpdate, session: SessionDep, key: AdminDep
) -> AssetPublic:
    """Change an asset's name, parent, display name or time zone (admin)."""
    return service.update(session, asset_id, data, actor=key)


@router.delete(
    "/{asset_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    responses={**_NOT_FOUND, **_CONFLICT},
)
def delete_asset(
    asset_id: AssetIdPath,
    session: SessionDep,
    key: AdminDep,
    recursive: Annotated[
        bool, Query(description="Also delete its children (and all their data)")
    ] = False,
) -> Response:
    """Delete an asset (admin); one with children only with recursive=true."""
    service.delete(session, asset_id, recursive=recursive, actor=key)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
