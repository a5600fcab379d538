"""One error hierarchy. Every user-facing problem is an `ObliviateError`: the CLI prints its message on one
line and exits 2. Messages say what was wrong, what was received, and how to fix it."""

from __future__ import annotations


class ObliviateError(Exception):
    """Base class of every error caused by user input or environment (not a bug). `exit_code` is what the CLI
    exits with: 2 for a user error (README, "Errors")."""

    exit_code = 2


class ConfigError(ObliviateError):
    """A configuration value or key is invalid."""


class DataError(ObliviateError):
    """A data file or split is missing, malformed or empty."""


class ModelError(ObliviateError):
    """A model path or id cannot be loaded, or a model lacks something a method needs."""


class RegistryError(ObliviateError):
    """An unknown registry name (scenario, metric, method, attack)."""


class OutputExistsError(ObliviateError):
    """The output directory exists and `overwrite` was not given."""


class OutputError(ObliviateError):
    """The output location cannot be written (read-only, a file in the way, inside an input) or another run holds
    it."""


class NothingToForget(ObliviateError):
    """The run found nothing to forget (e.g. the model revealed nothing about the named targets): no model was
    written. Exit code 3, so scripts can tell it from a user error and from a success."""

    exit_code = 3


class DivergedError(ObliviateError):
    """Training became non-finite (loss or weights); the message names the setting to change."""


class ResourceError(ObliviateError):
    """The run ran out of memory or another resource; the message names the setting to lower."""


class NoFeasibleTrial(ObliviateError):
    """A sweep finished without any trial that meets its constraints (or without any finished trial): there is no
    best config to report. Exit code 4, so scripts can tell it from a user error and from a success; best.json and
    report.html still show the closest trials."""

    exit_code = 4
