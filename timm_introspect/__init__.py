"""timm-introspect: introspective learning for timm classifiers.

>>> import timm, timm_introspect
>>> model = timm.create_model("resnet18", num_classes=10)  # a trained classifier f
>>> head = timm_introspect.IntrospectiveHead.wrap(model, loss="mse-M", scale="standard")
>>> timm_introspect.train_head(head, train_loader, out_dir="runs/h")   # M, the scale, H   # doctest: +SKIP
>>> timm_introspect.evaluate_head(head, test_loader, split="test")     # f and H metrics   # doctest: +SKIP
>>> out = head(images)                 # out.logits (H), out.base_logits (f)   # doctest: +SKIP

The public API: the head, its output and its one introspective pass; training H (:func:`train_head`) and
evaluating f, f+TS and H (:func:`evaluate_head`) on any loader; the H networks, losses and scalings with
their registries; the functional core (features, statistics, metrics); CIFAR-stem timm models; f from a
folder, an ``hf-hub:`` id or a checkpoint (:func:`resolve_backbone`); active learning and explanations;
the errors. The layers below are imported from their folders: :mod:`timm_introspect.core`,
:mod:`~timm_introspect.nets`, :mod:`~timm_introspect.data` (CIFAR-10-C and ImageNet-C in
:mod:`timm_introspect.data.cifar10c`), :mod:`~timm_introspect.io` (saving, loading, the Hub),
:mod:`~timm_introspect.training` (the feature cache, the loop, recipes, the jobs on ``datasets`` splits),
:mod:`~timm_introspect.jobs` (the CLI commands), :mod:`~timm_introspect.apps` (OOD detection, extra
``[ood]``; active learning; explanations).
"""

from .apps.active import (
    STRATEGIES,
    ActiveConfig,
    ActiveData,
    LabeledPool,
    Strategy,
    create_strategy,
    list_strategies,
    load_active_data,
    register_strategy,
    run_active_learning,
)
from .apps.explain import ContrastiveTarget, Explainer, Explanation, contrastive_cam, grad_cam
from .apps.predict import Calibration, ImagePrediction, calibration_for, predict_images
from .core.calibration import (
    CALIBRATORS,
    DensityTemperature,
    EnsembleTemperature,
    fit_calibrators,
    fit_dac,
    fit_ets,
    knn_distances,
)
from .core.classifier import ClassifierLayer, find_classifiers
from .core.features import conv1x1_weight_grad, functional_weight_grad, linear_weight_grad
from .core.introspect import Introspection, introspect, introspect_outputs
from .core.losses import LOSSES, introspection_loss, list_losses, loss_delta, parse_loss, register_loss
from .core.metrics import (
    accuracy,
    brier_score,
    calibration_errors,
    classification_metrics,
    ece_floor,
    fit_temperature,
    nll,
    reliability_bins,
)
from .core.reference import autograd_features
from .core.scaling import (
    SCALINGS,
    FactorScaler,
    FeatureScaler,
    StandardScaler,
    create_scaler,
    fit_scaler,
    list_scalings,
    register_scaling,
    scale_features,
)
from .core.stats import MaxLogitMean, fit_target
from .errors import (
    CheckpointError,
    DataError,
    DivergedError,
    InputShapeError,
    IntrospectionError,
    InvalidArgumentError,
    MissingDependencyError,
    NoClassifierError,
    NoSpatialMapError,
    NotFittedError,
    RunLockedError,
    UnknownLossError,
    UnknownNetError,
    UnsupportedClassifierError,
)
from .io.backbones import resolve_backbone
from .model.density import DensityScorer, LayerFeatures
from .model.head import IntrospectiveHead, IntrospectiveOutput, IntrospectivePass
from .nets.cifar import CIFAR_ARCHS, create_model, use_cifar_stem
from .nets.lowrank import FactorizedMLP, RankOneMLP
from .nets.mlp import IntrospectiveMLP
from .nets.registry import create_net, list_nets, register_net
from .training.evaluate import evaluate_head, predict
from .training.fit import train_head
from .training.loop import Schedule
from .version import __version__

__all__ = [
    "CALIBRATORS",
    "DensityScorer",
    "DensityTemperature",
    "EnsembleTemperature",
    "LayerFeatures",
    "fit_calibrators",
    "fit_dac",
    "fit_ets",
    "knn_distances",
    "ActiveConfig",
    "Calibration",
    "ActiveData",
    "CIFAR_ARCHS",
    "CheckpointError",
    "ClassifierLayer",
    "ContrastiveTarget",
    "DataError",
    "DivergedError",
    "Explainer",
    "Explanation",
    "FactorScaler",
    "FactorizedMLP",
    "FeatureScaler",
    "InputShapeError",
    "Introspection",
    "ImagePrediction",
    "IntrospectionError",
    "IntrospectiveHead",
    "IntrospectiveMLP",
    "IntrospectiveOutput",
    "IntrospectivePass",
    "InvalidArgumentError",
    "LOSSES",
    "LabeledPool",
    "MaxLogitMean",
    "MissingDependencyError",
    "NoClassifierError",
    "NoSpatialMapError",
    "NotFittedError",
    "RankOneMLP",
    "RunLockedError",
    "SCALINGS",
    "STRATEGIES",
    "Schedule",
    "StandardScaler",
    "Strategy",
    "UnknownLossError",
    "UnknownNetError",
    "UnsupportedClassifierError",
    "accuracy",
    "autograd_features",
    "brier_score",
    "calibration_errors",
    "calibration_for",
    "classification_metrics",
    "contrastive_cam",
    "conv1x1_weight_grad",
    "create_model",
    "create_net",
    "create_scaler",
    "create_strategy",
    "ece_floor",
    "evaluate_head",
    "find_classifiers",
    "fit_scaler",
    "fit_target",
    "fit_temperature",
    "functional_weight_grad",
    "grad_cam",
    "introspect",
    "introspect_outputs",
    "introspection_loss",
    "linear_weight_grad",
    "list_losses",
    "list_nets",
    "list_scalings",
    "list_strategies",
    "load_active_data",
    "loss_delta",
    "nll",
    "parse_loss",
    "predict",
    "predict_images",
    "register_loss",
    "register_net",
    "register_scaling",
    "register_strategy",
    "reliability_bins",
    "resolve_backbone",
    "run_active_learning",
    "scale_features",
    "train_head",
    "use_cifar_stem",
    "__version__",
]
