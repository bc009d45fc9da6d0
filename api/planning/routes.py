"""OEE configuration under /api/v1: products and cycle times, downtime reasons, state loss
classes, machine settings, and (calendar_routes.py) shift calendars and planned downtime.

Viewers and up read; only admins write, and every write is audited.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Response, status

from api.auth.deps import AdminDep, ViewerDep
from api.db import INT4_MAX, SessionDep
from api.errors import ERRORS, ErrorResponse
from api.planning import machine_service, service
from api.planning.calendar_routes import router as calendar_router
from api.planning.schemas import (
    CycleTimePublic,
    CycleTimeSet,
    MachineSettingsChanged,
    MachineSettingsPublic,
    MachineSettingsSet,
    ProductCreate,
    ProductDetail,
    ProductPublic,
    ProductUpdate,
    ReasonCategory,
    ReasonCreate,
    ReasonPublic,
    ReasonUpdate,
    StateClassesPublic,
    StateClassPublic,
    StateClassSet,
)
from api.planning.types import PRINTABLE

Doc = dict[int | str, dict[str, Any]]
NOT_FOUND: Doc = {404: {"model": ErrorResponse, "description": "No such thing (see field)"}}
CONFLICT: Doc = {409: {"model": ErrorResponse, "description": "It clashes with what is stored"}}
NO_CONTENT: dict[str, Any] = {
    "status_code": status.HTTP_204_NO_CONTENT,
    "response_class": Response,
}


def _id(what: str) -> Any:
    return Path(ge=1, le=INT4_MAX, description=f"The {what}'s id", examples=[1])


ProductId = Annotated[int, _id("product")]
AssetId = Annotated[int, Path(ge=1, le=INT4_MAX, description="A machine's asset id", examples=[7])]
ClassId = Annotated[int, _id("mapping row")]
CodePath = Annotated[
    str,
    Path(
        min_length=1, max_length=128, pattern=r"^[^\x00-\x1f\x7f/]+$",
        description="The reason's code", examples=["E31"],
    ),
]  # fmt: skip

products = APIRouter(prefix="/products", tags=["products"])
reasons = APIRouter(prefix="/downtime-reasons", tags=["downtime reasons"])
classes = APIRouter(prefix="/state-classes", tags=["state loss classes"])
machines = APIRouter(prefix="/machines", tags=["machine settings"])


def _gone() -> Response:
    return Response(status_code=status.HTTP_204_NO_CONTENT)


# --- products --------------------------------------------------------------------------


@products.get("", response_model=list[ProductPublic])
def list_products(session: SessionDep, _key: ViewerDep) -> list[ProductPublic]:
    """List products by code, each with its line default ideal cycle time."""
    return service.list_products(session)


@products.post("", response_model=ProductPublic, status_code=201, responses=CONFLICT)
def create_product(data: ProductCreate, session: SessionDep, key: AdminDep) -> ProductPublic:
    """Create a product (admin); its code is what gateways report with counts."""
    return service.create_product(session, data, actor=key)


@products.get("/{product_id}", response_model=ProductDetail, responses=NOT_FOUND)
def get_product(product_id: ProductId, session: SessionDep, _key: ViewerDep) -> ProductDetail:
    """One product with its per-machine ideal cycle times."""
    return service.get_product(session, product_id)


@products.patch("/{product_id}", response_model=ProductPublic, responses={**NOT_FOUND, **CONFLICT})
def update_product(
    product_id: ProductId, data: ProductUpdate, session: SessionDep, key: AdminDep
) -> ProductPublic:
    """Change a product's code, name or line default ideal cycle time (admin)."""
    return service.update_product(session, product_id, data, actor=key)


@products.delete("/{product_id}", **NO_CONTENT, responses=NOT_FOUND)
def delete_product(product_id: ProductId, session: SessionDep, key: AdminDep) -> Response:
    """Delete a product and its per-machine cycle times (admin)."""
    service.delete_product(session, product_id, actor=key)
    return _gone()


@products.get(
    "/{product_id}/cycle-times", response_model=list[CycleTimePublic], responses=NOT_FOUND
)
def list_cycle_times(
    product_id: ProductId, session: SessionDep, _key: ViewerDep
) -> list[CycleTimePublic]:
    """A product's ideal cycle times on machines that have their own."""
    return service.cycle_times(session, product_id)


@products.put(
    "/{product_id}/cycle-times/{asset_id}", response_model=CycleTimePublic, responses=NOT_FOUND
)
def put_cycle_time(
    product_id: ProductId, asset_id: AssetId, data: CycleTimeSet, session: SessionDep, key: AdminDep
) -> CycleTimePublic:
    """Set a product's ideal cycle time on one machine, overriding its default (admin)."""
    return service.put_cycle_time(
        session, product_id=product_id, asset_id=asset_id, seconds=data.ideal_cycle_s, actor=key
    )


