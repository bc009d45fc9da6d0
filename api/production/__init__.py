"""Production: counts and yield (first-pass yield, scrap rate) of an asset over a range."""
