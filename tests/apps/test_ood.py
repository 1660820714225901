"""OOD detection with f and with H: metrics, detectors, the differentiable introspective path, PGD, data, the job.

A tiny CIFAR-stem ResNet f and its H are trained here in seconds on colour images (tests/helpers.py), so
that far-OOD noise must score higher than in-distribution images.
"""

import copy
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import sklearn.metrics as sk
import torch
from helpers import CLASSES, make_images, timm_model, write_parquet
from PIL import Image
from pytorch_ood.detector import KNN, GradNorm, odin_preprocessing

from timm_introspect import DataError, IntrospectiveHead, InvalidArgumentError
from timm_introspect.apps.ood import (
    IntrospectiveEnergy,
    IntrospectiveGradNorm,
    IntrospectiveKNN,
    IntrospectiveLogits,
    IntrospectiveMahalanobis,
    IntrospectiveMaxLogit,
    IntrospectiveMSP,
    IntrospectiveODIN,
    LinearGradNorm,
    Normalize,
    aupr,
    auroc,
    build_detectors,
    corrupted_images,
    detection_error,
    fpr_at_tpr,
    gradnorm_score,
    introspective_pass,
    load_ood_images,
    noise_images,
    ood_metrics,
    pgd_attack,
    represent,
    uniform_cross_entropy,
)
from timm_introspect.data.images import load_images
from timm_introspect.jobs.robustness import calibration_images
from timm_introspect.training.loop import Schedule
from timm_introspect.training.pipeline import fit_head, holdout_record, train_backbone

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)  # the CIFAR-stem models' normalization


# --- metrics ---------------------------------------------------------------------------------------

def _sklearn_reference(s_id, s_ood, positive):
    n_id, n_ood = len(s_id), len(s_ood)
    y_ood = np.r_[np.zeros(n_id), np.ones(n_ood)]
    scores = np.r_[s_id, s_ood]
    y, s = (y_ood, scores) if positive == "ood" else (1 - y_ood, -scores)
    fpr, tpr, _ = sk.roc_curve(y, s, drop_intermediate=False)

    def pr_area(labels, score):
        precision, recall, _ = sk.precision_recall_curve(labels, score)
        return sk.auc(recall, precision)

    return {"fpr95": fpr[np.argmax(tpr >= 0.95)], "detection_error": np.min(0.5 * (1 - tpr + fpr)),
            "auroc": sk.roc_auc_score(y, s), "aupr": pr_area(y, s), "aupr_in": pr_area(1 - y_ood, -scores),
            "aupr_out": pr_area(y_ood, scores)}


@pytest.mark.parametrize("positive", ["id", "ood"])
@pytest.mark.parametrize("seed", [0, 1])
def test_metrics_equal_sklearn_in_both_conventions(positive, seed):
    rng = np.random.default_rng(seed)
    s_id = np.round(rng.normal(0.0, 1.0, 400), 1)  # rounded: many ties, which the curves must group
    s_ood = np.round(rng.normal(0.8, 1.3, 300), 1)
    ref = _sklearn_reference(s_id, s_ood, positive)
    got = ood_metrics(torch.from_numpy(s_id), s_ood, positive)  # tensors and arrays alike
    for key, value in ref.items():
        assert got[key] == pytest.approx(value, abs=1e-6), key
    assert fpr_at_tpr(s_id, s_ood, positive) == pytest.approx(ref["fpr95"])
    assert detection_error(s_id, s_ood, positive) == pytest.approx(ref["detection_error"])
    assert auroc(s_id, s_ood, positive) == pytest.approx(ref["auroc"])
    assert aupr(s_id, s_ood, positive) == pytest.approx(ref["aupr"])


