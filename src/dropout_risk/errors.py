"""Errors a user fixes by changing the command line, the config or the environment. Each
message is one line: what is wrong and how to fix it. (Kept free of heavy imports, so that the
entry points can report them before torch, Lightning and MLflow load.)"""


class ConfigError(ValueError):
    """A config value that is well-typed but unusable."""


class SweepError(ConfigError):
    """A sweep that cannot start (range, storage, study)."""


class TrackingError(ConfigError):
    """The tracking store cannot be used (unreachable server, credentials in a URL)."""


class ReproduceError(ConfigError):
    """Nothing can be (or may be) re-run. One line: what is wrong and how to fix it."""


class CompareError(ConfigError):
    """Nothing (or not what was asked) can be compared. One line: what is wrong and how to fix it."""
