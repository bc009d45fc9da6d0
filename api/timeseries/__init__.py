"""Time series of one tag: raw or downsampled samples over a range."""
