"""OEE: the pure core (calc, result, segments, counts) and its routes, service and repository."""

from api.oee.calc import (
    DEFAULT_STATE_CLASSES,
    LossClass,
    OeeInput,
    OeeInputError,
    PlannedDowntime,
    ProductionCount,
    StateInterval,
    TimeRange,
    compute_buckets,
    compute_oee,
)
from api.oee.result import BucketResult, CycleCount, OeeResult, SiteOee, combine_site, rollup

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
