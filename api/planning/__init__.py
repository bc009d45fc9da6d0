"""OEE configuration: products and ideal cycle times, shift calendars, planned downtime,
the downtime reason tree, state loss classes and machine settings (admins write)."""
