"""linepulse API: assets, OEE, downtime and yield."""
