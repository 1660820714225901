"""What a prediction needs from the model's own held-out images: f's temperature T and an OOD threshold.

>>> cal = fit_calibration(f_logits, labels, h_logits)      # held-out images neither f nor H saw  # doctest: +SKIP
>>> cal.temperature, cal.ood_threshold                                                          # doctest: +SKIP

The OOD score is the energy of H, ``-logsumexp(H(x))`` (Liu et al. 2020; pytorch-ood's ``EnergyBased`` with
T = 1, registered as ``energy_h``; larger = more out of distribution). Of the scores the README's OOD table
reports on H, ODIN is the best (83.9 mean AUROC) but needs a gradient through f, r_x and H and a second pass on
the perturbed image; Energy on H is the best single-pass one (82.7, above MSP's 79.7), reads H's logits from the
same introspective pass as the prediction, and needs no fitting: only its threshold comes from held-out images.
The threshold keeps ``keep`` (95 %) of the model's own held-out in-distribution images: an image scoring above
it is flagged as out of distribution.

:func:`~timm_introspect.training.evaluate.evaluate_head` fits this when given held-out images and records it in
the head (``head.fitted_calibration``, saved in ``introspection_config.json``), so predictions work offline.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import torch

from ..core.metrics import fit_temperature
from ..errors import CheckpointError, InvalidArgumentError

__all__ = ["OOD_DETECTOR", "OOD_KEEP", "Calibration", "energy_score", "fit_calibration", "keep_threshold"]

#: the OOD detector predictions report (its name in :func:`timm_introspect.apps.ood.list_detectors`)
OOD_DETECTOR = "energy_h"
#: the fraction of held-out in-distribution images the OOD threshold keeps
OOD_KEEP = 0.95


@dataclass(frozen=True)
class Calibration:
    """f's temperature and the OOD threshold, fitted on held-out images (``None`` where nothing was fitted).

    Attributes:
        temperature: f's temperature T (f+TS is ``softmax(f(x) / T)``), or ``None``.
        ood_detector: the OOD score's detector (:data:`OOD_DETECTOR`: the energy of H).
        ood_threshold: the score at which ``keep`` of the held-out images are kept (score <= threshold), or
            ``None``.
        keep: that fraction (0.95).
        images: how many held-out images they were fitted on.
    """

    temperature: float | None = None
    ood_detector: str = OOD_DETECTOR
    ood_threshold: float | None = None
    keep: float = OOD_KEEP
    images: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Calibration:
        """From :meth:`to_dict`'s form (as ``introspection_config.json`` stores it); anything else raises
        :class:`CheckpointError`."""
        if not isinstance(data, dict):
            raise CheckpointError(f"the fitted calibration is {type(data).__name__}, not an object; save the model "
                                  "again")
        known = {k: data[k] for k in cls.__dataclass_fields__ if k in data}
        t, thr, keep = known.get("temperature"), known.get("ood_threshold"), known.get("keep", OOD_KEEP)

        def number(v: Any) -> bool:
            return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)

        if (t is not None and not (number(t) and t > 0)) or (thr is not None and not number(thr)) or not (
                number(keep) and 0 < keep <= 1) or not isinstance(known.get("ood_detector", OOD_DETECTOR), str) or (
                type(known.get("images", 0)) is not int):
            raise CheckpointError(f"the fitted calibration {data!r} is damaged (T must be a positive number, the "
                                  "threshold a number); save the model again")
        return cls(**known)


def energy_score(h_logits: torch.Tensor) -> torch.Tensor:
    """The OOD score of each image, ``-logsumexp(H logits)`` (``(B,)``, float64; larger = more OOD)."""
    return -torch.logsumexp(h_logits.double(), dim=-1)


def keep_threshold(scores: torch.Tensor, keep: float = OOD_KEEP) -> float:
    """The smallest held-out score ``s`` with at least ``keep`` of ``scores`` at or below it."""
    if not 0 < keep <= 1:
        raise InvalidArgumentError(f"keep must be in (0, 1], got {keep}")
    scores = torch.as_tensor(scores).detach().double().flatten().cpu()
    if scores.numel() == 0 or not bool(torch.isfinite(scores).all()):
        raise InvalidArgumentError("the OOD threshold needs finite scores of at least one held-out image")
    ordered = scores.sort().values
    return float(ordered[max(math.ceil(keep * len(ordered)), 1) - 1])


def fit_calibration(f_logits: torch.Tensor, labels: torch.Tensor, h_logits: torch.Tensor | None,
                    keep: float = OOD_KEEP) -> Calibration:
    """T from f's logits on held-out images (NLL, :func:`~timm_introspect.core.metrics.fit_temperature`) and the
    OOD threshold from H's (``None`` without H)."""
    temperature = fit_temperature(f_logits, labels)
    threshold = None if h_logits is None else keep_threshold(energy_score(h_logits), keep)
    return Calibration(temperature=temperature, ood_threshold=threshold, keep=keep, images=int(len(labels)))
