"""The one introspective pass (core/introspect.py): its modes, and every user of r_x going through it.

Each application is run twice, the second time with the pass tampered with (the loss derivative negated in
``IntrospectiveHead.introspect`` / ``introspect_outputs``): its output must change, which shows it reads r_x
through the pass rather than through a copy of its own.
"""

from __future__ import annotations

import numpy as np
import pytest
import timm
import torch
from torch.utils.data import DataLoader, TensorDataset

from timm_introspect import Introspection, IntrospectiveHead, Schedule, evaluate_head, train_head
from timm_introspect.core.features import linear_weight_grad
from timm_introspect.core.losses import loss_delta


def _model(classes: int = 3) -> torch.nn.Module:
    torch.manual_seed(0)
    return timm.create_model("test_resnet", num_classes=classes).eval()


def _x(n: int = 6, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, 3, 32, 32, generator=torch.Generator().manual_seed(seed))


def _negated(method):
    """``method`` with every dJ/d(output) negated: r_x flips sign (and so does everything read from it)."""

    def tampered(self, *args, **kwargs) -> Introspection:
        out = method(self, *args, **kwargs)
        return Introspection(out.logits, {k: [(h, -g) for h, g in calls] for k, calls in out.pairs.items()},
                             out.classifiers)

    return tampered


@pytest.fixture
def fitted() -> IntrospectiveHead:
    head = IntrospectiveHead.wrap(_model(), loss="mse-M", scale="standard")
    return head.fit([_x(8, 1)], progress=False)


def test_the_pass_equals_closed_form_from_outputs_and_keeps_f_in_eval_mode(fitted):
    x = _x()
    fitted.model.train()  # a user switched f to training mode after wrapping
    stats = {k: v.clone() for k, v in fitted.model.state_dict().items() if "running" in k}
    out = fitted.introspect(x)
    assert fitted.model.training  # the mode is restored
    assert all(torch.equal(v, fitted.model.state_dict()[k]) for k, v in stats.items())  # BatchNorm untouched
    fitted.model.eval()
    with torch.no_grad():
        h = fitted.model.forward_head(fitted.model.forward_features(x), pre_logits=True)
    assert torch.equal(out.logits, fitted.model(x))
    expected = linear_weight_grad(loss_delta("mse", fitted.model(x), fitted.target_value), h)
    assert torch.allclose(out.features()["fc"], expected, atol=1e-6)
    again = fitted.introspect_outputs(out.logits, h)
    assert torch.equal(again.flat(), out.flat())


def test_differentiable_pass_reaches_the_image(fitted):
    x = _x().requires_grad_()
    p = fitted.forward_introspection(x)
    p.logits.sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert torch.allclose(p.logits, fitted(x.detach()).logits, atol=1e-6)


def test_head_forward_and_training_features_use_the_pass(fitted, monkeypatch, tmp_path):
    x = _x()
    before = fitted(x).logits
    data = DataLoader(TensorDataset(_x(12, 2), torch.arange(12) % 3), batch_size=6)
    monkeypatch.setattr(IntrospectiveHead, "introspect", _negated(IntrospectiveHead.introspect))
    assert not torch.allclose(fitted(x).logits, before)
    # the feature cache of train_head reads r_x through the same pass: its scale flips sign with it

    sched = Schedule(epochs=1, lr=0.01, kind="onecycle")
    torch.manual_seed(0)
    tampered = train_head(IntrospectiveHead.wrap(_model(), loss="mse", scale="standard"), data, schedule=sched,
                          out_dir=tmp_path / "a")
    monkeypatch.undo()
    torch.manual_seed(0)
    plain = train_head(IntrospectiveHead.wrap(_model(), loss="mse", scale="standard"), data, schedule=sched,
                       out_dir=tmp_path / "b")
    assert torch.allclose(tampered.scaler.sum, -plain.scaler.sum) and plain.scaler.sum.abs().sum() > 0
    assert evaluate_head(plain, data)["H"]["count"] == 12


def test_ood_reads_r_x_through_the_pass(fitted, monkeypatch):
    pytest.importorskip("pytorch_ood")
    from timm_introspect.apps.ood import IntrospectiveLogits, introspective_pass

    x = _x()
    base = introspective_pass(fitted, x)
    logits = IntrospectiveLogits(fitted)(x)
    monkeypatch.setattr(IntrospectiveHead, "introspect", _negated(IntrospectiveHead.introspect))
    tampered = introspective_pass(fitted, x)
    assert not torch.allclose(tampered.logits, base.logits)
    assert torch.allclose(tampered.factors["fc"][0], -base.factors["fc"][0])  # what feature detectors read
    assert not torch.allclose(IntrospectiveLogits(fitted)(x), logits)


def test_active_learning_reads_r_x_through_the_pass(monkeypatch):
    from timm_introspect.apps.active import ActiveConfig
    from timm_introspect.apps.active.learner import fit_h
    from timm_introspect.apps.active.views import make_view

    rng = np.random.default_rng(0)
    images = rng.integers(0, 255, (12, 160, 160, 3), dtype=np.uint8)  # test_resnet's input size
    labels = np.arange(12) % 3
    config = ActiveConfig(model="test_resnet", hidden=(8,), head_min_steps=2, head_batch_size=6, head_drop_rate=0.0,
                          head_schedule=Schedule(epochs=1, lr=0.01, kind="onecycle"))

    def run(tmp) -> torch.Tensor:
        torch.manual_seed(0)
        head = fit_h(_model(), images, labels, config, seed=0, out_dir=tmp)
        return make_view(head, "H").logits(images)

    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        plain = run(tmp)
    monkeypatch.setattr(IntrospectiveHead, "introspect_outputs", _negated(IntrospectiveHead.introspect_outputs))
    with tempfile.TemporaryDirectory() as tmp:
        tampered = run(tmp)
    assert not torch.allclose(plain, tampered)


def test_the_fidelity_study_reads_r_x_through_the_pass(monkeypatch, tmp_path):
    import importlib.util
    import sys
    from pathlib import Path

    pytest.importorskip("matplotlib")
    pytest.importorskip("cv2")
    path = Path(__file__).parents[2] / "benchmarks" / "fidelity.py"
    spec = importlib.util.spec_from_file_location("fidelity_study", path)
    fidelity = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "fidelity_study", fidelity)
    monkeypatch.syspath_prepend(str(path.parent))  # its report module
    spec.loader.exec_module(fidelity)
    model = _model()
    data = {}
    for i, key in enumerate(["train", "calib", "test", "noise/5"]):
        with torch.no_grad():
            h = model.forward_head(model.forward_features(_x(12, i)), pre_logits=True)
        data.update({f"{key}:z": model.get_classifier()(h), f"{key}:h": h, f"{key}:y": torch.arange(12) % 3,
                     f"{key}:s": torch.rand(12, 2, generator=torch.Generator().manual_seed(i))})
    cfg = {**fidelity.PAPER, "epochs": 1, "hidden": (8,)}

    def run() -> dict:
        torch.manual_seed(0)
        return fidelity.run_variant("paper", cfg, data, 0, tmp_path, _model())

    plain = run()
    monkeypatch.setattr(IntrospectiveHead, "introspect_outputs", _negated(IntrospectiveHead.introspect_outputs))
    tampered = run()
    assert plain["methods"]["H"]["clean"] != tampered["methods"]["H"]["clean"]
    assert plain["methods"]["H+DAC+ETS"]["clean"] != tampered["methods"]["H+DAC+ETS"]["clean"]
