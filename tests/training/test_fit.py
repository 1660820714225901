"""The whole workflow through the public API, from loaders a timm user already has (training/fit.py,
training/evaluate.py): train H, evaluate f, f+TS and H, save and reload; one process and two (gloo)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import safetensors.torch
import timm
import torch
from PIL import Image
from torch.utils.data import DataLoader, TensorDataset

import timm_introspect
from timm_introspect import IntrospectiveHead, Schedule, evaluate_head, train_head

SCHEDULE = Schedule(epochs=2, lr=0.1, weight_decay=5e-3, kind="onecycle")


def _model() -> torch.nn.Module:
    torch.manual_seed(0)
    return timm.create_model("test_resnet", num_classes=3).eval()


def _tensors(n: int, seed: int) -> TensorDataset:
    g = torch.Generator().manual_seed(seed)
    return TensorDataset(torch.randn(n, 3, 32, 32, generator=g), torch.arange(n) % 3)


def _train(out_dir: Path, batch_size: int = 16) -> IntrospectiveHead:
    torch.manual_seed(1)  # H's initialization
    head = IntrospectiveHead.wrap(_model(), loss="mse-M", scale="standard")
    return train_head(head, DataLoader(_tensors(48, 0), batch_size=batch_size), out_dir=out_dir, schedule=SCHEDULE,
                      batch_size=batch_size)


def test_quick_start_from_a_tensor_dataset(tmp_path):
    # the README's quick start: wrap, train H on my loader, evaluate on mine, save and load back
    model = _model()
    head = IntrospectiveHead.wrap(model, loss="mse-M", scale="standard")
    before = [p.detach().clone() for p in head.introspective_net.parameters()]
    train_head(head, DataLoader(_tensors(48, 0), batch_size=16), schedule=SCHEDULE)
    metrics = evaluate_head(head, DataLoader(_tensors(24, 1), batch_size=16),
                            calibration=DataLoader(_tensors(24, 2), batch_size=16), split="test")
    head.save_pretrained(tmp_path / "model")

    assert any(not torch.equal(a, b) for a, b in zip(before, head.introspective_net.parameters(), strict=True))
    assert set(metrics) == {"f", "f+TS", "H"} and metrics["H"]["count"] == 24
    assert head.metrics["test"] == metrics  # recorded for the model card
    assert "f+TS" in (tmp_path / "model" / "README.md").read_text()
    loaded = IntrospectiveHead.from_pretrained(tmp_path / "model")
    x = _tensors(4, 3).tensors[0]
    assert torch.equal(loaded(x).logits, head(x).logits)
    assert loaded.metrics["test"]["H"] == pytest.approx(metrics["H"])
    # f alone, same call
    assert evaluate_head(model, DataLoader(_tensors(24, 1), batch_size=16))["f"] == pytest.approx(metrics["f"])


def test_statistics_are_those_of_fit_statistics(tmp_path):
    head = _train(tmp_path / "h")
    direct = IntrospectiveHead.wrap(_model(), loss="mse-M", scale="standard")
    direct.fit(DataLoader(_tensors(48, 0), batch_size=16), progress=False)
    assert torch.equal(head.target_value, direct.target_value)  # bitwise
    assert torch.equal(head.scaler.sum, direct.scaler.sum) and torch.equal(head.scaler.count, direct.scaler.count)


def test_resumes_and_refuses_reshuffled_data(tmp_path):
    head = _train(tmp_path / "h")
    again = _train(tmp_path / "h")  # every epoch checkpointed: the second call resumes at the end
    for a, b in zip(head.introspective_net.parameters(), again.introspective_net.parameters(), strict=True):
        assert torch.equal(a, b)
    shuffled = DataLoader(_tensors(48, 0), batch_size=16, shuffle=True)
    with pytest.raises(timm_introspect.DataError, match="same images every time it is read"):
        train_head(IntrospectiveHead.wrap(_model(), loss="mse-M"), shuffled, out_dir=tmp_path / "s", schedule=SCHEDULE)


def test_from_an_image_folder(tmp_path):
    torchvision = pytest.importorskip("torchvision")
    rng = np.random.default_rng(0)
    for split, n in (("train", 12), ("test", 6)):
        for c in ("cat", "dog", "frog"):
            folder = tmp_path / split / c
            folder.mkdir(parents=True)
            for i in range(n // 3):
                Image.fromarray(rng.integers(0, 255, (40, 40, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    model = _model()
    transform = timm.data.create_transform(**timm.data.resolve_model_data_config(model))
    train = torchvision.datasets.ImageFolder(str(tmp_path / "train"), transform=transform)
    test = torchvision.datasets.ImageFolder(str(tmp_path / "test"), transform=transform)
    head = IntrospectiveHead.wrap(model, loss="mse-M", label_names=train.classes)
    train_head(head, DataLoader(train, batch_size=4), out_dir=tmp_path / "run", schedule=SCHEDULE, batch_size=4)
    metrics = evaluate_head(head, DataLoader(test, batch_size=4), split="test")
    head.save_pretrained(tmp_path / "model")
    loaded = IntrospectiveHead.from_pretrained(tmp_path / "model")
    assert metrics["H"]["count"] == 6 and loaded.label_names == ["cat", "dog", "frog"]
    x = next(iter(DataLoader(test, batch_size=6)))[0]
    assert torch.equal(loaded(x).logits, head(x).logits)


def test_two_processes_train_the_same_h(tmp_path):
    # one process with batches of 16 and two (gloo) with 8 each: every step sees the same 16 images
    one = _train(tmp_path / "one", batch_size=16)
    env = {**os.environ, "ACCELERATE_USE_CPU": "1", "OMP_NUM_THREADS": "1"}
    code = ("import sys, torch, safetensors.torch; sys.path.insert(0, sys.argv[1]); from test_fit import _train; "
            "from accelerate import PartialState; "
            "h = _train(__import__('pathlib').Path(sys.argv[2]), batch_size=8); "
            "PartialState().is_main_process and safetensors.torch.save_file("
            "{k: v.contiguous() for k, v in h.state_dict().items() if not k.startswith('model.')}, sys.argv[3])")
    script = tmp_path / "two.py"
    script.write_text(code)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", str(script),
           str(Path(__file__).parent), str(tmp_path / "two"), str(tmp_path / "two.safetensors")]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    two = safetensors.torch.load_file(str(tmp_path / "two.safetensors"))
    ours = {k: v for k, v in one.state_dict().items() if not k.startswith("model.")}
    assert set(two) == set(ours)
    for k, v in ours.items():
        assert torch.allclose(two[k].to(v.dtype), v, rtol=1e-4, atol=1e-5), k


def test_the_readme_quick_start_runs(hub, tmp_path, monkeypatch):
    # the README's quick start, as written, on a small timm model and loaders, pushed to a local Hub server
    readme = (Path(__file__).parents[2] / "README.md").read_text()
    snippet = readme.split("## Quick start", 1)[1].split("```python\n", 1)[1].split("```", 1)[0]
    monkeypatch.chdir(tmp_path)
    scope = {"model": _model(), "train_loader": DataLoader(_tensors(24, 0), batch_size=12),
             "test_loader": DataLoader(_tensors(12, 1), batch_size=12),
             "heldout_loader": DataLoader(_tensors(12, 2), batch_size=12)}
    exec(compile(snippet, "README.md", "exec"), scope)  # noqa: S102
    head = scope["head"]
    assert (tmp_path / "runs" / "h" / "checkpoints").is_dir() and set(head.metrics["test"]) == {"f", "f+TS", "H"}
    loaded = IntrospectiveHead.from_pretrained("hf-hub:you/resnet18-introspective")
    x = _tensors(3, 4).tensors[0]
    assert torch.equal(loaded(x).logits, head(x).logits)
    assert loaded.metrics["test"]["H"] == pytest.approx(head.metrics["test"]["H"])
