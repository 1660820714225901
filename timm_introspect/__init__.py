"""timm-introspect: introspective learning for timm classifiers.

>>> import timm, timm_introspect
>>> model = timm.create_model("resnet18", num_classes=10)  # a trained classifier
>>> head = timm_introspect.IntrospectiveHead.wrap(model, loss="mse-M")
>>> head.fit(train_loader)             # target M and the [-1, 1] scale   # doctest: +SKIP
>>> out = head(images)                 # out.logits (H), out.base_logits (f)   # doctest: +SKIP

The public API: the head and its output; active learning through f or H (:mod:`timm_introspect.apps.active`);
explanations (Grad-CAM and "why P, rather than Q?" maps,
:mod:`timm_introspect.apps.explain`); the H networks and their registry; the losses, features and statistics
of the functional core; the metrics; CIFAR-stem timm models; f from a folder, an ``hf-hub:`` id or a
checkpoint (:func:`resolve_backbone`); the errors. The jobs
(:mod:`timm_introspect.training.pipeline`), the feature cache (:mod:`.cache`), saving and loading
(:mod:`.hub`), CIFAR-10-C (:mod:`.cifar10c`) and OOD detection (:mod:`.ood`, the ``[ood]`` extra) are
imported from their modules.
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
    run_active_learning,
)
from .apps.explain import ContrastiveTarget, Explainer, Explanation, contrastive_cam, grad_cam
from .core.classifier import ClassifierLayer, find_classifiers
from .core.features import conv1x1_weight_grad, functional_weight_grad, linear_weight_grad
from .core.introspect import Introspection, introspect, introspect_outputs
from .core.losses import LOSSES, introspection_loss, loss_delta, parse_loss
from .core.metrics import accuracy, brier_score, calibration_errors, classification_metrics, fit_temperature, nll
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
    "Schedule",
    "IntrospectivePass",
    "Introspection",
    "ActiveConfig",
    "ActiveData",
    "CIFAR_ARCHS",
    "LOSSES",
    "STRATEGIES",
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
    "IntrospectionError",
    "IntrospectiveHead",
    "IntrospectiveMLP",
    "IntrospectiveOutput",
    "InvalidArgumentError",
    "LabeledPool",
    "MaxLogitMean",
    "MissingDependencyError",
    "NoClassifierError",
    "NoSpatialMapError",
    "NotFittedError",
    "RankOneMLP",
    "RunLockedError",
    "Strategy",
    "SCALINGS",
    "StandardScaler",
    "UnknownLossError",
    "UnknownNetError",
    "UnsupportedClassifierError",
    "__version__",
    "accuracy",
    "autograd_features",
    "brier_score",
    "calibration_errors",
    "classification_metrics",
    "contrastive_cam",
    "conv1x1_weight_grad",
    "create_model",
    "create_net",
    "create_strategy",
    "find_classifiers",
    "fit_temperature",
    "functional_weight_grad",
    "grad_cam",
    "introspection_loss",
    "linear_weight_grad",
    "list_nets",
    "list_strategies",
    "load_active_data",
    "loss_delta",
    "nll",
    "parse_loss",
    "register_net",
    "resolve_backbone",
    "run_active_learning",
    "scale_features",
    "use_cifar_stem",
    "train_head",
    "predict",
    "evaluate_head",
    "fit_target",
    "register_scaling",
    "list_scalings",
    "fit_scaler",
    "create_scaler",
    "introspect_outputs",
    "introspect",
]
