"""The edge agent's exceptions: one base, translated from third-party errors at the edge."""


class EdgeError(Exception):
    """Base of every error the edge agent raises on purpose."""


class ConfigError(EdgeError):
    """The gateway config is wrong; the message names the file, line and field."""


class DecodeError(EdgeError):
    """Registers or bytes from a device do not decode to the declared datatype."""


class OutboxError(EdgeError):
    """The disk queue cannot be opened or written."""
