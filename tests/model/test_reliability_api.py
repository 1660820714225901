"""Issue 22, group 7: the Python API refuses misuse with a clear error and does not silently change f.

Tiny timm models (``test_resnet``) so every case runs in a second or two.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import safetensors.torch
import timm
import torch
from torch import nn

from timm_introspect import CheckpointError, IntrospectionError, IntrospectiveHead
from timm_introspect.apps.ood import metrics as ood_metrics
from timm_introspect.core import metrics


def tiny(num_classes: int = 3) -> nn.Module:
    torch.manual_seed(0)
    return timm.create_model("test_resnet", num_classes=num_classes).eval()


def images(n: int = 4, size: int = 64) -> torch.Tensor:
    return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(1))


def bn_state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items() if "running" in k or "num_batches" in k}


def test_wrapping_a_head_again_says_what_to_do():
    head = IntrospectiveHead.wrap(tiny())
    with pytest.raises(IntrospectionError, match=r"already an IntrospectiveHead.*head\.model"):
        IntrospectiveHead.wrap(head)


def test_f_in_train_mode_after_wrap_changes_neither_r_x_nor_batchnorm():
    model = tiny()
    head = IntrospectiveHead.wrap(model, loss="mse-M")
    x = images()
    head.fit([x, x.flip(0)], progress=False)
    reference = (head(x).logits, head.introspective_features(x), head.target_value.clone(),
                 {k: v.clone() for k, v in head.scaler.state_dict().items()})
    stats = bn_state(model)
    model.train()  # the user puts f back into train mode (e.g. a training loop's model.train())
    out = head(x)
    features = head.introspective_features(x)
    head.fit([x, x.flip(0)], progress=False)
    assert torch.equal(out.logits, reference[0]) and torch.equal(features, reference[1])
    assert torch.equal(head.target_value, reference[2])
    assert all(torch.equal(v, reference[3][k]) for k, v in head.scaler.state_dict().items())
    assert all(torch.equal(v, stats[k]) for k, v in bn_state(model).items())  # running statistics untouched
    assert model.training  # the user's mode is left as it was


@pytest.mark.parametrize("change", ["replace", "reset"])
def test_a_classifier_replaced_after_wrap_is_refused_at_the_next_call(change):
    model = tiny()
    head = IntrospectiveHead.wrap(model, scale=False)
    x = images(2)
    head(x)
    if change == "replace":
        model.fc = nn.Linear(model.fc.in_features, 3)
    else:
        model.reset_classifier(5)
    for call in (lambda: head(x), lambda: head.introspective_features(x), lambda: head.base_logits(x),
                 lambda: head.fit([x], progress=False)):
        with pytest.raises(IntrospectionError, match=r"classifier fc was replaced or resized after .*wrap"):
            call()


def test_a_replaced_classifier_is_not_saved(tmp_path):
    model = tiny()
    head = IntrospectiveHead.wrap(model)
    model.fc = nn.Linear(model.fc.in_features, 3)
    with pytest.raises(IntrospectionError, match="replaced"):
        head.save_pretrained(tmp_path / "m")
    assert not (tmp_path / "m").exists()


@pytest.mark.parametrize("target", [math.nan, math.inf, -math.inf, "nan", torch.tensor(1.0)])
def test_target_must_be_a_finite_number_or_m(target):
    with pytest.raises(IntrospectionError, match="target must be a finite number or 'M'"):
        IntrospectiveHead.wrap(tiny(), target=target)


def test_saved_target_nan_is_refused(tmp_path):
    IntrospectiveHead.wrap(tiny()).save_pretrained(tmp_path / "m")
    path = tmp_path / "m" / "introspection_config.json"
    path.write_text(path.read_text().replace('"target": 1.0', '"target": NaN'))
    with pytest.raises(CheckpointError, match="target"):
        IntrospectiveHead.from_pretrained(tmp_path / "m")


@pytest.mark.parametrize("key, value, match", [
    ("label_names", "abc", "label_names"),
    ("label_names", ["a", "b"], "label_names"),
    ("label_names", [1, 2, 3], "label_names"),
    ("metrics", [1, 2], "metrics"),
    ("metrics", "good", "metrics"),
    ("metrics", {"clean": 0.9}, "metrics"),
    ("calibration", [1], "calibration"),
    ("num_classes", "3", "num_classes"),
])
def test_from_pretrained_refuses_fields_of_the_wrong_type(tmp_path, key, value, match):
    IntrospectiveHead.wrap(tiny(), label_names=["a", "b", "c"]).save_pretrained(tmp_path / "m")
    path = tmp_path / "m" / "introspection_config.json"
    config = json.loads(path.read_text())
    config[key] = value
    path.write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match=match):
        IntrospectiveHead.from_pretrained(tmp_path / "m")


@pytest.mark.parametrize("method", ["closed-form", "autograd"])
def test_explainer_works_under_inference_mode(method):
    from timm_introspect.apps.explain import Explainer

    model = tiny()
    x = images(2)
    expected = Explainer(model, method=method)(x, contrast="all")
    with torch.inference_mode():
        out = Explainer(model, method=method)(x, contrast="all")
    assert torch.allclose(out.contrastive, expected.contrastive) and torch.allclose(out.grad_cam, expected.grad_cam)


def test_explainer_on_inference_tensors_outside_inference_mode():
    from timm_introspect.apps.explain import Explainer

    with torch.inference_mode():
        x = images(2)
    model = tiny()
    out = Explainer(model, method="autograd")(x)
    assert out.grad_cam.shape[0] == 2


# --- metrics refuse impossible arguments ----------------------------------------------------------------

LOGITS = torch.tensor([[2.0, 0.0, -1.0], [0.0, 1.0, 0.5]])


@pytest.mark.parametrize("fn", [metrics.accuracy, metrics.nll, metrics.brier_score, metrics.calibration_errors,
                                metrics.classification_metrics, metrics.fit_temperature])
@pytest.mark.parametrize("labels", [[0, 3], [-1, 0], [0, 99]])
def test_classification_metrics_refuse_labels_out_of_range(fn, labels):
    with pytest.raises(IntrospectionError, match=r"outside \[0, 3\)"):
        fn(LOGITS, torch.tensor(labels))


@pytest.mark.parametrize("n_bins", [0, -3, 2.5, True])
def test_calibration_refuses_impossible_bins(n_bins):
    for fn in (metrics.calibration_errors, metrics.classification_metrics):
        with pytest.raises(IntrospectionError, match="n_bins"):
            fn(LOGITS, torch.tensor([0, 1]), n_bins)


@pytest.mark.parametrize("logits", [torch.zeros(0, 3), torch.zeros(2, 0), torch.zeros(3), torch.zeros(2, 3).long()])
def test_classification_metrics_refuse_empty_or_misshaped_logits(logits):
    labels = torch.zeros(logits.shape[:-1] if logits.dim() else (), dtype=torch.long)
    with pytest.raises(IntrospectionError):
        metrics.classification_metrics(logits, labels)


def test_fit_temperature_refuses_zero_iterations():
    with pytest.raises(IntrospectionError, match="max_iter"):
        metrics.fit_temperature(LOGITS, torch.tensor([0, 1]), max_iter=0)


@pytest.mark.parametrize("tpr", [0.0, -0.1, 1.5, math.nan])
def test_fpr_at_tpr_refuses_impossible_rates(tpr):
    with pytest.raises(IntrospectionError, match="tpr"):
        ood_metrics.fpr_at_tpr(np.array([0.1, 0.2]), np.array([0.5, 0.9]), tpr=tpr)


def test_ood_metrics_refuse_non_numeric_scores_and_positive_first():
    with pytest.raises(IntrospectionError, match="scores"):
        ood_metrics.ood_metrics(["a", "b"], [0.5])
    with pytest.raises(IntrospectionError, match="positive"):
        ood_metrics.ood_metrics([0.1], [0.5], positive="both")


# --- a distilled two-head checkpoint loads by architecture + checkpoint -----------------------------------

def test_distilled_two_head_checkpoint_loads_by_architecture(tmp_path):
    from timm_introspect.io.backbones import resolve_backbone

    arch = "deit_tiny_distilled_patch16_224"
    torch.manual_seed(0)
    model = timm.create_model(arch, num_classes=4).eval()
    path = tmp_path / "deit.safetensors"
    safetensors.torch.save_file(model.state_dict(), str(path))
    loaded = resolve_backbone(arch, path)
    assert set(loaded.state_dict()) == set(model.state_dict())
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in loaded.state_dict().items())
    assert loaded.num_classes == 4
    # heads of different class counts are not one model
    state = dict(model.state_dict())
    state["head_dist.weight"], state["head_dist.bias"] = torch.zeros(5, 192), torch.zeros(5)
    safetensors.torch.save_file(state, str(path))
    with pytest.raises(CheckpointError, match="different class counts"):
        resolve_backbone(arch, path)


# --- KNN and Mahalanobis refuse empty or class-incomplete fits ------------------------------------------------

def fitted_head() -> IntrospectiveHead:
    head = IntrospectiveHead.wrap(tiny(), scale=False)
    head.introspective_net.eval()
    return head


def loader(labels: list[int]):
    x = torch.randn(len(labels), 3, 64, 64, generator=torch.Generator().manual_seed(2))
    y = torch.tensor(labels, dtype=torch.long)
    return [(x[i : i + 4], y[i : i + 4]) for i in range(0, len(labels), 4)]


MAHALANOBIS = ["mahalanobis_h", "mahalanobis_1st_h", "mahalanobis_f"]
KNNS = ["knn_h", "knn_rx", "knn_f"]


@pytest.mark.parametrize("name", MAHALANOBIS + KNNS)
@pytest.mark.parametrize("data", ["empty", "all ood"])
def test_detectors_refuse_an_empty_fit(name, data):
    from timm_introspect.apps.ood import create_detector

    det = create_detector(name, fitted_head(), **({"k": 2} if "knn" in name else {}))
    with pytest.raises(IntrospectionError, match="no in-distribution images"):
        det.fit([] if data == "empty" else loader([-1, -1, -1, -1]))


@pytest.mark.parametrize("name", MAHALANOBIS)
@pytest.mark.parametrize("labels, missing", [([0, 0, 1, 1, 0, 1], "2"), ([1, 1, 2, 2, 1, 2], "0")])
def test_mahalanobis_refuses_a_fit_missing_a_class(name, labels, missing):
    from timm_introspect.apps.ood import create_detector

    det = create_detector(name, fitted_head())
    with pytest.raises(IntrospectionError, match=rf"no image of 1 of the 3 classes \({missing}\)"):
        det.fit(loader(labels))


@pytest.mark.parametrize("name", MAHALANOBIS + KNNS)
def test_feature_detectors_fit_and_score_on_complete_data(name):
    from timm_introspect.apps.ood import create_detector

    det = create_detector(name, fitted_head(), **({"k": 2} if "knn" in name else {}))
    det.fit(loader([0, 1, 2, 0, 1, 2, -1, 0]))
    assert det.predict(images(2)).shape == (2,)


@pytest.mark.parametrize("name", ["knn_h", "knn_f"])
def test_knn_refuses_fewer_images_than_k(name):
    from timm_introspect.apps.ood import create_detector

    det = create_detector(name, fitted_head(), k=10)
    with pytest.raises(IntrospectionError, match="k=10"):
        det.fit(loader([0, 1, 2, 0]))
