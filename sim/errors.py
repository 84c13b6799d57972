"""Errors that Cohort reports to the user as one line, with a non-zero exit, no traceback."""


class CohortError(Exception):
    """A user-facing error: bad config, missing data, unreachable cluster, missing checkpoint."""


class ConfigError(CohortError, ValueError):
    """A config value is unknown, ill-typed or impossible; the message names the field."""
