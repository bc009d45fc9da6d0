"""/api/v1/tags/{tag_id}/samples: a tag's samples over a range, downsampled on the server."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Query

from api.auth.deps import ViewerDep
from api.db import INT4_MAX, Instant, SessionDep
from api.errors import ERRORS, ErrorResponse
from api.timeseries import service
from api.timeseries.schemas import Downsample, SeriesPublic

router = APIRouter(prefix="/tags", tags=["time series"], responses=ERRORS)

_NOT_FOUND: dict[int | str, dict[str, Any]] = {
    404: {"model": ErrorResponse, "description": "No such tag"}
}


@router.get("/{tag_id}/samples", response_model=SeriesPublic, responses=_NOT_FOUND)
def tag_samples(
    tag_id: Annotated[int, Path(ge=1, le=INT4_MAX, description="The tag's id", examples=[7])],
    start: Annotated[
        Instant,
        Query(description="Range start (inclusive)", examples=["2026-01-05T06:00:00+01:00"]),
    ],
    end: Annotated[
        Instant,
        Query(description="Range end (exclusive)", examples=["2026-01-05T14:00:00+01:00"]),
    ],
    session: SessionDep,
    _key: ViewerDep,
    max_points: Annotated[
        int,
        Query(
            ge=1,
            le=service.MAX_POINTS,
            description="At most this many points or buckets (m4 and lttb: at least 4)",
            examples=[1000],
        ),
    ] = service.DEFAULT_POINTS,
    method: Annotated[
        Downsample,
        Query(
            description="buckets: min/max/avg per bucket; m4: first/last/min/max sample per "
            "column (max_points / 4 columns: exact for a line chart given 4 × its pixel "
            "width); lttb: max_points samples keeping the visual shape. Long ranges come "
            "from the rollups as buckets whatever the method (the response says so)",
            examples=["m4"],
        ),
    ] = "buckets",
) -> SeriesPublic:
    """A tag's samples in [start, end): raw, buckets, or shape-keeping M4 / LTTB samples."""
    return service.series(
        session, tag_id, start=start, end=end, max_points=max_points, method=method
    )
