"""The model card's pictures: a model saved or pushed with evaluation results gets accuracy_vs_ece.png and
reliability.png (f, f+TS, H), valid PNGs that its card links to; without matplotlib, no pictures and no links."""

from __future__ import annotations

import io
import re
import sys

import pytest
import timm
import torch
from PIL import Image

from timm_introspect import IntrospectiveHead, evaluate_head, reliability_bins
from timm_introspect.core.metrics import calibration_errors
from timm_introspect.io.figures import card_figures

PNG = b"\x89PNG\r\n\x1a\n"
FIGURES = ("accuracy_vs_ece.png", "reliability.png")


@pytest.fixture(scope="module")
def evaluated():
    """A tiny timm model (32 px, 3 classes) with a head, evaluated on 12 images with 12 held-out ones."""
    pytest.importorskip("matplotlib")
    torch.manual_seed(0)
    model = timm.create_model("test_resnet", num_classes=3, pretrained_cfg_overlay={"input_size": (3, 32, 32)})
    head = IntrospectiveHead.wrap(model, loss="mse", label_names=["red", "green", "blue"])
    x, y = torch.randn(24, 3, 32, 32), torch.arange(24) % 3
    head.fit([x[:12]], progress=False)
    metrics = evaluate_head(head, [(x[:12], y[:12])], calibration=[(x[12:], y[12:])], split="test", progress=False)
    return head, metrics


def links(card: str) -> list[str]:
    return re.findall(r"!\[[^\]]*\]\(([^)]+)\)", card)


def check_png(data: bytes) -> tuple[int, int]:
    assert data.startswith(PNG)
    Image.open(io.BytesIO(data)).verify()  # the whole file: chunks and checksums
    return Image.open(io.BytesIO(data)).size


def test_pushed_model_has_the_pictures_and_its_card_shows_them(hub, evaluated):
    head, metrics = evaluated
    head.push_to_hub("tester/pictures")
    files = hub.state.repos["tester/pictures"].files
    for name in FIGURES:
        width, height = check_png(files[name])
        assert width > 200 and height > 200
    card = files["README.md"].decode()
    assert links(card) == list(FIGURES)  # relative links: the files of the same repository
    assert "model-index:" in card and "| test | f+TS |" in card  # beside the results table and the metadata
    loaded = IntrospectiveHead.from_pretrained("tester/pictures")
    assert loaded.reliability == head.reliability  # the bins travel with the model


def test_reliability_bins_are_recorded_for_every_model(evaluated):
    head, metrics = evaluated
    assert set(head.reliability["test"]) == set(metrics) == {"f", "f+TS", "H"}
    for who, bins in head.reliability["test"].items():
        assert len(bins["count"]) == 10 and sum(bins["count"]) == metrics[who]["count"] == 12
        # the ECE is the count-weighted gap of these bins
        ece = sum(c * abs(a - p) for c, a, p in zip(bins["count"], bins["accuracy"], bins["confidence"],
                                                    strict=True)) / 12
        assert ece == pytest.approx(metrics[who]["ece"], abs=1e-12)
    logits, labels = torch.tensor([[2.0, 0.0], [0.0, 1.0], [3.0, 0.0]]), torch.tensor([0, 0, 1])
    bins = reliability_bins(logits, labels, n_bins=4)
    # confidences 0.881 (right), 0.731 (wrong), 0.953 (wrong): bins (0.5, 0.75] and (0.75, 1]
    assert bins["count"] == [0, 0, 1, 2] and bins["accuracy"] == [0.0, 0.0, 0.0, 0.5]
    assert bins["confidence"][3] == pytest.approx((torch.tensor([2.0, 3.0]).sigmoid().sum() / 2).item())
    assert calibration_errors(logits, labels, 4)[0] == pytest.approx(
        sum(c * abs(a - p) for c, a, p in zip(bins["count"], bins["accuracy"], bins["confidence"], strict=True)) / 3)


def test_saved_folder_has_the_pictures_for_any_models(evaluated, tmp_path, monkeypatch):
    head, _ = evaluated
    monkeypatch.setattr(head, "metrics", {**head.metrics, "CIFAR-10-C (mean)": {
        "f": {"accuracy": 0.5, "ece": 0.3}, "f+ETS": {"accuracy": 0.5, "ece": 0.1}}})
    head.save_pretrained(tmp_path / "model")
    for name in FIGURES:
        check_png((tmp_path / "model" / name).read_bytes())
    card = (tmp_path / "model" / "README.md").read_text()
    assert links(card) == list(FIGURES) and "| CIFAR-10-C (mean) | f+ETS |" in card
    monkeypatch.setattr(head, "metrics", {})  # nothing recorded: no pictures, the card says so
    monkeypatch.setattr(head, "reliability", {})
    assert card_figures(head.metrics, head.reliability) == {}
    head.save_pretrained(tmp_path / "bare")
    assert not any((tmp_path / "bare" / name).exists() for name in FIGURES)
    assert links((tmp_path / "bare" / "README.md").read_text()) == []


def test_without_matplotlib_the_card_has_no_pictures(evaluated, tmp_path, monkeypatch):
    head, _ = evaluated
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib raises ImportError
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    head.save_pretrained(tmp_path / "model")
    card = (tmp_path / "model" / "README.md").read_text()
    assert links(card) == [] and "| test | H |" in card and ".png" not in card
    assert not any((tmp_path / "model" / name).exists() for name in FIGURES)
