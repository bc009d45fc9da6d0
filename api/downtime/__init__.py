"""Downtime: stops with operators' reasons laid over the machines', their classification
(planned, category, micro-stop), Pareto with MTBF and MTTR, and a line's root causes."""
