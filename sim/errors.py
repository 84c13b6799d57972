"""Errors that Cohort reports to the user as one line, with a non-zero exit, no traceback."""


class CohortError(Exception):
    """A user-facing error: bad config, missing data, unreachable cluster, missing checkpoint."""


class ConfigError(CohortError, ValueError):
    """A config value is unknown, ill-typed or impossible; the message names the field."""


def one_line(error: BaseException) -> str:
    """An error as one line: a Cohort or OmegaConf error's message; Hydra's first line, with its
    cause's (``Could not override 'env.dataset': Key 'dataset' is not in struct``) or the options
    it lists; else the error's type and first line."""
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    lines = str(error).strip().splitlines()
    text = lines[0] if lines else ""
    if isinstance(error, HydraException):
        if error.__cause__ is not None:
            return f"{text.rstrip('.')}: {one_line(error.__cause__)}"
        options = [line.strip() for line in lines if line.startswith("\t")]
        listed = [o for o in options if not o.startswith("provider=")]  # not the search path
        return f"{text} (options: {', '.join(listed)})" if listed else text
    if isinstance(error, CohortError | OmegaConfBaseException):
        return text
    return f"{type(error).__name__}: {text}" if text else type(error).__name__
