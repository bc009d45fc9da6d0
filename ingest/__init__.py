"""linepulse ingest: MQTT to PostgreSQL/TimescaleDB, exactly once."""
