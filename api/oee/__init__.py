"""OEE: the pure calculation core (calc) and, later, its routes, service and repository."""

from api.oee.calc import (
    DEFAULT_STATE_CLASSES,
    BucketResult,
    CycleCount,
    LossClass,
    OeeInput,
    OeeInputError,
    OeeResult,
    PlannedDowntime,
    ProductionCount,
    SiteOee,
    StateInterval,
    TimeRange,
    combine_site,
    compute_buckets,
    compute_oee,
    rollup,
)

__all__ = [
    "DEFAULT_STATE_CLASSES",
    "BucketResult",
    "CycleCount",
    "LossClass",
    "OeeInput",
    "OeeInputError",
    "OeeResult",
    "PlannedDowntime",
    "ProductionCount",
    "SiteOee",
    "StateInterval",
    "TimeRange",
    "combine_site",
    "compute_buckets",
    "compute_oee",
    "rollup",
]
