"""The project's one failure vocabulary: a small, flat hierarchy."""


class BackfillError(Exception):
    """Base of every error this package raises on purpose."""


class ConfigError(BackfillError):
    """A setting is missing or invalid; the message names the setting."""


class MigrationError(BackfillError):
    """The database schema cannot be brought to the expected version."""


class SchemaMismatch(BackfillError):
    """The database schema does not match what the worker was configured for."""