@products.delete("/{product_id}/cycle-times/{asset_id}", **NO_CONTENT, responses=NOT_FOUND)
def delete_cycle_time(
    product_id: ProductId, asset_id: AssetId, session: SessionDep, key: AdminDep
) -> Response:
    """Remove a machine's own cycle time for a product: its default applies again (admin)."""
    service.delete_cycle_time(session, product_id=product_id, asset_id=asset_id, actor=key)
    return _gone()


# --- downtime reasons ------------------------------------------------------------------


@reasons.get("", response_model=list[ReasonPublic])
def list_reasons(
    session: SessionDep,
    _key: ViewerDep,
    category: Annotated[
        str | None,
        Query(
            min_length=1,
            max_length=64,
            pattern=PRINTABLE,
            description="Only this category",
            examples=["mechanical"],
        ),
    ] = None,
    planned: Annotated[
        bool | None, Query(description="Only planned (true) or unplanned (false) reasons")
    ] = None,
) -> list[ReasonPublic]:
    """List downtime reasons (code → reason → category, planned or not)."""
    return service.list_reasons(session, category=category, planned=planned)


@reasons.get("/tree", response_model=list[ReasonCategory])
def reason_tree(session: SessionDep, _key: ViewerDep) -> list[ReasonCategory]:
    """Downtime reasons nested by category, as an operator picks them."""
    return service.reason_tree(session)


@reasons.post("", response_model=ReasonPublic, status_code=201, responses=CONFLICT)
def create_reason(data: ReasonCreate, session: SessionDep, key: AdminDep) -> ReasonPublic:
    """Create a downtime reason for a machine stop code (admin)."""
    return service.create_reason(session, data, actor=key)


@reasons.get("/{code}", response_model=ReasonPublic, responses=NOT_FOUND)
def get_reason(code: CodePath, session: SessionDep, _key: ViewerDep) -> ReasonPublic:
    """One downtime reason."""
    return service.get_reason(session, code)


@reasons.patch("/{code}", response_model=ReasonPublic, responses={**NOT_FOUND, **CONFLICT})
def update_reason(
    code: CodePath, data: ReasonUpdate, session: SessionDep, key: AdminDep
) -> ReasonPublic:
    """Change a reason's text, category, planned flag or code (admin)."""
    return service.update_reason(session, code, data, actor=key)


@reasons.delete("/{code}", **NO_CONTENT, responses={**NOT_FOUND, **CONFLICT})
def delete_reason(code: CodePath, session: SessionDep, key: AdminDep) -> Response:
    """Delete a downtime reason no operator has assigned to a stop (admin)."""
    service.delete_reason(session, code, actor=key)
    return _gone()


# --- state loss classes ----------------------------------------------------------------


@classes.get("", response_model=StateClassesPublic, responses=NOT_FOUND)
def state_classes(
    session: SessionDep,
    _key: ViewerDep,
    asset_id: Annotated[
        int | None,
        Query(ge=1, le=INT4_MAX, description="A machine; omitted: every machine", examples=[7]),
    ] = None,
) -> StateClassesPublic:
    """The effective state → loss class mapping, each entry saying which layer it is from."""
    return machine_service.state_classes(session, asset_id)


@classes.put("", response_model=StateClassPublic, responses=NOT_FOUND)
def put_state_class(data: StateClassSet, session: SessionDep, key: AdminDep) -> StateClassPublic:
    """Set what a state means for OEE, for every machine or for one (admin)."""
    return machine_service.put_state_class(session, data, actor=key)


@classes.delete("/{class_id}", **NO_CONTENT, responses=NOT_FOUND)
def delete_state_class(class_id: ClassId, session: SessionDep, key: AdminDep) -> Response:
    """Remove a mapping row; the global row or the built-in default applies again (admin)."""
    machine_service.delete_state_class(session, class_id, actor=key)
    return _gone()


# --- machine settings ------------------------------------------------------------------


@machines.get("/{asset_id}/settings", response_model=MachineSettingsPublic, responses=NOT_FOUND)
def machine_settings(
    asset_id: AssetId, session: SessionDep, _key: ViewerDep
) -> MachineSettingsPublic:
    """A machine's micro-stop threshold and whether its output is its line's."""
    return machine_service.machine_settings(session, asset_id)


@machines.put("/{asset_id}/settings", response_model=MachineSettingsChanged, responses=NOT_FOUND)
def put_machine_settings(
    asset_id: AssetId, data: MachineSettingsSet, session: SessionDep, key: AdminDep
) -> MachineSettingsChanged:
    """Replace a machine's settings; is_line_output clears it on the line's others (admin)."""
    return machine_service.put_machine_settings(session, asset_id, data, actor=key)


# Every planning route, mounted under /api/v1 by api/app.py.
router = APIRouter(responses=ERRORS)
for _sub in (products, calendar_router, reasons, classes, machines):
    router.include_router(_sub)