def test_conventions_differ_only_where_they_should():
    rng = np.random.default_rng(3)
    s_id, s_ood = rng.normal(0, 1, 500), rng.normal(1, 2, 500)
    by_id, by_ood = ood_metrics(s_id, s_ood, "id"), ood_metrics(s_id, s_ood, "ood")
    assert by_id["fpr95"] != pytest.approx(by_ood["fpr95"], abs=0.01)
    for key in ("auroc", "detection_error", "aupr_in", "aupr_out"):
        assert by_id[key] == pytest.approx(by_ood[key])
    assert (by_id["aupr"], by_ood["aupr"]) == (by_id["aupr_in"], by_id["aupr_out"])
    # a perfect detector, and one that is perfectly wrong
    assert ood_metrics([0, 1], [2, 3], "id") == dict(fpr95=0, detection_error=0, auroc=1, aupr=1, aupr_in=1,
                                                     aupr_out=1)
    assert ood_metrics([2, 3], [0, 1], "ood")["fpr95"] == 1


def test_metrics_refuse_bad_input():
    with pytest.raises(InvalidArgumentError, match="positive"):
        ood_metrics([0.0], [1.0], positive="in")
    with pytest.raises(InvalidArgumentError, match="NaN"):
        ood_metrics([0.0, float("nan")], [1.0])
    with pytest.raises(InvalidArgumentError, match="no OOD"):
        ood_metrics([0.0], [])


# --- a tiny trained model --------------------------------------------------------------------------

@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("ood") / "data"
    write_parquet(folder, "train", *make_images(96, 0, size=32))
    write_parquet(folder, "test", *make_images(48, 1, size=32))
    return folder


def _train(data: Path, out: Path, classes=None, holdout: float = 0.0) -> Path:
    train = load_images(str(data), "train", classes=classes)
    f = train_backbone(train, out / "f", "test_resnet", cifar_stem=True, holdout=holdout,
                       schedule=Schedule(epochs=3, lr=0.05, kind="onecycle"), batch_size=16, seed=0)
    if holdout:
        train = train.split_holdout(holdout, 0)[0]
    fit_head(f, train, out / "h", loss="mse-M", schedule=Schedule(epochs=10, lr=0.1, weight_decay=5e-3,
                                                                   kind="onecycle"), batch_size=16, seed=0,
             calibration=holdout_record(out / "f"))
    return out / "h"


@pytest.fixture(scope="module")
def model_dir(tiny, tmp_path_factory) -> Path:
    return _train(tiny, tmp_path_factory.mktemp("model"))


@pytest.fixture(scope="module")
def head(model_dir) -> IntrospectiveHead:
    return IntrospectiveHead.from_pretrained(str(model_dir)).eval()


