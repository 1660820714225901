"""The registry of OOD detectors, in the style of :func:`~timm_introspect.nets.registry.register_net`.

Every detector the package exports is registered under a name ``<method>_<f | h>``: ``msp_f`` is the maximum
softmax probability of f, ``msp_h`` the same on H, ``knn_rx`` KNN on r_x (:func:`list_detectors` names them all).
:func:`create_detector` builds one for an introspective model, and the OOD benchmark
(:func:`~timm_introspect.apps.ood.benchmark.ood_benchmark`) runs the registered detectors by name.

A registered detector is a pytorch-ood detector (``fit(loader)``, ``predict(x)``; larger = more OOD) built as
``cls(head, **kwargs)`` from an :class:`~timm_introspect.IntrospectiveHead`, that also subclasses
:class:`PassDetector`: it can be fitted on and score from an introspective pass already computed (what the
benchmark does, one pass per batch for every detector)::

    @register_detector("margin_h")
    class IntrospectiveMargin(pytorch_ood.detector.MaxLogit, PassDetector):
        name, on, family = "Margin", "H", "introspective"

        def __init__(self, head):
            super().__init__(IntrospectiveLogits(head))

        def predict_pass(self, p, x):
            top2 = p.logits.topk(2, dim=1).values
            return top2[:, 1] - top2[:, 0]
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar, TypeVar

import torch

from ...errors import InvalidArgumentError
from ...model.head import IntrospectiveHead

__all__ = ["PassDetector", "create_detector", "get_detector_class", "list_detectors", "register_detector"]


class PassDetector:
    """Mixin of the registered detectors: fit on and score from the introspective pass.

    ``p`` is an :class:`~timm_introspect.apps.ood.path.IntrospectivePass` of one batch or the concatenated passes
    of a training set (:func:`~timm_introspect.apps.ood.benchmark.represent`); they share the fields
    ``base_logits`` (f's logits), ``logits`` (H's), ``penultimate``, ``hidden`` and ``factors``.

    Attributes:
        name: the method, as the benchmark's tables show it (``"MSP"``).
        on: the network it reads, ``"f"`` or ``"H"``.
        family: ``"classic"`` (a post-hoc detector on f) or ``"introspective"`` (on H or r_x).
    """

    name: ClassVar[str] = ""
    on: ClassVar[str] = ""
    family: ClassVar[str] = ""

    @property
    def label(self) -> str:
        """``"name (on)"``, the detector's row in the benchmark's tables."""
        return f"{self.name} ({self.on})"

    def fit_pass(self, train: Any, labels: torch.Tensor) -> PassDetector:
        """Fit on the concatenated pass over the training images and their labels (labels below 0 are OOD).

        Detectors that need no fitting only check that the pass has what they read, and raise
        :class:`~timm_introspect.UnsupportedClassifierError` otherwise.
        """
        return self

    def predict_pass(self, p: Any, x: torch.Tensor) -> torch.Tensor:
        """Scores ``(B,)`` of the batch ``x`` (normalized images) from its pass ``p`` (larger = more OOD)."""
        raise NotImplementedError


_DETECTORS: dict[str, tuple[type[PassDetector], dict[str, Any]]] = {}
D = TypeVar("D", bound=type[PassDetector])


def _key(name: str) -> str:
    return name.strip().lower().replace("-", "_") if isinstance(name, str) else ""


def register_detector(name: str, **defaults: Any) -> Callable[[D], D]:
    """Class decorator: register a detector under ``name`` (lower case, ``_`` between words; ``-`` is read as
    ``_``), optionally with default constructor arguments, so one class can be registered twice (e.g.
    :class:`~timm_introspect.apps.ood.IntrospectiveMahalanobis` as ``mahalanobis_h`` and, with ``layer=0``, as
    ``mahalanobis_1st_h``). The class subclasses :class:`PassDetector` and is built as ``cls(head, **kwargs)``."""
    key = _key(name)
    if not key.replace("_", "").isalnum():
        raise InvalidArgumentError(f"a detector name must be letters, digits and '_'; got {name!r}")

    def wrap(cls: D) -> D:
        if not (isinstance(cls, type) and issubclass(cls, PassDetector)):
            raise InvalidArgumentError(f"register_detector({name!r}) takes a subclass of PassDetector, got {cls!r}")
        if key in _DETECTORS and _DETECTORS[key] != (cls, defaults):
            raise InvalidArgumentError(f"a detector named {key!r} is already registered "
                                       f"({_DETECTORS[key][0].__name__})")
        _DETECTORS[key] = (cls, dict(defaults))
        return cls

    return wrap


def list_detectors(on: str | None = None) -> list[str]:
    """Names of the registered detectors, in the order registered; ``on="f"`` or ``"H"``: those reading it."""
    if on not in (None, "f", "H"):
        raise InvalidArgumentError(f"on must be None, 'f' or 'H'; got {on!r}")
    return [k for k, (cls, _) in _DETECTORS.items() if on is None or cls.on == on]


def _lookup(name: str) -> tuple[type[PassDetector], dict[str, Any]]:
    key = _key(name)
    if key not in _DETECTORS:
        raise InvalidArgumentError(f"unknown OOD detector {name!r}: use one of {', '.join(_DETECTORS)}. "
                                   "Register one with @register_detector(name)")
    return _DETECTORS[key]


def get_detector_class(name: str) -> type[PassDetector]:
    """The class registered as ``name``."""
    return _lookup(name)[0]


def create_detector(name: str, head: IntrospectiveHead, **kwargs: Any) -> PassDetector:
    """Build a registered detector for the introspective model ``head``.

    Args:
        name: a name from :func:`list_detectors` (``-`` is read as ``_``, case is ignored).
        head: a fitted introspective model (f and H).
        kwargs: constructor arguments of the detector (``k=50`` of the KNNs, ``eps`` and ``temperature`` of
            ODIN, ...), over those it was registered with.

    Raises:
        InvalidArgumentError: no detector is registered as ``name``.
        UnsupportedClassifierError: the detector cannot read this model (e.g. ViM on f without a linear classifier).
    """
    cls, defaults = _lookup(name)
    return cls(head, **{**defaults, **kwargs})
