"""The CPU recipe and the main job on tiny 32 px data: f trains on uint8 batches (tensor augmentation), resumes
exactly, H fits, and f, f+TS and H are compared on clean and corrupted images with T from the recorded
held-out images. Nothing is timed here: the recipe's speed is measured in benchmarks/."""

import json

import numpy as np
import pytest
import timm
import torch
from helpers import make_images, write_parquet

from timm_introspect import DataError, IntrospectiveHead
from timm_introspect.data.augment import BatchAugment
from timm_introspect.data.images import load_images
from timm_introspect.jobs.main import run
from timm_introspect.jobs.robustness import calibration_images, summary_table
from timm_introspect.training.loop import Schedule
from timm_introspect.training.pipeline import train_backbone
from timm_introspect.training.recipes import SCHEDULES


@pytest.fixture(scope="module")
def tiny32(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny32") / "data"
    write_parquet(folder, "train", *make_images(60, 0, size=32))
    write_parquet(folder, "test", *make_images(30, 1, size=32))
    return folder


def recipe(epochs: int = 2) -> Schedule:
    return Schedule(**{**SCHEDULES["backbone-cpu"], "epochs": epochs, "lr": 0.05})


def test_recipe_architecture_is_registered_with_timm():
    model = timm.create_model("resnet10s_cifar", num_classes=10)
    assert model.pretrained_cfg["input_size"] == (3, 32, 32) and model.conv1[0].stride == (2, 2)
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)


def test_batch_augment_crops_and_flips_real_pixels():
    torch.manual_seed(0)
    images = torch.randint(0, 256, (64, 3, 32, 32), dtype=torch.uint8)
    augment = BatchAugment((0.5, 0.5, 0.5), (0.25, 0.25, 0.25), pad=4)
    plain = augment.eval()(images)
    assert torch.allclose(plain, (images.float() / 255 - 0.5) / 0.25, atol=1e-5)
    out = augment.train()(images)
    assert out.shape == plain.shape
    # every output image is a 32x32 window of its reflect-padded input, flipped or not
    padded = torch.nn.functional.pad(plain, (4, 4, 4, 4), mode="reflect")
    for i in range(8):
        windows = [padded[i, :, y:y + 32, x:x + 32] for y in range(9) for x in range(9)]
        assert any(torch.equal(out[i], w) or torch.equal(out[i], w.flip(2)) for w in windows)
    assert not torch.equal(out, plain)


class Interrupt(Exception):
    pass


def test_recipe_resumes_to_the_same_weights(tiny32, tmp_path):
    train = load_images(str(tiny32), "train")
    kwargs = dict(model_name="resnet10s_cifar", schedule=recipe(3), batch_size=16, seed=0, holdout=0.25,
                  channels_last=True)
    straight = train_backbone(train, tmp_path / "straight", **kwargs)
    info = json.loads((tmp_path / "straight" / "training.json").read_text())
    assert info["tensor_augment"] is True and info["images"] == 45

    def crash(epoch: int, step: int) -> None:
        if (epoch, step) == (1, 1):
            raise Interrupt

    with pytest.raises(Interrupt):
        train_backbone(train, tmp_path / "resumed", on_step=crash, **kwargs)
    resumed = train_backbone(train, tmp_path / "resumed", **kwargs)
    for (name, a), (_, b) in zip(straight.state_dict().items(), resumed.state_dict().items(), strict=True):
        assert torch.equal(a, b), name


def test_main_job_compares_f_f_ts_and_h_on_clean_and_corrupted_images(tiny32, tmp_path):
    train, test = load_images(str(tiny32), "train"), load_images(str(tiny32), "test")
    head_schedule = Schedule(**{**SCHEDULES["head-cpu"], "epochs": 2})
    result = run(train, test, tmp_path, "resnet10s_cifar", True, recipe(), head_schedule, batch_size=16, seed=0,
                 holdout=0.25, corruptions=("gaussian_noise", "contrast"), corruption_images=12)
    bench = result["robustness"]
    assert bench["clean"]["f"]["count"] == 30 and bench["images_per_set"] == 12
    assert [(r["corruption"], r["severity"]) for r in bench["corrupted"]] == [
        (c, s) for c in ("gaussian_noise", "contrast") for s in range(1, 6)]
    assert bench["calibration_images"] == 15 and bench["temperature"] > 0
    assert set(bench["mean_corrupted"]) == {"f", "f+TS", "f+ETS", "DAC+TS", "DAC+ETS", "H"}
    assert "mean_severity_5" in bench
    table = (tmp_path / "results.md").read_text()
    assert table.strip() == summary_table(bench) and "| severity 5 (mean) | f+TS |" in table
    assert all((tmp_path / name).is_file() for name in result["plots"])
    # f+TS has f's accuracy (T rescales logits) and T came from images f and H never saw
    assert bench["clean"]["f+TS"]["accuracy"] == bench["clean"]["f"]["accuracy"]
    head = IntrospectiveHead.from_pretrained(tmp_path / "introspective")
    assert head.calibration == {"data": str(tiny32), "split": "train", "limit": None, "seed": 0, "holdout": 0.25}
    held = calibration_images(head)
    f_train = train.split_holdout(0.25, 0)[0]
    assert len(held) == 15 and len(f_train) == result["train_images"] == 45
    held_pixels = {a.tobytes() for a in held.arrays()[0]}
    assert not held_pixels & {a.tobytes() for a in f_train.arrays()[0]}
    assert "CIFAR-10-C (mean)" in (tmp_path / "introspective" / "README.md").read_text()
    # T and the OOD threshold are stored for predictions; the card shows the clean reliability diagrams
    assert head.fitted_calibration["temperature"] == bench["temperature"] and head.fitted_calibration["images"] == 15
    assert set(head.reliability["clean"]) == set(bench["clean"])
    assert "](reliability.png)" in (tmp_path / "introspective" / "README.md").read_text()


def test_temperature_scaling_refuses_a_model_without_held_out_images(tiny32, tmp_path):
    head = IntrospectiveHead.wrap(timm.create_model("resnet10s_cifar", num_classes=3), loss="mse")
    with pytest.raises(DataError, match="records no held-out images"):
        calibration_images(head)
    assert np.isfinite(head.target_value.item())


def test_benchmark_without_matplotlib_stops_before_any_work(tmp_path):
    """Issue 15.14: a missing optional dependency is reported before minutes of work, not after."""
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).parents[2] / "benchmarks" / "cifar10c.py"
    code = ("import runpy, sys; sys.modules['matplotlib'] = None; "
            f"sys.argv = ['cifar10c.py', '--model', 'no-such-model', '--out', {str(tmp_path / 'out')!r}]; "
            f"runpy.run_path({str(script)!r}, run_name='__main__')")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0 and "pip install 'timm-introspect[bench]'" in proc.stderr, proc.stderr[-2000:]
    assert "no-such-model" not in proc.stderr  # it never got as far as loading the model
