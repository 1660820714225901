"""Gradio, the demo's optional dependency (``pip install 'timm-introspect[demo]'``), imported only when needed."""

from __future__ import annotations

from types import ModuleType

from ...errors import MissingDependencyError

__all__ = ["require_gradio"]


def require_gradio() -> ModuleType:
    """The ``gradio`` module, or :class:`MissingDependencyError` naming the ``[demo]`` extra."""
    try:
        import gradio
    except ImportError as err:
        raise MissingDependencyError(f"the demo needs Gradio ({err}): pip install 'timm-introspect[demo]'") from err
    return gradio
