"""Issue 22's last cases in the applications: every PNG is written through the package's safe writer (a link planted
at its name is refused, never written through; the file has a fresh file's mode), and a model given as a local
folder that does not exist is reported as such, not as a network problem."""

from __future__ import annotations

import stat
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import timm_model

from timm_introspect import CheckpointError, InvalidArgumentError
from timm_introspect.io.checkpoint import default_file_mode

pytest.importorskip("matplotlib")


def _corruption_plots(out: Path, name: str) -> None:
    from timm_introspect.jobs.plots import corruption_plots

    metrics = {"accuracy": 0.5, "ece": 0.1}
    sets = [{"corruption": c, "severity": s, "f": metrics, "f+TS": metrics, "H": metrics}
            for c in ("fog", "snow") for s in (1, 2)]
    out.mkdir(exist_ok=True)
    corruption_plots({"corrupted": sets}, out)


def _ood_plots(out: Path, name: str) -> None:
    from timm_introspect.apps.ood.report import ood_plots

    rng = np.random.default_rng(0)
    scores = {label: rng.normal(size=20) for label in ("msp (f)", "energy (H)")}
    ood_plots({"scores": {"clean": {"id": scores, "noise": {k: v + 1 for k, v in scores.items()}}}}, out)


def _explanation_figure(out: Path, name: str) -> None:
    from timm_introspect.apps.explain import Explainer
    from timm_introspect.apps.explain.figure import explanation_figure

    x = torch.rand(1, 3, 64, 64, dtype=torch.float64)
    result = Explainer(timm_model("resnet18"))(x)
    explanation_figure(result, 0, x[0], out / name)


#: writer -> (how to call it, the name of one PNG it writes in out)
WRITERS = {"corruption_plots": (_corruption_plots, "accuracy_vs_ece.png"),
           "ood_plots": (_ood_plots, "plots/hist_clean_noise.png"),
           "explanation_figure": (_explanation_figure, "cat.png")}


@pytest.mark.parametrize("writer", list(WRITERS))
def test_pngs_are_written_safely_with_a_fresh_files_mode(tmp_path, writer):
    call, name = WRITERS[writer]
    call(tmp_path / "out", name)
    written = tmp_path / "out" / name
    assert written.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert stat.S_IMODE(written.stat().st_mode) == default_file_mode()
    assert not [p for p in (tmp_path / "out").rglob(".*")]  # no partial file left

    outside = tmp_path / "outside.png"
    outside.write_bytes(b"not yours")
    trap = tmp_path / "trap"
    (trap / name).parent.mkdir(parents=True, exist_ok=True)
    (trap / name).symlink_to(outside)
    with pytest.raises(InvalidArgumentError, match="symbolic link"):
        call(trap, name)
    assert outside.read_bytes() == b"not yours"


# --- 8. a missing local folder is said not to exist ---------------------------------------------------------------

@pytest.fixture
def offline(monkeypatch, tmp_path):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "empty-cache"))


@pytest.mark.parametrize("spec", ["runs/missing", "./runs/missing", "hf-hub:./runs/missing", "/no/such/folder"])
def test_explain_says_a_missing_folder_does_not_exist(offline, tmp_path, monkeypatch, spec):
    from timm_introspect.apps.explain.job import load_classifier

    monkeypatch.chdir(tmp_path)
    with pytest.raises(CheckpointError, match="does not exist") as err:
        load_classifier(spec)
    assert "offline?" not in str(err.value)
    assert (str(tmp_path / "runs" / "missing") if "runs" in spec else "/no/such/folder") in str(err.value)


def test_a_hub_id_out_of_reach_is_said_to_be_offline(offline):
    """Written as a Hub id (hf-hub:), the model is only looked up on the Hub: no folder is mentioned."""
    from timm_introspect.apps.explain.job import load_classifier

    with pytest.raises(CheckpointError, match=r"not in the local cache and the Hub cannot be reached \(offline\?\)") \
            as err:
        load_classifier("hf-hub:owner/model")
    assert "folder 'owner/model'" not in str(err.value)


@pytest.mark.parametrize("spec", ["runs/missing", "./runs/missing"])
def test_loading_a_model_from_a_missing_folder_says_it_does_not_exist(offline, tmp_path, monkeypatch, spec):
    from timm_introspect import IntrospectiveHead
    from timm_introspect.io.backbones import resolve_backbone

    monkeypatch.chdir(tmp_path)
    for load in (IntrospectiveHead.from_pretrained, resolve_backbone):
        with pytest.raises(CheckpointError, match="does not exist"):
            load(spec)
