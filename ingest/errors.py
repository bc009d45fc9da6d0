"""The ingest service's exceptions: one base, third-party errors translated at the boundary."""


class IngestError(Exception):
    """Base of every error the ingest raises on purpose; the message says what to fix."""


class ConfigError(IngestError):
    """A setting (environment, CLI option, config file) has a value the ingest cannot use."""


class DatabaseUnavailable(IngestError):
    """PostgreSQL cannot be reached or refused the connection (host, port, database named)."""


class MigrationError(IngestError):
    """A schema migration failed; it was rolled back as a whole."""
