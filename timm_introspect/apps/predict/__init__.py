"""Predictions for image files or images in memory: f's, f+TS's and H's top classes and an OOD score.

* :func:`predict_images` -> :class:`ImagePrediction` per image, from one introspective pass of the head;
* :func:`calibration_for` -> :class:`Calibration`: f's temperature T and the OOD threshold (95 % of the model's
  held-out images kept), stored in the model at evaluation time or fitted on the held-out images it records;
* ``timm-introspect predict`` (:mod:`.cli`): a table on the terminal, JSON or CSV with ``--out``.
"""

from ...training.calibrate import OOD_DETECTOR, OOD_KEEP, Calibration, energy_score
from .calibration import calibration_for
from .images import ImageInput, expand_folders, read_image
from .predict import ImagePrediction, predict_images

__all__ = ["OOD_DETECTOR", "OOD_KEEP", "Calibration", "ImageInput", "ImagePrediction", "calibration_for",
           "energy_score", "expand_folders", "predict_images", "read_image"]
