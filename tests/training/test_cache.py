"""The feature cache streams r_x to a safetensors file, reads it memory-mapped, and resumes an extraction.

The last test fits a factored H on a 1,000-class model in a fresh process and checks that its memory
never comes near the materialized r_x (n N d floats).
"""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import safetensors.torch
import timm
import torch
from accelerate import Accelerator
from helpers import make_images, write_parquet

from timm_introspect import IntrospectiveHead
from timm_introspect.data.images import load_images
from timm_introspect.training import cache as cache_module
from timm_introspect.training.cache import extract_features, open_mapped


@pytest.fixture(scope="module")
def train(tmp_path_factory):
    folder = tmp_path_factory.mktemp("data")
    write_parquet(folder, "train", *make_images(40, 0))
    return load_images(str(folder), "train")


def make_head(loss: str = "mse-M") -> IntrospectiveHead:
    torch.manual_seed(0)
    return IntrospectiveHead.wrap(timm.create_model("test_resnet", num_classes=3).eval(), loss=loss)


def mapped_files() -> set[str]:
    """Paths of the files this process has memory-mapped (Linux)."""
    return {line.split(maxsplit=5)[5].strip() for line in Path("/proc/self/maps").read_text().splitlines()
            if len(line.split(maxsplit=5)) == 6}


@pytest.mark.parametrize("factored", [False, True])
def test_the_cache_is_a_safetensors_file_read_back_mapped(train, tmp_path, factored):
    head = make_head()
    features, labels, folder = extract_features(Accelerator(), head, train, tmp_path, batch_size=16,
                                                factored=factored)
    path = folder / "features.safetensors"
    # any safetensors reader opens the streamed file, and finds what the cache returned
    saved = safetensors.torch.load_file(str(path))
    assert torch.equal(saved["labels"], train.labels()) and torch.equal(labels, saved["labels"])
    if factored:
        ((delta, h),) = features.values()
        assert delta.shape == (40, 1, 3) and h.shape == (40, 1, head.classifiers[0].weight.shape[1])
        assert torch.equal(delta, saved["delta.0"]) and torch.equal(h, saved["h.0"])
    else:
        assert features.shape == (40, head.num_features) and torch.equal(features, saved["features"])
    # nothing of it was read into memory: the tensors are views of the file's mapping
    assert str(path.resolve()) in mapped_files()
    assert not any(p.name.endswith(".partial") for p in tmp_path.iterdir())  # renamed into place
    # and the entry is reused as it is
    again, _, folder_again = extract_features(Accelerator(), make_head(), train, tmp_path, factored=factored)
    assert folder_again == folder
    assert torch.equal(again if not factored else again[next(iter(again))][1],
                       features if not factored else features[next(iter(features))][1])


def test_features_equal_the_head_on_the_same_batch(train, tmp_path):
    from timm_introspect.data.images import make_loader

    head = make_head(loss="ce")
    flat, _, _ = extract_features(Accelerator(), head, train, tmp_path, batch_size=16)
    x, _ = next(iter(make_loader(train, head.model, False, 40)))
    with torch.no_grad():
        _, direct = head.flat_features(x)
    assert torch.allclose(flat, direct, rtol=1e-5, atol=1e-7)


def test_an_interrupted_extraction_resumes_where_it_stopped(train, tmp_path, monkeypatch, caplog):
    monkeypatch.setattr(cache_module, "_PROGRESS_EVERY_S", 0.0)  # record progress after every batch
    reference, ref_labels, _ = extract_features(Accelerator(), make_head(), train, tmp_path / "whole", batch_size=8,
                                                factored=True)
    head, calls = make_head(), []
    real = head.introspect

    def crash_on_the_third_batch(x):
        calls.append(len(x))
        if len(calls) == 3:
            raise KeyboardInterrupt  # the user stops the run (or the machine goes away)
        return real(x)

    monkeypatch.setattr(head, "introspect", crash_on_the_third_batch)
    with pytest.raises(KeyboardInterrupt):
        extract_features(Accelerator(), head, train, tmp_path / "cut", batch_size=8, factored=True)
    (partial,) = (tmp_path / "cut").glob(".*.partial")
    assert json.loads((partial / "progress.json").read_text())["rows"] == 16
    assert not any((tmp_path / "cut").glob("*/meta.json"))  # no entry until it is complete

    head, calls = make_head(), []
    real = head.introspect
    monkeypatch.setattr(head, "introspect", lambda x: calls.append(len(x)) or real(x))
    with caplog.at_level("INFO", logger="timm_introspect"):
        resumed, labels, _ = extract_features(Accelerator(), head, train, tmp_path / "cut", batch_size=8,
                                              factored=True)
    assert "resuming the extraction at image 16/40" in caplog.text
    assert calls == [8, 8, 8]  # only the 24 images not yet written
    assert torch.equal(labels, ref_labels)
    for name, (delta, h) in reference.items():
        assert torch.equal(resumed[name][0], delta) and torch.equal(resumed[name][1], h)


