"""f's temperature and the OOD threshold for predictions: stored in the model, or fitted on its held-out images.

A model evaluated with held-out images (``evaluate_head(..., calibration=...)``, ``evaluate``, ``run``) stores
them (``head.fitted_calibration``, in ``introspection_config.json``) and predicts offline. Otherwise they are
fitted here on the held-out images the model records (``head.calibration``, from ``train-backbone --holdout``)
when those can be loaded, and kept on the head for the next call; failing that, f+TS and the threshold are left
out with a logged note.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

import torch

from ...data.images import batch_images, batch_labels, make_loader
from ...errors import IntrospectionError
from ...model.head import IntrospectiveHead
from ...training.calibrate import Calibration, fit_calibration

__all__ = ["Calibration", "calibration_for"]

log = logging.getLogger(__name__)


def calibration_for(model: IntrospectiveHead, fit: bool = True, batch_size: int = 256) -> Calibration:
    """f's temperature T and the OOD threshold of ``model`` (:class:`~timm_introspect.training.calibrate.Calibration`).

    Read from the model when it stores them; else, with ``fit``, fitted on the held-out images it records (the
    result is kept in ``model.fitted_calibration``, so it is saved with the model and not fitted again). A model
    with neither, or whose held-out images cannot be loaded (offline, moved), gets an empty calibration (T and
    the threshold ``None``) and a logged note saying why.
    """
    if not isinstance(model, IntrospectiveHead):
        raise IntrospectionError(f"calibration_for takes an IntrospectiveHead, got {type(model).__name__}")
    if model.fitted_calibration:
        return Calibration.from_dict(model.fitted_calibration)
    if not model.calibration:
        log.info("this model records no held-out images: predictions come without f+TS and without an OOD "
                 "threshold (train f with `train-backbone --holdout 0.1`, or evaluate with held-out images)")
        return Calibration()
    if not fit:
        return Calibration()
    from ...jobs.robustness import calibration_images

    try:
        held_out = calibration_images(model)
        f_logits, h_logits, labels = _logits(model, make_loader(held_out, model.model, False, batch_size))
    except (IntrospectionError, OSError, ValueError) as err:
        log.info("the model's held-out images cannot be loaded (%s: %s): predictions come without f+TS and without "
                 "an OOD threshold", type(err).__name__, " ".join(str(err).split()))
        return Calibration()
    fitted = fit_calibration(f_logits, labels, h_logits)
    model.fitted_calibration = fitted.to_dict()
    log.info("fitted T = %.4f and the OOD threshold on %d held-out images", fitted.temperature, fitted.images)
    return fitted


@torch.no_grad()
def _logits(model: IntrospectiveHead, loader: Iterable) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """f's and H's logits and the labels of the held-out images, on the model's own device."""
    f, h, y = [], [], []
    for batch in loader:
        out = model.eval()(batch_images(batch).to(model.device))
        f.append(out.base_logits.float().cpu())
        h.append(out.logits.float().cpu())
        y.append(batch_labels(batch))
    return torch.cat(f), torch.cat(h), torch.cat(y)
