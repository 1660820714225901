"""The main jobs on small data the tests build: datasets in, f trained, H fitted on cached r_x, evaluated.

Covers the feature cache (reuse and invalidation), resume-equals-uninterrupted, two processes, and
bad datasets.
"""

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import datasets
import pytest
import safetensors.torch
import torch
from helpers import CLASSES, make_images, write_parquet

from timm_introspect import DataError, IntrospectiveHead
from timm_introspect.data.images import load_images
from timm_introspect.training.loop import Schedule
from timm_introspect.training.pipeline import evaluate, fit_head, load_backbone, train_backbone


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("tiny") / "data"
    write_parquet(folder, "train", *make_images(48, 0))
    write_parquet(folder, "test", *make_images(24, 1))
    return folder


FAST = dict(batch_size=16, seed=0)


def backbone_schedule(epochs=2):
    return Schedule(epochs=epochs, lr=0.05, kind="onecycle")


def head_schedule(epochs=3):
    return Schedule(epochs=epochs, lr=0.1, weight_decay=5e-3, kind="onecycle")


@pytest.fixture(scope="module")
def backbone_dir(tiny, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("f")
    train = load_images(str(tiny), "train")
    train_backbone(train, out, "test_resnet", cifar_stem=True, schedule=backbone_schedule(), **FAST)
    return out


def test_loads_parquet_folder_with_columns_and_names(tiny):
    train = load_images(str(tiny), "train")
    assert (train.image_column, train.label_column, train.label_names) == ("img", "label", CLASSES)
    assert len(train) == 48 and train.num_classes == 3
    subset = load_images(str(tiny), "train", limit=10, seed=1)
    assert len(subset) == 10 and set(subset.labels().tolist()) <= {0, 1, 2}


def test_train_fit_evaluate_end_to_end(tiny, backbone_dir, tmp_path):
    assert {"config.json", "model.safetensors", "training.json"} <= {p.name for p in backbone_dir.iterdir()}
    backbone = load_backbone(backbone_dir)
    assert backbone.pretrained_cfg["architecture"] == "test_resnet_cifar" and backbone.num_classes == 3
    train, test = load_images(str(tiny), "train"), load_images(str(tiny), "test")
    head = fit_head(backbone, train, tmp_path / "h", loss="mse-M", schedule=head_schedule(), **FAST)
    assert head.label_names == CLASSES and not torch.isnan(head.target_value)
    loaded = IntrospectiveHead.from_pretrained(tmp_path / "h")
    metrics = evaluate(loaded, test, batch_size=8)
    assert set(metrics) == {"f", "H"}
    for values in metrics.values():
        assert values["count"] == 24
        assert 0 <= values["accuracy"] <= 1 and 0 <= values["ece"] <= 1 and values["nll"] > 0
    # the colour task is easy: f learns it in two short epochs
    assert metrics["f"]["accuracy"] > 0.5


def cache_dirs(folder: Path) -> set[str]:
    return {p.name for p in folder.iterdir() if (p / "meta.json").is_file()}


def test_feature_cache_is_reused_and_invalidated(tiny, backbone_dir, tmp_path, caplog):
    cache = tmp_path / "cache"
    train = load_images(str(tiny), "train")
    fit_head(load_backbone(backbone_dir), train, tmp_path / "a", loss="mse", schedule=head_schedule(1),
             cache_dir=cache, **FAST)
    (first,) = cache_dirs(cache)
    stamp = (cache / first / "features.safetensors").stat().st_mtime_ns
    with caplog.at_level("INFO", logger="timm_introspect"):
        fit_head(load_backbone(backbone_dir), train, tmp_path / "b", loss="mse", schedule=head_schedule(1),
                 cache_dir=cache, **FAST)
    assert "reusing cached features" in caplog.text
    assert cache_dirs(cache) == {first} and (cache / first / "features.safetensors").stat().st_mtime_ns == stamp

    # another loss, other weights of f, other data: each a new cache entry, never the stale one
    fit_head(load_backbone(backbone_dir), train, tmp_path / "c", loss="ce", schedule=head_schedule(1),
             cache_dir=cache, **FAST)
    assert len(cache_dirs(cache)) == 2
    changed = load_backbone(backbone_dir)
    with torch.no_grad():
        changed.fc.weight.mul_(1.01)
    fit_head(changed, train, tmp_path / "d", loss="mse", schedule=head_schedule(1), cache_dir=cache, **FAST)
    assert len(cache_dirs(cache)) == 3
    fit_head(load_backbone(backbone_dir), load_images(str(tiny), "train", limit=30), tmp_path / "e", loss="mse",
             schedule=head_schedule(1), cache_dir=cache, **FAST)
    assert len(cache_dirs(cache)) == 4


class Interrupt(Exception):
    pass


def test_interrupted_fit_resumes_to_the_same_weights(tiny, backbone_dir, tmp_path, caplog):
    train = load_images(str(tiny), "train")
    kwargs = dict(loss="mse-M", schedule=head_schedule(3), cache_dir=tmp_path / "cache", **FAST)
    straight = fit_head(load_backbone(backbone_dir), train, tmp_path / "straight", **kwargs)

    def crash(epoch: int, step: int) -> None:
        if (epoch, step) == (1, 1):  # in the middle of the second epoch
            raise Interrupt

    with pytest.raises(Interrupt):
        fit_head(load_backbone(backbone_dir), train, tmp_path / "resumed", on_step=crash, **kwargs)
    assert [p.name for p in (tmp_path / "resumed" / "checkpoints").iterdir()] == ["epoch-0001"]
    steps = []
    with caplog.at_level("INFO", logger="timm_introspect"):
        resumed = fit_head(load_backbone(backbone_dir), train, tmp_path / "resumed",
                           on_step=lambda epoch, step: steps.append(epoch), **kwargs)
    assert "resumed from" in caplog.text
    assert sorted(set(steps)) == [1, 2]  # epoch 0 was not trained again
    for (name, a), (_, b) in zip(straight.introspective_net.state_dict().items(),
                                 resumed.introspective_net.state_dict().items(), strict=False):
        assert torch.equal(a, b), name


def test_two_processes_count_every_image_once(tiny, backbone_dir, tmp_path):
    train, test = load_images(str(tiny), "train"), load_images(str(tiny), "test")
    fit_head(load_backbone(backbone_dir), train, tmp_path / "h", loss="mse", schedule=head_schedule(1), **FAST)
    single = evaluate(IntrospectiveHead.from_pretrained(tmp_path / "h"), test, batch_size=5)
    out = tmp_path / "metrics.json"
    env = {**os.environ, "ACCELERATE_USE_CPU": "1", "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "timm_introspect.cli", "evaluate", "--model", str(tmp_path / "h"), "--data", str(tiny),
           "--split", "test", "--batch-size", "5", "--out", str(out)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    both = json.loads(out.read_text())["metrics"]
    for who in ("f", "H"):
        assert both[who]["count"] == 24  # 24 images over 2 processes x batches of 5: padding is dropped
        for key in ("accuracy", "ece", "nll", "brier"):
            assert both[who][key] == pytest.approx(single[who][key], abs=1e-6)


# --- bad input -------------------------------------------------------------------------------------

def test_dataset_without_labels(tmp_path):
    write_parquet(tmp_path / "d", "train", make_images(6, 0)[0], labels=None)
    with pytest.raises(DataError, match="no label column.*label_column="):
        load_images(str(tmp_path / "d"), "train")


def test_missing_named_column(tiny):
    with pytest.raises(DataError, match=r"no column 'fine_label'.*\['img', 'label'\]"):
        load_images(str(tiny), "train", label_column="fine_label")


def test_labels_outside_model_classes(tmp_path, backbone_dir):
    images, labels = make_images(8, 0)
    write_parquet(tmp_path / "d", "test", images, [i % 5 for i in range(8)], label_names=list("abcde"))
    data = load_images(str(tmp_path / "d"), "test")
    head = IntrospectiveHead.wrap(load_backbone(backbone_dir), scale=False)
    with pytest.raises(DataError, match=r"labels in \[0, 4\], outside the model's 3 classes"):
        evaluate(head, data)


def test_class_names_and_labels_are_checked(tmp_path, backbone_dir):
    """Issue 15.5: permuted class names are refused (not scored against the wrong classes); an outlier or a
    negative integer label is refused before f is trained."""
    images, labels = make_images(9, 0)
    write_parquet(tmp_path / "p", "test", images, labels, label_names=["blue", "green", "red"])
    permuted = load_images(str(tmp_path / "p"), "test")
    assert load_backbone(backbone_dir).pretrained_cfg["label_names"] == CLASSES
    head = IntrospectiveHead.wrap(load_backbone(backbone_dir), scale=False)
    with pytest.raises(DataError, match="in another order"):
        evaluate(head, permuted)
    with pytest.raises(DataError, match="in another order"):
        fit_head(load_backbone(backbone_dir), permuted, tmp_path / "h", loss="mse", schedule=head_schedule(1), **FAST)
    int_features = datasets.Features({"img": datasets.Image(), "label": datasets.Value("int64")})
    for last, match in ((57, "no images of class"), (-1, "negative")):
        folder = tmp_path / f"ints{last}"
        folder.mkdir()
        ds = datasets.Dataset.from_dict({"img": images, "label": [0, 1, 2, 0, 1, 2, 0, 1, last]}, features=int_features)
        ds.to_parquet(str(folder / "train-00000-of-00001.parquet"))
        with pytest.raises(DataError, match=match):
            train_backbone(load_images(str(folder), "train"), tmp_path / "f", "test_resnet",
                           schedule=backbone_schedule(1), **FAST)


def test_grayscale_is_converted_for_an_rgb_model(tmp_path, backbone_dir):
    write_parquet(tmp_path / "g", "test", *make_images(6, 0, mode="L"))
    data = load_images(str(tmp_path / "g"), "test")
    head = IntrospectiveHead.wrap(load_backbone(backbone_dir), scale=False)
    metrics = evaluate(head, data, batch_size=4)  # documented conversion: gray -> RGB
    assert metrics["f"]["count"] == 6


def test_unreadable_image_is_named(tmp_path, backbone_dir):
    folder = tmp_path / "bad"
    folder.mkdir()
    images, labels = make_images(4, 0)
    rows = []
    for i, img in enumerate(images):
        buf = io.BytesIO()
        img.save(buf, format="PNG")
        data = buf.getvalue() if i != 2 else b"not an image at all"
        rows.append({"bytes": data, "path": f"img_{i}.png"})
    ds = datasets.Dataset.from_dict({"img": rows, "label": labels},
                                    features=datasets.Features({"img": datasets.Image(),
                                                                "label": datasets.ClassLabel(names=CLASSES)}))
    ds.to_parquet(str(folder / "test-00000-of-00001.parquet"))
    data = load_images(str(folder), "test")
    head = IntrospectiveHead.wrap(load_backbone(backbone_dir), scale=False)
    with pytest.raises(DataError, match="cannot read image 'img_2.png'"):
        evaluate(head, data, batch_size=4)


def test_image_folder_and_holdout(tmp_path):
    images, labels = make_images(12, 3)
    for i, (img, label) in enumerate(zip(images, labels, strict=False)):
        path = tmp_path / "folder" / "train" / CLASSES[label] / f"{i}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        img.save(path)
    data = load_images(str(tmp_path / "folder"), "train")
    assert data.label_names == sorted(CLASSES) and len(data) == 12
    rest, held = data.split_holdout(0.25, seed=0)
    assert (len(rest), len(held)) == (9, 3)
    again_rest, again_held = data.split_holdout(0.25, seed=0)
    assert again_held.labels().tolist() == held.labels().tolist()


def test_cli_train_fit_evaluate_with_holdout(tiny, tmp_path):
    from timm_introspect.cli import main

    common = ["--data", str(tiny), "--batch-size", "16", "--preset", "quick"]
    main(["train-backbone", *common, "--model", "test_resnet", "--epochs", "1", "--train-limit", "40",
          "--holdout", "0.25", "--out", str(tmp_path / "f")])
    info = json.loads((tmp_path / "f" / "training.json").read_text())
    assert info["images"] == 30 and info["holdout"] == 0.25
    main(["fit", *common, "--backbone", str(tmp_path / "f"), "--epochs", "1", "--train-limit", "40",
          "--use-holdout", "--loss", "ce", "--out", str(tmp_path / "h")])
    main(["evaluate", "--data", str(tiny), "--model", str(tmp_path / "h"), "--split", "test"])
    metrics = json.loads((tmp_path / "h" / "metrics-test.json").read_text())["metrics"]
    assert metrics["f"]["count"] == metrics["H"]["count"] == 24
    cached = [json.loads(p.read_text()) for p in (tmp_path / "h" / "feature-cache").glob("*/meta.json")]
    assert [c["count"] for c in cached] == [10]  # H saw the 10 held-out images only


def test_resume_with_other_settings_is_refused(tiny, backbone_dir, tmp_path):
    train = load_images(str(tiny), "train")
    fit_head(load_backbone(backbone_dir), train, tmp_path / "h", loss="mse", schedule=head_schedule(1), **FAST)
    with pytest.raises(ValueError, match="other settings.*new output folder"):
        fit_head(load_backbone(backbone_dir), train, tmp_path / "h", loss="mse", schedule=head_schedule(2),
                 batch_size=8, seed=0)


def test_holdout_needs_the_same_split(tiny, tmp_path):
    from timm_introspect.cli import main

    common = ["--data", str(tiny), "--batch-size", "16", "--preset", "quick"]
    main(["train-backbone", *common, "--arch", "test_resnet", "--epochs", "1", "--train-images", "40",
          "--holdout", "0.25", "--out", str(tmp_path / "f")])
    with pytest.raises(SystemExit, match="rebuild f's split exactly"):
        main(["fit", *common, "--backbone", str(tmp_path / "f"), "--epochs", "1", "--train-images", "30",
              "--use-holdout", "--out", str(tmp_path / "h")])


def _fit_statistics(backbone_dir, tiny, batch_size: int, loss: str = "mse-M") -> IntrospectiveHead:
    """M and the scale as IntrospectiveHead.fit estimates them on the images the pipeline sees."""
    from timm_introspect.data.images import make_loader

    model = load_backbone(backbone_dir)
    head = IntrospectiveHead.wrap(model, loss=loss)
    return head.fit(make_loader(load_images(str(tiny), "train"), model, False, batch_size), progress=False)


def test_head_fit_and_pipeline_agree_bitwise(tiny, backbone_dir, tmp_path):
    fitted = fit_head(load_backbone(backbone_dir), load_images(str(tiny), "train"), tmp_path / "h", loss="mse-M",
                      schedule=head_schedule(1), **FAST)
    direct = _fit_statistics(backbone_dir, tiny, batch_size=FAST["batch_size"])
    assert torch.equal(fitted.target_value, direct.target_value)  # bitwise
    assert torch.equal(fitted.scaler.scale, direct.scaler.scale) and fitted.scaler.scale.abs().sum() > 0


def test_two_process_fit(tiny, backbone_dir, tmp_path):
    env = {**os.environ, "ACCELERATE_USE_CPU": "1", "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "timm_introspect.cli", "fit", "--backbone", str(backbone_dir), "--data", str(tiny),
           "--preset", "quick", "--epochs", "2", "--batch-size", "8", "--loss", "mse-M", "--out", str(tmp_path / "h")]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    done = json.loads((tmp_path / "h" / "checkpoints" / "epoch-0002" / "done.json").read_text())
    assert done["run"]["processes"] == 2 and done["run"]["batches_per_epoch"] == 6  # 48 images / 8
    loaded = IntrospectiveHead.from_pretrained(tmp_path / "h")
    assert evaluate(loaded, load_images(str(tiny), "test"), batch_size=8)["H"]["count"] == 24
    # each process saw half the images; M and the scale are bitwise those of head.fit in one process. f's own
    # float32 results depend on the thread count, so that process runs single-threaded as each worker did.
    code = ("import sys, safetensors.torch; sys.path[:0] = [sys.argv[1], sys.argv[1] + '/..']; "
            "from test_pipeline import _fit_statistics; "
            "h = _fit_statistics(sys.argv[2], sys.argv[3], batch_size=8); "
            "safetensors.torch.save_file({'m': h.target_value, 'scale': h.scaler.scale}, sys.argv[4])")
    proc = subprocess.run([sys.executable, "-c", code, str(Path(__file__).parent), str(backbone_dir), str(tiny),
                           str(tmp_path / "direct.safetensors")], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    direct = safetensors.torch.load_file(str(tmp_path / "direct.safetensors"))
    assert torch.equal(loaded.target_value, direct["m"]) and torch.equal(loaded.scaler.scale, direct["scale"])


@pytest.mark.parametrize("net", ["factorized", "rankone"])
def test_fit_an_h_on_factors(tiny, backbone_dir, tmp_path, net):
    from accelerate import Accelerator

    from timm_introspect.nets.lowrank import FactorizedMLP, RankOneMLP
    from timm_introspect.training.cache import extract_features

    train, test = load_images(str(tiny), "train"), load_images(str(tiny), "test")
    cache = tmp_path / "cache"
    head = fit_head(load_backbone(backbone_dir), train, tmp_path / "h", loss="mse", schedule=head_schedule(),
                    cache_dir=cache, net=net, **FAST)
    assert isinstance(head.introspective_net, {"factorized": FactorizedMLP, "rankone": RankOneMLP}[net])
    (entry,) = [p for p in cache.iterdir() if (p / "meta.json").is_file()]
    meta = json.loads((entry / "meta.json").read_text())
    assert meta["factored"] is True
    # what was cached is r_x in factored form: delta h^T equals the materialized r_x of the MLP's cache
    factors, labels, _ = extract_features(Accelerator(), head, train, cache, batch_size=16, factored=True)
    (delta, h), = factors.values()
    flat, labels_flat, _ = extract_features(Accelerator(), head, train, cache, batch_size=16)
    assert delta.shape == (48, 1, 3) and torch.equal(labels, labels_flat)
    assert torch.allclose(torch.einsum("bsn,bsd->bnd", delta, h).flatten(1), flat, rtol=1e-5, atol=1e-6)
    # saved and loaded as such; outputs equal
    loaded = IntrospectiveHead.from_pretrained(tmp_path / "h")
    assert type(loaded.introspective_net) is type(head.introspective_net)
    x = torch.randn(4, 3, 16, 16)
    assert torch.allclose(loaded(x).logits, head.eval()(x).logits, atol=1e-6)
    metrics = evaluate(loaded, test, batch_size=8)
    assert metrics["H"]["count"] == 24 and metrics["f"]["count"] == 24
    with pytest.raises(ValueError, match="no H is registered as 'big'"):
        fit_head(load_backbone(backbone_dir), train, tmp_path / "x", net="big", schedule=head_schedule(), **FAST)


def test_a_registered_toy_h_trains_saves_loads_and_evaluates(tiny, backbone_dir, tmp_path):
    from torch import nn

    from timm_introspect import list_nets, register_net

    @register_net("toy-linear")
    class ToyLinear(nn.Linear):  # the one edit: a decorated class
        def __init__(self, in_features: int, num_classes: int, scale: float = 1.0):
            super().__init__(in_features, num_classes)
            self.scale = scale

        def forward(self, x):
            return super().forward(x) * self.scale

        def config(self):
            return {"in_features": self.in_features, "num_classes": self.out_features, "scale": self.scale}

    assert "toy-linear" in list_nets()
    train, test = load_images(str(tiny), "train"), load_images(str(tiny), "test")
    head = fit_head(load_backbone(backbone_dir), train, tmp_path / "h", loss="ce", schedule=head_schedule(),
                    net="toy-linear", **FAST)
    assert type(head.introspective_net) is ToyLinear and head.introspective_net.in_features == 3 * 96
    saved = json.loads((tmp_path / "h" / "introspection_config.json").read_text())["introspective_net"]
    assert saved == {"name": "toy-linear", "in_features": 288, "num_classes": 3, "scale": 1.0}
    assert "ToyLinear (in_features=288, num_classes=3, scale=1.0)" in (tmp_path / "h" / "README.md").read_text()
    loaded = IntrospectiveHead.from_pretrained(tmp_path / "h")
    x = torch.randn(4, 3, 16, 16)
    assert type(loaded.introspective_net) is ToyLinear and torch.equal(loaded(x).logits, head.eval()(x).logits)
    metrics = evaluate(loaded, test, batch_size=8)
    assert metrics["H"]["count"] == 24
    from timm_introspect.cli import build_parser  # the CLI offers it too

    args = build_parser().parse_args(["fit", "--backbone", "b", "--out", "o", "--net", "toy-linear"])
    assert args.net == "toy-linear"


def test_a_second_run_on_the_same_folder_is_refused_and_a_killed_one_leaves_no_lock(tiny, backbone_dir, tmp_path):
    """Issue 15.2: two runs writing one --out at once; a run killed with SIGKILL does not block the next."""
    from timm_introspect import RunLockedError
    from timm_introspect.training.loop import exclusive_run

    train = load_images(str(tiny), "train")
    with exclusive_run(tmp_path / "h"):  # another run holds the folder
        with pytest.raises(RunLockedError, match="another run is writing to"):
            fit_head(load_backbone(backbone_dir), train, tmp_path / "h", loss="mse", schedule=head_schedule(1), **FAST)
    assert not (tmp_path / "h" / "model.safetensors").exists()
    code = ("import os, sys, time; from timm_introspect.training.loop import exclusive_run\n"
            "with exclusive_run(sys.argv[1]):\n    print('locked', flush=True); time.sleep(600)\n")
    holder = subprocess.Popen([sys.executable, "-c", code, str(tmp_path / "h")], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(RunLockedError):
            fit_head(load_backbone(backbone_dir), train, tmp_path / "h", loss="mse", schedule=head_schedule(1), **FAST)
    finally:
        holder.kill()  # SIGKILL: no cleanup runs
        holder.wait()
    fit_head(load_backbone(backbone_dir), train, tmp_path / "h", loss="mse", schedule=head_schedule(1), **FAST)
    assert (tmp_path / "h" / "introspection.safetensors").is_file()


@pytest.mark.parametrize("bad", [["--train-images", "0"], ["--train-limit", "0"], ["--batch-size", "0"],
                                 ["--batch-size", "-4"], ["--epochs", "0"], ["--lr", "nan"], ["--lr", "-0.1"],
                                 ["--workers", "-1"], ["--holdout", "1.5"]])
def test_cli_rejects_invalid_numbers(bad, capsys):
    """Issue 15.8: 0 no longer silently means the preset's value; negatives do not crash deep in a sampler (also
    under an old spelling, --train-limit)."""
    from timm_introspect.cli import build_parser

    with pytest.raises(SystemExit):
        build_parser().parse_args(["train-backbone", "--out", "o", *bad])
    assert "must be" in capsys.readouterr().err


def test_non_finite_data_and_diverged_training_are_refused(tiny, backbone_dir, tmp_path):
    """Issue 15.6: a NaN image cannot silently disable scaling; a diverged H is never saved."""
    from timm_introspect import DivergedError

    head = IntrospectiveHead.wrap(load_backbone(backbone_dir), loss="mse")
    x = torch.randn(4, 3, 16, 16)
    x[2, 0, 0, 0] = float("nan")
    with pytest.raises(DataError, match="1 of 4 images give non-finite"):
        head.fit([x], progress=False)
    head_m = IntrospectiveHead.wrap(load_backbone(backbone_dir), loss="mse-M")
    with pytest.raises(DataError, match="non-finite maximum logit"):
        head_m.fit([x], progress=False)
    train = load_images(str(tiny), "train")
    with pytest.raises(DivergedError, match=r"epoch \d+, step \d+"):
        fit_head(load_backbone(backbone_dir), train, tmp_path / "h", loss="mse",
                 schedule=Schedule(epochs=3, lr=1e30, kind="onecycle"), **FAST)
    assert not (tmp_path / "h" / "introspection.safetensors").exists()


@pytest.mark.parametrize("damage", ["truncate", "meta", "width", "rows"])
def test_a_damaged_feature_cache_is_rebuilt(tiny, backbone_dir, tmp_path, caplog, damage):
    """Issue 15.12: a damaged cache entry is detected and rebuilt, giving the same H as an intact one."""
    cache = tmp_path / "cache"
    train = load_images(str(tiny), "train")
    kwargs = dict(loss="mse-M", schedule=head_schedule(1), cache_dir=cache, **FAST)
    intact = fit_head(load_backbone(backbone_dir), train, tmp_path / "a", **kwargs)
    (entry,) = cache_dirs(cache)
    path = cache / entry / "features.safetensors"
    if damage == "truncate":
        path.write_bytes(path.read_bytes()[:-100])
    elif damage == "meta":
        (cache / entry / "meta.json").write_text("{broken")
    else:
        tensors = safetensors.torch.load_file(str(path))
        if damage == "width":
            tensors["features"] = tensors["features"][:, :-1].contiguous()
        else:
            tensors = {k: v[:-2].contiguous() for k, v in tensors.items()}
        safetensors.torch.save_file(tensors, str(path))
    rebuilt = fit_head(load_backbone(backbone_dir), train, tmp_path / "b", **kwargs)
    assert "damaged" in caplog.text
    assert torch.equal(rebuilt.target_value, intact.target_value)
    for a, b in zip(intact.introspective_net.parameters(), rebuilt.introspective_net.parameters(), strict=True):
        assert torch.equal(a, b)


def test_a_damaged_checkpoint_is_refused_by_name(tiny, backbone_dir, tmp_path):
    """Issue 15.12: a truncated optimizer.bin or random-state file never resumes silently."""
    from timm_introspect import CheckpointError

    train = load_images(str(tiny), "train")
    kwargs = dict(loss="mse", schedule=head_schedule(3), **FAST)

    def crash(epoch: int, step: int) -> None:
        if (epoch, step) == (1, 0):
            raise Interrupt

    for name in ("optimizer.bin", "random_states_0.pkl"):
        out = tmp_path / name
        with pytest.raises(Interrupt):
            fit_head(load_backbone(backbone_dir), train, out, on_step=crash, **kwargs)
        victim = out / "checkpoints" / "epoch-0001" / name
        victim.write_bytes(victim.read_bytes()[: victim.stat().st_size // 2])
        with pytest.raises(CheckpointError, match=f"epoch-0001 is damaged.*{name}"):
            fit_head(load_backbone(backbone_dir), train, out, **kwargs)