def test_a_damaged_cache_file_is_refused_and_rebuilt(train, tmp_path, caplog):
    features, _, folder = extract_features(Accelerator(), make_head(), train, tmp_path, batch_size=16)
    expected = features.clone()
    path = folder / "features.safetensors"
    del features
    with open(path, "r+b") as fh:  # cut the file short
        fh.truncate(path.stat().st_size - 100)
    with pytest.raises(Exception, match="not a valid safetensors file"):
        open_mapped(path)
    rebuilt, _, _ = extract_features(Accelerator(), make_head(), train, tmp_path, batch_size=16)
    assert "damaged" in caplog.text
    assert torch.equal(rebuilt, expected)


def test_a_factored_fit_on_1000_classes_never_materializes_rx(tmp_path):
    """resnet18 with 1,000 classes (at 64 px, its data config says so): r_x of 512 images would be 512 x 1000 x
    512 floats (1 GiB); the factored cache holds (1000 + 512) floats an image and the fit's peak memory grows by
    far less than r_x's size."""
    import datasets

    names = [f"class{i:03d}" for i in range(1000)]
    images, _ = make_images(512, 0, size=32)
    labels = [(7 * i) % 1000 for i in range(512)]
    write_parquet(tmp_path / "data", "train", images, labels, label_names=names)
    assert datasets.load_dataset(str(tmp_path / "data"), split="train").features["label"].num_classes == 1000
    script = textwrap.dedent("""
        import json, resource, sys
        import timm, torch
        from timm_introspect.data.images import load_images, make_loader
        from timm_introspect.training.pipeline import fit_head
        from timm_introspect.training.loop import Schedule

        def peak_mb():
            return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

        torch.manual_seed(0)
        f = timm.create_model("resnet18", num_classes=1000, pretrained_cfg_overlay={"input_size": (3, 64, 64)})
        train = load_images(sys.argv[1], "train")
        x, _ = next(iter(make_loader(train, f.eval(), False, 32)))
        assert x.shape == (32, 3, 64, 64), x.shape  # the model's own preprocessing
        with torch.no_grad():
            f(x), f(x)  # the forward's own working memory, before the baseline
        before = peak_mb()
        head = fit_head(f, train, sys.argv[2], loss="ce", net="factorized", batch_size=32,
                        schedule=Schedule(epochs=1, lr=0.01))
        print(json.dumps({"before": before, "after": peak_mb()}))
    """)
    env = {**os.environ, "OMP_NUM_THREADS": "2"}
    proc = subprocess.run([sys.executable, "-c", script, str(tmp_path / "data"), str(tmp_path / "h")], env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    peaks = json.loads(proc.stdout.strip().splitlines()[-1])
    materialized_mb = 512 * 1000 * 512 * 4 / 2**20
    assert peaks["after"] - peaks["before"] < materialized_mb / 8, peaks
    (entry,) = [p for p in (tmp_path / "h" / "feature-cache").iterdir() if (p / "meta.json").is_file()]
    stored = safetensors.torch.load_file(str(entry / "features.safetensors"))
    assert sorted(stored) == ["delta.0", "h.0", "labels"]
    assert stored["delta.0"].shape == (512, 1, 1000) and stored["h.0"].shape == (512, 1, 512)
    saved = IntrospectiveHead.from_pretrained(tmp_path / "h")  # the fitted model came out whole
    assert saved.num_classes == 1000 and type(saved.introspective_net).__name__ == "FactorizedMLP"