def _pixels(images: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255


@pytest.fixture(scope="module")
def arrays(tiny):
    train, test = load_images(str(tiny), "train").arrays(), load_images(str(tiny), "test").arrays()
    return train, test, noise_images("uniform", 48, seed=0)


def test_the_pass_is_the_heads_forward_and_records_what_detectors_read(head, arrays):
    x = Normalize(MEAN, STD)(_pixels(arrays[1][0][:8]))
    with torch.no_grad():
        out = head(x)
    p = introspective_pass(head, x)
    assert torch.equal(p.logits, out.logits) and torch.equal(p.base_logits, out.base_logits)
    delta, h = p.factors["fc"]
    assert torch.allclose((delta[:, 0, :, None] * h[:, 0, None, :]).flatten(1), head.flat_features(x)[1])
    assert torch.equal(p.penultimate, h[:, 0])
    assert [a.shape[1] for a in p.hidden] == [300, 100] and p.head_output_is_linear
    q = introspective_pass(head, x.clone().requires_grad_())
    assert q.logits.requires_grad and torch.allclose(q.logits, out.logits, atol=1e-6)


@pytest.mark.parametrize("name, kwargs, net", [
    ("resnet18", {}, "factorized"),  # an H on factors (FactorScaler)
    ("resnetv2_18", {}, "mlp"),  # a 1x1-conv classifier
    ("deit_tiny_distilled_patch16_224", {"img_size": 32}, "mlp"),  # two averaged heads: dJ/dy through autograd
])
def test_the_pass_matches_the_head_for_other_classifiers_and_nets(images, name, kwargs, net):
    head = IntrospectiveHead.wrap(timm_model(name, torch.float64, **kwargs), loss="ce-M", introspective_net=net)
    head = head.double()
    x = images(3)
    head.fit([images(8, seed=1)], progress=False)  # other images: x's scaled features sit off clamp's kinks
    with torch.no_grad():
        expected = head(x).logits
    assert torch.allclose(introspective_pass(head, x).logits, expected)
    xr = x.clone().requires_grad_()
    p = introspective_pass(head, xr)
    assert torch.allclose(p.logits, expected) and len(p.hidden) == 2
    v = torch.randn(x.shape, generator=torch.Generator().manual_seed(1), dtype=x.dtype)
    (grad,) = torch.autograd.grad(p.logits[:, 0].sum(), xr)
    eps = 1e-5
    with torch.no_grad():
        plus, minus = (introspective_pass(head, x + s * eps * v).logits[:, 0].sum() for s in (1, -1))
    assert (grad * v).sum().item() == pytest.approx(((plus - minus) / (2 * eps)).item(), rel=1e-4)


@pytest.mark.parametrize("scale", ["as fitted", "standard"])
def test_gradient_through_the_introspective_path_matches_finite_differences(head, arrays, scale):
    """The input gradient ODIN and the adaptive attack use: through H, the scaling, r_x = delta(z) h^T and f."""
    head64 = copy.deepcopy(head).double()
    if scale == "standard":  # the main job's scaling: f and H's weights kept, the scale refitted
        standard = IntrospectiveHead.wrap(head64.model, loss=head.loss, scale="standard",
                                          introspective_net=head64.introspective_net).double()
        standard.target_value.copy_(head64.target_value)
        standard.scaler.update(standard.flat_features(Normalize(MEAN, STD)(_pixels(arrays[0][0][:64]).double()))[1])
        head64 = standard
    x = Normalize(MEAN, STD)(_pixels(arrays[1][0][:3]).double())
    g = torch.Generator().manual_seed(0)
    v, w = torch.randn(x.shape, generator=g, dtype=x.dtype), torch.randn(3, 3, generator=g, dtype=x.dtype)

    def objective(inp):
        return (introspective_pass(head64, inp, hidden=False).logits * w).sum()

    xr = x.clone().requires_grad_()
    (grad,) = torch.autograd.grad(objective(xr), xr)
    eps = 1e-5
    with torch.no_grad():
        numeric = (objective(x + eps * v) - objective(x - eps * v)) / (2 * eps)
    assert (grad * v).sum().item() == pytest.approx(numeric.item(), rel=1e-4)
    assert grad.abs().sum() > 0


# --- detectors ---------------------------------------------------------------------------------------

def test_every_benchmark_detector_scores_noise_above_id(head, arrays):
    (train_x, train_y), (test_x, _), noise = arrays
    dets, skipped = build_detectors(head, represent(head, _pixels(train_x)), torch.as_tensor(train_y), k=5)
    assert not skipped
    assert {d.label for d in dets} >= {f"{m} ({on})" for m in ("MSP", "MaxLogit", "Energy", "ODIN", "GradNorm",
                                                               "Mahalanobis", "KNN", "ViM") for on in "fH"}
    scores = {}
    for name, images in (("id", test_x), ("noise", noise)):
        x = Normalize(MEAN, STD)(_pixels(images))
        with torch.no_grad():
            p = introspective_pass(head, x)
        scores[name] = {d.label: d.predict_pass(p, x) for d in dets}
    for d in dets:
        s_id, s_noise = scores["id"][d.label], scores["noise"][d.label]
        assert s_id.shape == (len(test_x),) and s_noise.shape == (len(noise),), d.label
        assert torch.isfinite(s_id).all() and torch.isfinite(s_noise).all(), d.label
        assert auroc(s_id, s_noise) > 0.9, d.label  # larger = more OOD


def test_registry_builds_each_benchmark_detector_that_scores_its_pass_as_its_images(head, arrays):
    """One detector abstraction: what the benchmark reads from the shared pass is what the detector gives on x."""
    from timm_introspect.apps.ood import DETECTORS, PassDetector, create_detector, list_detectors

    (train_x, train_y), (test_x, _), noise = arrays
    assert set(DETECTORS) <= set(list_detectors()) and len(list_detectors("f")) == 9
    assert {type(create_detector(n, head)) for n in ("msp_h", "knn_rx", "mahalanobis_1st_h")} == {
        IntrospectiveMSP, IntrospectiveKNN, IntrospectiveMahalanobis}
    assert create_detector("Mahalanobis-1st-H", head).label == "Mahalanobis-1st (H)"
    train = represent(head, _pixels(train_x))
    x = Normalize(MEAN, STD)(_pixels(np.concatenate([test_x[:8], noise[:8]])))
    with torch.no_grad():
        p = introspective_pass(head, x)
    for name in DETECTORS:
        det = create_detector(name, head, k=5) if "knn" in name else create_detector(name, head)
        assert isinstance(det, PassDetector) and det.on in ("f", "H") and det.family in ("classic", "introspective")
        assert (det.on == "f") == name.endswith("_f") == (det.family == "classic"), name
        det.fit_pass(train, torch.as_tensor(train_y))
        from_pass, from_images = det.predict_pass(p, x), det.predict(x)
        assert from_pass.shape == (16,) and torch.allclose(from_pass.double(), from_images.double(), atol=1e-5), name


def test_a_registered_detector_runs_in_the_benchmark_and_unknown_names_list_the_known(head, arrays):
    from pytorch_ood.detector import MaxLogit

    from timm_introspect.apps.ood import PassDetector, create_detector, list_detectors, register_detector

    @register_detector("margin_h")
    class IntrospectiveMargin(MaxLogit, PassDetector):
        name, on, family = "Margin", "H", "introspective"

        def __init__(self, head, scale: float = 1.0):
            super().__init__(IntrospectiveLogits(head))
            self.scale = scale

        def predict_pass(self, p, x):
            top2 = p.logits.topk(2, dim=1).values
            return self.scale * (top2[:, 1] - top2[:, 0])

    assert "margin_h" in list_detectors("H") and "margin_h" not in list_detectors("f")
    det = create_detector("Margin-H", head, scale=2.0)
    assert isinstance(det, IntrospectiveMargin) and det.scale == 2.0 and det.label == "Margin (H)"
    (train_x, train_y), (test_x, _), noise = arrays
    dets, skipped = build_detectors(head, represent(head, _pixels(train_x)), torch.as_tensor(train_y),
                                    detectors=["msp_h", "margin_h"])
    assert [d.label for d in dets] == ["MSP (H)", "Margin (H)"] and not skipped
    scores = []
    for images in (test_x, noise):
        x = Normalize(MEAN, STD)(_pixels(images))
        with torch.no_grad():
            scores.append(dets[1].predict_pass(introspective_pass(head, x), x))
    assert auroc(*scores) > 0.9
    with pytest.raises(InvalidArgumentError, match="unknown OOD detector 'margin'.*msp_f, maxlogit_f"):
        create_detector("margin", head)
    with pytest.raises(InvalidArgumentError, match="already registered"):
        register_detector("margin_h")(IntrospectiveMSP)
    with pytest.raises(InvalidArgumentError, match="PassDetector"):
        register_detector("plain_knn")(KNN)


def _loader(images: np.ndarray, labels: np.ndarray, batch: int = 32):
    x = Normalize(MEAN, STD)(_pixels(images))
    y = torch.as_tensor(labels)
    return [(x[i : i + batch], y[i : i + batch]) for i in range(0, len(x), batch)]


def test_detector_classes_fit_and_predict_like_pytorch_ood(head, arrays):
    (train_x, train_y), (test_x, test_y), noise = arrays
    x_id, x_noise = Normalize(MEAN, STD)(_pixels(test_x)), Normalize(MEAN, STD)(_pixels(noise))
    with torch.no_grad():
        out_id = head(x_id)
    fitted = [IntrospectiveMahalanobis(head), IntrospectiveMahalanobis(head, layer=0), IntrospectiveKNN(head, k=5)]
    for det in fitted:
        det.fit(_loader(train_x, train_y))
    detectors = [IntrospectiveMSP(head), IntrospectiveMaxLogit(head), IntrospectiveEnergy(head),
                 IntrospectiveODIN(head), IntrospectiveGradNorm(head), LinearGradNorm.for_model(head.model), *fitted]
    for det in detectors:
        s_id, s_noise = det(x_id), det(x_noise)
        assert s_id.shape == (len(x_id),), type(det).__name__
        assert s_noise.mean() > s_id.mean(), type(det).__name__
    assert torch.allclose(IntrospectiveMSP(head)(x_id), -out_id.logits.softmax(1).amax(1))
    assert torch.allclose(IntrospectiveEnergy(head).predict_logits(out_id.logits), -out_id.logits.logsumexp(1))


def test_odin_on_h_perturbs_by_eps_toward_a_more_confident_h(head, arrays):
    head64 = copy.deepcopy(head).double()
    det = IntrospectiveODIN(head64)
    assert (det.eps, det.temperature, det.norm_std) == (0.0014, 1000.0, list(STD))
    x = Normalize(MEAN, STD)(_pixels(arrays[1][0][:16]).double())
    x_hat = odin_preprocessing(det.model, x, eps=det.eps, temperature=det.temperature, norm_std=det.norm_std)
    step = (x_hat - x) * torch.tensor(STD, dtype=x.dtype).view(1, 3, 1, 1)  # in pixel units
    assert torch.allclose(step.abs(), torch.full_like(step, det.eps))
    with torch.no_grad():
        before = introspective_pass(head64, x).logits.div(det.temperature).softmax(1).amax(1)
        after = introspective_pass(head64, x_hat).logits.div(det.temperature).softmax(1).amax(1)
    assert (after > before).all()  # the perturbation lowers CE(H(x) / T, argmax): H grows more confident
    assert torch.allclose(det.predict(x), -after)


def _per_sample_weight_grad_l1(model_fn, weight: torch.nn.Parameter, x: torch.Tensor) -> torch.Tensor:
    norms = []
    weight.requires_grad_(True)
    try:
        for xi in x:
            z = model_fn(xi[None])
            kl = (-np.log(z.shape[1]) - torch.log_softmax(z, 1).mean(1)).sum()  # KL(uniform || softmax(z))
            (g,) = torch.autograd.grad(kl, weight)
            norms.append(g.abs().sum())
    finally:
        weight.requires_grad_(False)
    return torch.stack(norms)


def test_closed_form_gradnorm_equals_autograd(head, arrays):
    head64 = copy.deepcopy(head).double()
    f = head64.model
    x = Normalize(MEAN, STD)(_pixels(np.concatenate([arrays[1][0][:4], arrays[2][:4]])).double())
    fc = f.get_classifier()
    expected = _per_sample_weight_grad_l1(f, fc.weight, x)
    assert torch.allclose(-LinearGradNorm.for_model(f).predict(x), expected, rtol=1e-10)
    theirs = GradNorm(f, param_filter=lambda name: name == "fc.weight").predict(x)
    assert torch.allclose(-theirs, expected, rtol=1e-8)
    # on H: the gradient w.r.t. the weight of H's output layer
    last = head64.introspective_net[-1]
    expected_h = _per_sample_weight_grad_l1(lambda xi: introspective_pass(head64, xi).logits, last.weight, x)
    assert torch.allclose(-IntrospectiveGradNorm(head64).predict(x), expected_h, rtol=1e-10)
    with pytest.raises(InvalidArgumentError):
        gradnorm_score(torch.zeros(2, 3), torch.zeros(3, 4))


def test_knn_on_factors_equals_pytorch_ood_knn_on_materialized_r_x(head, arrays):
    (train_x, train_y), (test_x, _), noise = arrays
    ours = IntrospectiveKNN(head, k=7, chunk=10).fit(_loader(train_x, train_y))
    x_train = Normalize(MEAN, STD)(_pixels(train_x))
    x_test = Normalize(MEAN, STD)(_pixels(np.concatenate([test_x, noise[:8]])))
    ref = KNN(None, k=7).fit_features(head.flat_features(x_train)[1].double(), torch.as_tensor(train_y))
    expected = ref.predict_features(head.flat_features(x_test)[1].double())
    assert torch.allclose(ours.predict(x_test), expected, atol=1e-6)
    assert ours.bank[0].shape == (len(train_x), 3) and ours.bank[1].shape[0] == len(train_x)  # N + d per image


# --- PGD --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("target", ["f", "H"])
def test_pgd_stays_within_eps_and_moves_toward_its_goal(head, arrays, target):
    model = head.model if target == "f" else IntrospectiveLogits(head)
    normalize = Normalize(MEAN, STD)
    eps = 1 / 255
    for images, goal in ((arrays[1][0][:16], "uniform"), (arrays[2][:16], "confident")):
        x = _pixels(images)
        adv = pgd_attack(model, x, goal, normalize, generator=torch.Generator().manual_seed(0))
        assert (adv - x).abs().max() <= eps + 1e-6 and adv.min() >= 0 and adv.max() <= 1
        assert (adv - x).abs().max() > eps / 2
        with torch.no_grad():
            before, after = uniform_cross_entropy(model(normalize(x))), uniform_cross_entropy(model(normalize(adv)))
        moved = after < before if goal == "uniform" else after > before  # toward uniform / toward confident
        assert moved.float().mean() >= 0.9, (goal, before, after)
    x = _pixels(arrays[1][0][:2])
    assert torch.equal(pgd_attack(model, x, "uniform", normalize, steps=0, random_start=False), x)
    with pytest.raises(InvalidArgumentError, match="goal"):
        pgd_attack(model, x, "confused", normalize)


# --- data ---------------------------------------------------------------------------------------------

def test_noise_and_corrupted_sets():
    g, u = noise_images("gaussian", 10, seed=1), noise_images("uniform", 10, seed=1)
    assert g.shape == u.shape == (10, 32, 32, 3) and g.dtype == u.dtype == np.uint8
    assert np.array_equal(g, noise_images("gaussian", 10, seed=1))
    assert (g == 0).mean() > 0.2 and (g == 255).mean() > 0.2  # N(0.5, 1) clipped: a third saturates each side
    assert abs(u.mean() - 127.5) < 5 and (u == 0).mean() < 0.01
    with pytest.raises(InvalidArgumentError):
        noise_images("pink", 1)
    clean = make_images(30, 0, size=32)[0]
    clean = np.stack([np.asarray(im) for im in clean])
    c = corrupted_images(clean, 5, seed=0)
    assert c.shape == clean.shape and c.dtype == np.uint8 and (c != clean).mean() > 0.5


def test_dataset_ood_sets_with_column_split_and_resizing(tmp_path):
    import datasets

    rng = np.random.default_rng(0)
    images = [Image.fromarray(rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)) for _ in range(5)]
    ds = datasets.Dataset.from_dict({"picture": images}, features=datasets.Features({"picture": datasets.Image()}))
    ds.to_parquet(str(tmp_path / "validation-00000-of-00001.parquet"))
    pixels = load_ood_images(str(tmp_path), split="validation", image_column="picture", limit=3)
    assert pixels.shape == (3, 32, 32, 3) and pixels.dtype == np.uint8
    with pytest.raises(DataError, match="no column"):
        load_ood_images(str(tmp_path), split="validation", image_column="img")
    with pytest.raises(DataError, match="split"):
        load_ood_images(str(tmp_path), split="test")


