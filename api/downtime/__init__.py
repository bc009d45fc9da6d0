"""Downtime: stop events of an asset over a range, their Pareto, MTBF and MTTR."""
