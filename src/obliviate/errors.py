"""One error hierarchy. Every user-facing problem is an `ObliviateError`: the CLI prints its message on one
line and exits 2. Messages say what was wrong, what was received, and how to fix it."""

from __future__ import annotations


class ObliviateError(Exception):
    """Base class of every error caused by user input or environment (not a bug)."""


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


class ResourceError(ObliviateError):
    """The run ran out of memory or another resource; the message names the setting to lower."""
