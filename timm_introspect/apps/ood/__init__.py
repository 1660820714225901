"""Out-of-distribution detection with f and with H (the ``[ood]`` extra: pytorch-ood).

* :mod:`.metrics`: FPR at 95 % TPR, detection error, AUROC, AUPR-in / -out, with ``positive="id" | "ood"``;
* :mod:`.path`: the introspective path f -> r_x -> scaling -> H, differentiable w.r.t. the image;
* :mod:`.detectors`, :mod:`.baselines`: detectors on H and on r_x, and the classic ones on f, with pytorch-ood's API
  (``fit``, ``predict``; larger = more OOD), registered by name (:mod:`.registry`: ``register_detector``,
  ``list_detectors``, ``create_detector``);
* :mod:`.attack`: L-inf PGD (ID toward uniform, OOD toward confident predictions), against f or H;
* :mod:`.data`: noise, CIFAR-10-C, open-set and any ``datasets`` OOD set;
* :mod:`.benchmark`, :mod:`.report`, :mod:`.job`: every detector on f and H, vanilla and attacked.

>>> from timm_introspect.apps.ood import IntrospectiveODIN, ood_metrics   # doctest: +SKIP
>>> detector = IntrospectiveODIN(head)                               # doctest: +SKIP
>>> ood_metrics(detector(x_id), detector(x_ood), positive="id")      # doctest: +SKIP
"""

from ...errors import MissingDependencyError

try:
    import pytorch_ood  # noqa: F401
    import sklearn  # noqa: F401  (pytorch-ood's KNN)
except ImportError as err:
    raise MissingDependencyError(
        f"OOD detection needs pytorch-ood and scikit-learn ({err}): pip install 'timm-introspect[ood]'") from err

from .attack import Normalize, pgd_attack, uniform_cross_entropy
from .baselines import (
    ClassicEnergy,
    ClassicGradNorm,
    ClassicKNN,
    ClassicMahalanobis,
    ClassicMaxLogit,
    ClassicMSP,
    ClassicODIN,
    ClassicReAct,
    ClassicViM,
)
from .benchmark import CONDITIONS, DETECTORS, build_detectors, ood_benchmark, represent
from .data import BUILTIN_SETS, OODSet, corrupted_images, load_ood_images, noise_images, open_set_images
from .detectors import (
    IntrospectiveEnergy,
    IntrospectiveGradNorm,
    IntrospectiveHiddenKNN,
    IntrospectiveKNN,
    IntrospectiveMahalanobis,
    IntrospectiveMaxLogit,
    IntrospectiveMSP,
    IntrospectiveODIN,
    IntrospectiveViM,
    LinearGradNorm,
    gradnorm_score,
    rank_one_cosine,
)
from .job import QUICK, run_ood
from .metrics import METRICS, aupr, auroc, detection_error, fpr_at_tpr, ood_metrics, roc_curve
from .path import IntrospectiveHidden, IntrospectiveLogits, IntrospectivePass, Penultimate, introspective_pass
from .registry import PassDetector, create_detector, get_detector_class, list_detectors, register_detector
from .report import claims, ood_plots, ood_table, write_results

__all__ = [
    "BUILTIN_SETS", "CONDITIONS", "DETECTORS", "METRICS", "QUICK", "ClassicEnergy", "ClassicGradNorm", "ClassicKNN",
    "ClassicMSP", "ClassicMahalanobis", "ClassicMaxLogit", "ClassicODIN", "ClassicReAct", "ClassicViM",
    "IntrospectiveEnergy", "IntrospectiveGradNorm", "IntrospectiveHidden", "IntrospectiveHiddenKNN",
    "IntrospectiveKNN", "IntrospectiveLogits", "IntrospectiveMSP", "IntrospectiveMahalanobis",
    "IntrospectiveMaxLogit", "IntrospectiveODIN", "IntrospectivePass", "IntrospectiveViM", "LinearGradNorm",
    "Normalize", "OODSet", "PassDetector", "Penultimate", "aupr", "auroc", "build_detectors", "claims",
    "corrupted_images", "create_detector", "detection_error", "fpr_at_tpr", "get_detector_class", "gradnorm_score",
    "introspective_pass", "list_detectors", "load_ood_images", "noise_images", "ood_benchmark", "ood_metrics",
    "ood_plots", "ood_table", "open_set_images", "pgd_attack", "rank_one_cosine", "register_detector", "represent",
    "roc_curve", "run_ood", "uniform_cross_entropy", "write_results",
]
