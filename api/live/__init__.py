"""Live view: every machine's current state and product, and the gateways."""
