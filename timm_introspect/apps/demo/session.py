"""What the demo computes for one image, without any web framework: the model's prediction (exactly
:func:`~timm_introspect.apps.predict.predict_images`'s), and the explain app's maps for every class Q.

>>> session = DemoSession("runs/main/introspective")                         # doctest: +SKIP
>>> result = session.score(Image.open("cat.png"), corruption="fog", severity=3)   # doctest: +SKIP
>>> result.prediction.h, result.prediction.ood_score                         # doctest: +SKIP
"""

from __future__ import annotations

import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ...data.images import make_transform, model_pixels
from ...errors import IntrospectionError, InvalidArgumentError
from ...model.head import IntrospectiveHead
from ..explain import Explainer, Explanation
from ..predict import Calibration, ImagePrediction, calibration_for, predict_images
from .corruption import NONE, corrupt_pixels

__all__ = ["DemoResult", "DemoSession", "load_model"]

log = logging.getLogger(__name__)


def load_model(model: IntrospectiveHead | str | Path) -> IntrospectiveHead:
    """An introspective model: as given, or loaded from a folder or ``hf-hub:<owner>/<name>`` (``owner/name``)."""
    if isinstance(model, IntrospectiveHead):
        return model.eval()
    if not isinstance(model, (str, Path)):
        raise InvalidArgumentError(f"the demo takes an IntrospectiveHead, a folder or a Hub id, got "
                                   f"{type(model).__name__}")
    return IntrospectiveHead.from_pretrained(str(model)).eval()


@dataclass
class DemoResult:
    """The demo's outputs for one image.

    Attributes:
        prediction: f's, f+TS's and H's top classes and the OOD score (what ``predict_images`` returns).
        pixels: the image as f and H see it (after the model's resize and crop, and the corruption), uint8
            ``(H, W, 3)``.
        explanation: Grad-CAM of the prediction P and "why P, rather than Q?" for every class Q.
        corruption: the corruption applied (``None`` for the clean image) and its ``severity``.
    """

    prediction: ImagePrediction
    pixels: np.ndarray
    explanation: Explanation
    corruption: str | None = None
    severity: int | None = None


class DemoSession:
    """An introspective model ready to score images for the demo.

    Args:
        model: an :class:`IntrospectiveHead`, a folder or ``hf-hub:<owner>/<name>``.
        calibration: f's temperature and the OOD threshold (default: :func:`calibration_for`: stored in the model,
            or fitted once on the held-out images it records; without them f+TS and the threshold are left out).
        frost_dir: the frost overlays (``frost1.png`` ... ``frost5.jpg``), for the frost corruption.
        top_k: classes shown per model.
        examples: how many example images to offer (one per class first) from the model's held-out images.
    """

    def __init__(self, model: IntrospectiveHead | str | Path, calibration: Calibration | None = None,
                 frost_dir: str | Path | None = None, top_k: int = 3, examples: int = 10) -> None:
        self.head = load_model(model)
        self.source = model if isinstance(model, (str, Path)) else None
        self.calibration = calibration if calibration is not None else calibration_for(self.head)
        self.frost_dir = frost_dir
        self.top_k = min(top_k, self.head.num_classes)
        self.explainer = Explainer(self.head.model, label_names=self.head.label_names)
        self.transform = make_transform(self.head.model, train=False)
        self.model_pixels = model_pixels(self.head.model)
        self._examples_dir: tempfile.TemporaryDirectory | None = None
        self.examples, self.examples_note = self._load_examples(examples)

    @property
    def label_names(self) -> list[str]:
        return self.head.label_names or [str(i) for i in range(self.head.num_classes)]

    def _load_examples(self, count: int) -> tuple[list[tuple[Path, str]], str]:
        """Up to ``count`` held-out images (one per class first) written as PNG files, with their classes; or none
        and why."""
        if count <= 0:
            return [], "no examples asked for"
        if not self.head.calibration:
            return [], "the model records no held-out images"
        from ...jobs.robustness import calibration_images

        try:
            held_out = calibration_images(self.head)
            labels = held_out.labels().tolist()
        except (IntrospectionError, OSError, ValueError) as err:
            log.info("no example images: the model's held-out images cannot be loaded (%s)", err)
            return [], f"the model's held-out images cannot be loaded ({' '.join(str(err).split())})"
        firsts = sorted({label: i for i, label in reversed(list(enumerate(labels)))}.values())
        chosen = set(firsts)
        rows = (firsts + [i for i in range(min(len(labels), count + len(firsts))) if i not in chosen])[:count]
        self._examples_dir = tempfile.TemporaryDirectory(prefix="timm-introspect-demo-")
        pictures = held_out.dataset.select(rows)[held_out.image_column]
        out = []
        for n, (row, picture) in enumerate(zip(rows, pictures, strict=True)):
            name = self.label_names[labels[row]]
            path = Path(self._examples_dir.name) / f"{n:02d}-{name}.png"
            picture.convert("RGB").save(path)
            out.append((path, name))
        return out, f"held-out images of {held_out.source}"

    def score(self, image: Image.Image, corruption: str | None = None, severity: int = 3) -> DemoResult:
        """Predict on ``image`` (an RGB PIL image), after ``corruption`` at ``severity`` when one is picked, and
        explain f's prediction against every class."""
        corrupted = corruption not in (None, "", NONE)
        pixels = self.model_pixels(image)
        if corrupted:
            pixels = corrupt_pixels(pixels, corruption, severity, self.frost_dir)
            image = Image.fromarray(pixels)  # predicted as this picture saved to a file would be
        prediction = predict_images(self.head, [image], self.top_k, self.calibration)[0]
        x = self.transform(image)[None].to(next(self.head.model.parameters()).dtype)
        with torch.no_grad():
            explanation = self.explainer(x.to(self.head.device), contrast="all")
        return DemoResult(prediction, pixels, explanation, corruption if corrupted else None,
                          int(severity) if corrupted else None)
