"""timm-introspect: introspective learning for timm classifiers.

>>> import timm, timm_introspect
>>> model = timm.create_model("resnet18", num_classes=10)  # a trained classifier
>>> head = timm_introspect.IntrospectiveHead.wrap(model, loss="mse-M")
>>> head.fit(train_loader)             # target M and the [-1, 1] scale   # doctest: +SKIP
>>> out = head(images)                 # out.logits (H), out.base_logits (f)   # doctest: +SKIP
"""

from .classifier import ClassifierLayer, find_classifiers
from .errors import (
    CheckpointError,
    DataError,
    InputShapeError,
    IntrospectionError,
    NoClassifierError,
    NotFittedError,
    UnknownLossError,
    UnsupportedClassifierError,
)
from .features import conv1x1_weight_grad, functional_weight_grad, linear_weight_grad
from .head import IntrospectiveHead, IntrospectiveOutput
from .losses import LOSSES, introspection_loss, loss_delta, parse_loss
from .lowrank import FactorizedMLP, RankOneMLP
from .mlp import IntrospectiveMLP
from .models import create_model, use_cifar_stem
from .reference import autograd_features
from .scaling import FactorScaler, FeatureScaler, scale_features

__version__ = "0.1.0"

__all__ = [
    "CheckpointError",
    "FactorScaler",
    "FactorizedMLP",
    "ClassifierLayer",
    "DataError",
    "FeatureScaler",
    "InputShapeError",
    "IntrospectionError",
    "IntrospectiveHead",
    "IntrospectiveMLP",
    "IntrospectiveOutput",
    "LOSSES",
    "NoClassifierError",
    "NotFittedError",
    "RankOneMLP",
    "UnknownLossError",
    "UnsupportedClassifierError",
    "autograd_features",
    "conv1x1_weight_grad",
    "create_model",
    "find_classifiers",
    "functional_weight_grad",
    "introspection_loss",
    "linear_weight_grad",
    "loss_delta",
    "parse_loss",
    "scale_features",
    "use_cifar_stem",
]
