"""Exceptions raised by timm-introspect.

Every error says what went wrong and what to do about it. They subclass the built-in exception a
caller would naturally catch (``ValueError``, ``RuntimeError``), so ``except ValueError`` still works.
"""

from __future__ import annotations

__all__ = [
    "IntrospectionError",
    "NoClassifierError",
    "UnsupportedClassifierError",
    "UnknownLossError",
    "InputShapeError",
    "NotFittedError",
    "CheckpointError",
    "DataError",
    "UnknownNetError",
    "InvalidArgumentError",
    "MissingDependencyError",
    "RunLockedError",
    "DivergedError",
    "NoSpatialMapError",
]


class IntrospectionError(Exception):
    """Base class of every error raised by timm-introspect."""


class NoClassifierError(IntrospectionError, ValueError):
    """The model has no classifier layer to introspect (e.g. built with ``num_classes=0``)."""


class UnsupportedClassifierError(IntrospectionError, ValueError):
    """The classifier exists, but its weight gradient cannot be computed per sample."""


class UnknownLossError(IntrospectionError, ValueError):
    """The loss name is not one of :data:`timm_introspect.LOSSES`."""


class InputShapeError(IntrospectionError, ValueError):
    """The input batch does not have the shape the model expects."""


class NotFittedError(IntrospectionError, RuntimeError):
    """A statistic (target ``M`` or the feature scale) is used before it was fitted."""


class CheckpointError(IntrospectionError, ValueError):
    """A saved model is missing, corrupt, mismatched or from an incompatible version; nothing was loaded."""


class DataError(IntrospectionError, ValueError):
    """A dataset cannot be used as given (no labels, a missing column, an unreadable image, ...)."""


class UnknownNetError(IntrospectionError, ValueError):
    """No introspective network H is registered under the name given (see :func:`timm_introspect.list_nets`)."""


class InvalidArgumentError(IntrospectionError, ValueError):
    """An argument is outside what the function accepts (an unknown corruption, a severity out of range, ...)."""


class MissingDependencyError(IntrospectionError, ImportError):
    """An optional dependency is not installed; the message names the extra that installs it."""


class RunLockedError(IntrospectionError, RuntimeError):
    """Another run is writing to the same output folder."""


class DivergedError(IntrospectionError, RuntimeError):
    """Training produced a non-finite loss; the step that diverged is named and nothing of it was saved."""


class NoSpatialMapError(IntrospectionError, ValueError):
    """A layer gives no spatial map to explain with (pooled features, a 1x1 map, tokens without a patch grid)."""