def test_class_subsets_are_relabeled_with_their_names(tiny):
    sub = load_images(str(tiny), "train", classes=["blue", "red"])
    assert sub.label_names == ["blue", "red"] and sub.classes == (2, 0)
    assert sorted(set(sub.labels().tolist())) == [0, 1] and len(sub) == 64
    full = load_images(str(tiny), "train")
    blue = full.arrays()[0][full.labels().numpy() == 2]
    assert np.array_equal(sub.arrays()[0][sub.labels().numpy() == 0], blue)
    assert load_images(str(tiny), "train", classes=["0", "1"]).label_names == CLASSES[:2]
    for bad in (["purple"], [0, 0], [5]):
        with pytest.raises(DataError):
            load_images(str(tiny), "train", classes=bad)


# --- the job and the CLI -------------------------------------------------------------------------------

def test_cli_runs_the_open_set_split_for_a_class_subset_model(tiny, tmp_path, capsys):
    """f and H trained on 2 of the 3 classes (as CIFAR-6/4 on 6 of 10): the third class is the open-set OOD."""
    import json

    from timm_introspect.cli import main

    model = _train(tiny, tmp_path / "subset", classes=["red", "green"], holdout=0.25)
    held_out = calibration_images(IntrospectiveHead.from_pretrained(str(model)))  # rebuilt with the class subset
    assert len(held_out) == 16 and held_out.label_names == ["red", "green"] and held_out.classes == (0, 1)
    ood_dir = tmp_path / "other"
    write_parquet(ood_dir, "test", *make_images(20, 5, size=32, mode="L"))
    out = tmp_path / "ood"
    main(["ood", "--model", str(model), "--ood", "open-set", str(ood_dir), "--test-images", "16", "--ood-images", "16",
          "--fit-images", "64", "--k", "5", "--conditions", "vanilla", "attack-H", "--out", str(out), "--plots"])
    printed = capsys.readouterr().out
    assert "ID positive" in printed and "OOD positive" in printed and "MSP and ODIN on H" in printed
    result = json.loads((out / "results.json").read_text())
    assert result["setup"]["classes"] == ["red", "green"]
    assert set(result["conditions"]) == {"vanilla", "attack-H"}
    open_set = json.loads((out / "sets" / "open-set.json").read_text())
    assert open_set["images"] == 16  # blue images only, the class f never saw
    entry = open_set["conditions"]["attack-H"]["MSP (H)"]["metrics"]
    assert set(entry) == {"id", "ood"} and entry["id"]["auroc"] == pytest.approx(entry["ood"]["auroc"])
    assert (out / "table.md").is_file() and (out / "full_table.md").is_file()
    assert (out / "plots" / "roc_attack-H_open-set.png").is_file()
    assert (out / "plots" / f"hist_attack-H_{ood_dir.name}.png").is_file()


def test_without_pytorch_ood_the_package_imports_and_ood_names_its_extra(tmp_path):
    code = (
        "import sys\n"
        "sys.modules['pytorch_ood'] = None\n"
        "import timm_introspect\n"
        "from timm_introspect.cli import main\n"
        "try:\n"
        "    import timm_introspect.apps.ood\n"
        "except timm_introspect.MissingDependencyError as err:\n"
        "    print('MISSING:', err)\n"
        "try:\n"
        "    main(['ood', '--model', 'x', '--ood', 'gaussian'])\n"
        "except SystemExit as err:\n"
        "    print('CLI:', err)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "MISSING:" in done.stdout and "timm-introspect[ood]" in done.stdout
    assert "CLI: timm-introspect ood: error:" in done.stdout and "[ood]" in done.stdout.split("CLI:")[1]
