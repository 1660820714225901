"""Messages and progress bars of the library, routed the way the ecosystem does it.

Every module logs to its own ``logging`` logger under ``timm_introspect`` (``logging.getLogger(__name__)``):
a library user silences or routes them with the standard ``logging`` configuration, e.g.
``logging.getLogger("timm_introspect").setLevel(logging.WARNING)``. The CLI shows INFO messages on stderr.

Progress bars are ``tqdm``'s; like ``huggingface_hub``, they can be turned off for the whole library with
:func:`disable_progress_bars` (or the environment variable ``TIMM_INTROSPECT_DISABLE_PROGRESS_BARS=1``).
"""

from __future__ import annotations

import os
from typing import Any

from tqdm.auto import tqdm as _tqdm

__all__ = ["are_progress_bars_disabled", "disable_progress_bars", "enable_progress_bars", "tqdm"]

_disabled = os.environ.get("TIMM_INTROSPECT_DISABLE_PROGRESS_BARS", "").lower() in ("1", "true", "yes")


def disable_progress_bars() -> None:
    """Turn off every progress bar of timm-introspect."""
    global _disabled
    _disabled = True


def enable_progress_bars() -> None:
    """Turn progress bars back on (each call's own ``disable=`` still applies)."""
    global _disabled
    _disabled = False


def are_progress_bars_disabled() -> bool:
    """Whether :func:`disable_progress_bars` (or the environment variable) turned them off."""
    return _disabled


def tqdm(*args: Any, **kwargs: Any) -> _tqdm:
    """``tqdm.auto.tqdm``, off when progress bars are disabled library-wide."""
    kwargs["disable"] = bool(kwargs.get("disable", False)) or _disabled
    return _tqdm(*args, **kwargs)
