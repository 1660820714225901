"""Any timm classifier as f (issue 16, item 1): a folder, an hf-hub: id, or an architecture name + a safetensors
checkpoint, each preprocessed with the model's own data config."""

from __future__ import annotations

import json

import datasets
import pytest
import safetensors.torch
import timm
import torch
from helpers import CLASSES, make_images, write_parquet
from huggingface_hub import HfApi
from timm.data import create_transform, resolve_model_data_config

from timm_introspect import CheckpointError, IntrospectiveHead, resolve_backbone
from timm_introspect.cli import main
from timm_introspect.data.images import load_images, make_loader, make_transform
from timm_introspect.io.hub import save_backbone

#: an ImageNet-style data config unlike CIFAR's: its own size, crop, interpolation, mean and std
OWN_CONFIG = dict(input_size=(3, 48, 48), crop_pct=0.8, interpolation="bicubic", mean=(0.1, 0.2, 0.3),
                  std=(0.5, 0.6, 0.7))


def small_model(name: str = "test_resnet", seed: int = 0, **cfg) -> torch.nn.Module:
    """A 3-class timm model with random weights (and, optionally, its own data config)."""
    torch.manual_seed(seed)
    model = timm.create_model(name, num_classes=3).eval()
    if cfg:
        model.pretrained_cfg = {**model.pretrained_cfg, **cfg}
    return model


@pytest.fixture
def tiny(tmp_path):
    """Train images with plain integer labels (no class names: those come from the model), test images with
    the names."""
    folder = tmp_path / "tiny"
    images, labels = make_images(12, seed=0, size=40)
    folder.mkdir()
    ds = datasets.Dataset.from_dict({"img": images, "label": labels}, features=datasets.Features(
        {"img": datasets.Image(), "label": datasets.Value("int64")}))
    ds.to_parquet(str(folder / "train-00000-of-00001.parquet"))
    write_parquet(folder, "test", *make_images(9, seed=1, size=40))
    return folder


def _data_config(model: torch.nn.Module) -> dict:
    """timm's data config of a model, with JSON's lists as tuples."""
    return {k: tuple(v) if isinstance(v, list) else v for k, v in resolve_model_data_config(model).items()}


def _pixels(loader) -> torch.Tensor:
    return torch.cat([x for x, _ in loader])


def test_hub_model_is_fitted_and_evaluated_by_its_hf_hub_id(hub, tiny, tmp_path):
    model = small_model(**OWN_CONFIG)
    timm.models.push_to_hf_hub(model, "tester/tiny", model_config={"label_names": CLASSES}, safe_serialization=True)
    assert set(hub.state.repos["tester/tiny"].files) >= {"config.json", "model.safetensors"}
    assert "pytorch_model.bin" not in hub.state.repos["tester/tiny"].files

    f = resolve_backbone("hf-hub:tester/tiny")
    x = torch.randn(2, 3, 48, 48)
    with torch.no_grad():
        assert torch.equal(f(x), model(x))
        assert torch.equal(f(x), timm.create_model("hf-hub:tester/tiny", pretrained=True).eval()(x))
    assert _data_config(f) == _data_config(model) == {**_data_config(model), **OWN_CONFIG}

    out = tmp_path / "h"
    main(["fit", "--backbone", "hf-hub:tester/tiny", "--data", str(tiny), "--epochs", "1", "--batch-size", "6",
          "--out", str(out)])
    head = IntrospectiveHead.from_pretrained(str(out))
    assert head.label_names == CLASSES  # from the model's config: the training set has no names
    with torch.no_grad():
        assert torch.equal(head.model(x), model(x))  # f itself, untouched

    main(["evaluate", "--model", str(out), "--data", str(tiny), "--split", "test"])
    with_h = json.loads((out / "metrics-test.json").read_text())["metrics"]
    head.push_to_hub("tester/tiny-introspective")
    main(["evaluate", "--model", "hf-hub:tester/tiny-introspective", "--data", str(tiny), "--split", "test",
          "--out", str(tmp_path / "m-hub.json")])
    assert json.loads((tmp_path / "m-hub.json").read_text())["metrics"] == with_h
    main(["evaluate", "--backbone", "hf-hub:tester/tiny", "--data", str(tiny), "--split", "test",
          "--out", str(tmp_path / "m.json")])
    f_alone = json.loads((tmp_path / "m.json").read_text())["metrics"]
    assert set(f_alone) == {"f"} and f_alone["f"] == pytest.approx(with_h["f"])

    images = load_images(str(tiny), "test")
    logits = torch.cat([model(x) for x, _ in make_loader(images, model, False, 4)]).detach()
    assert f_alone["f"]["accuracy"] == pytest.approx((logits.argmax(1) == images.labels()).float().mean().item())


def test_hub_repo_with_pickle_weights_only_is_refused(hub, tmp_path):
    folder = tmp_path / "pickled"
    timm.models.save_for_hf(small_model(), str(folder), safe_serialization=True)
    api = HfApi()
    api.create_repo("tester/pickled")
    api.upload_file(path_or_fileobj=(folder / "config.json").read_bytes(), path_in_repo="config.json",
                    repo_id="tester/pickled")
    api.upload_file(path_or_fileobj=b"not read", path_in_repo="pytorch_model.bin", repo_id="tester/pickled")
    with pytest.raises(CheckpointError, match="only safetensors weights are read, never pickle"):
        resolve_backbone("hf-hub:tester/pickled")
    assert not any("pytorch_model.bin" in path for _, path in hub.state.requests)
    with pytest.raises(SystemExit, match="pytorch_model.bin"):
        main(["evaluate", "--backbone", "hf-hub:tester/pickled", "--data", str(tmp_path)])


def test_model_with_its_own_data_config_gets_exactly_its_own_transform(tmp_path):
    save_backbone(small_model(**OWN_CONFIG), tmp_path / "f", CLASSES)
    f = resolve_backbone(tmp_path / "f")
    cfg = resolve_model_data_config(f)
    assert {k: _data_config(f)[k] for k in OWN_CONFIG} == OWN_CONFIG
    images, labels = make_images(5, seed=2, size=40)
    images = [img.crop((0, 0, 40, 30)) for img in images]  # not square: the center crop matters
    write_parquet(tmp_path / "data", "test", images, labels)
    loaded = _pixels(make_loader(load_images(str(tmp_path / "data"), "test"), f, False, 2))
    expected = torch.stack([create_transform(**cfg)(img) for img in images])
    assert loaded.shape == (5, 3, 48, 48) and torch.equal(loaded, expected)
    cifar = torch.stack([make_transform(f, False, cifar_augment=True)(img) for img in images])
    assert not torch.allclose(loaded, cifar, atol=1e-2)  # CIFAR's resize would be something else


def test_cifar_models_keep_the_cifar_transform():
    model = timm.create_model("resnet10s_cifar", num_classes=3)
    assert "CenterCrop" not in repr(make_transform(model, False))
    assert "RandomCrop(size=(32, 32), padding=4)" in repr(make_transform(model, True))


def test_architecture_name_with_safetensors_checkpoint(tiny, tmp_path):
    model = small_model()
    checkpoint = tmp_path / "weights.safetensors"
    safetensors.torch.save_file(model.state_dict(), str(checkpoint))
    f = resolve_backbone("test_resnet", checkpoint)
    assert f.num_classes == 3
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(f(x), model(x))

    out = tmp_path / "h"
    main(["fit", "--backbone", "test_resnet", "--checkpoint", str(checkpoint), "--data", str(tiny), "--epochs", "1",
          "--batch-size", "6", "--out", str(out)])
    head = IntrospectiveHead.from_pretrained(str(out))
    assert head.num_classes == 3 and head.label_names is None  # neither the data nor the file names them
    main(["evaluate", "--backbone", "test_resnet", "--checkpoint", str(checkpoint), "--data", str(tiny),
          "--split", "test", "--out", str(tmp_path / "m.json")])
    assert json.loads((tmp_path / "m.json").read_text())["metrics"]["f"]["accuracy"] >= 0


@pytest.mark.parametrize("name", ["weights.bin", "weights.pth"])
def test_pickle_checkpoints_are_refused_unread(tiny, tmp_path, name):
    checkpoint = tmp_path / name
    checkpoint.write_bytes(b"never unpickled")
    with pytest.raises(CheckpointError, match="only safetensors are read"):
        resolve_backbone("test_resnet", checkpoint)
    with pytest.raises(SystemExit, match="not a .safetensors file"):
        main(["fit", "--backbone", "test_resnet", "--checkpoint", str(checkpoint), "--data", str(tiny),
              "--out", str(tmp_path / "h")])
    assert not (tmp_path / "h").exists()


def test_mismatched_checkpoint_is_refused_before_training(tiny, tmp_path):
    checkpoint = tmp_path / "resnet10t.safetensors"
    safetensors.torch.save_file(small_model("resnet10t").state_dict(), str(checkpoint))
    with pytest.raises(CheckpointError, match="does not match"):
        resolve_backbone("test_resnet", checkpoint)
    with pytest.raises(SystemExit, match="nothing was loaded"):
        main(["fit", "--backbone", "test_resnet", "--checkpoint", str(checkpoint), "--data", str(tiny),
              "--out", str(tmp_path / "h")])
    assert not (tmp_path / "h").exists()


@pytest.mark.parametrize("spec, checkpoint, message", [
    ("no_such_arch_or_folder", None, "neither a folder"),
    ("test_resnet", None, "no weights were given"),
    ("no_such_arch", "w.safetensors", "not a timm architecture"),
])
def test_specs_that_name_no_model(tmp_path, spec, checkpoint, message):
    with pytest.raises(CheckpointError, match=message):
        resolve_backbone(spec, checkpoint and tmp_path / checkpoint)


def test_a_folder_or_hub_id_takes_no_checkpoint(tmp_path):
    save_backbone(small_model(), tmp_path / "f")
    with pytest.raises(CheckpointError, match="brings its own weights"):
        resolve_backbone(tmp_path / "f", tmp_path / "w.safetensors")


def test_arrays_for_a_model_are_its_own_resize_and_crop(tmp_path):
    """What the benchmarks score (uint8 arrays, normalized by the model's mean and std) equals the model's
    own evaluation transform."""
    from timm_introspect.jobs.robustness import normalized_batches

    f = small_model(**OWN_CONFIG)
    images, labels = make_images(4, seed=3, size=40)
    images = [img.crop((0, 0, 40, 30)) for img in images]
    write_parquet(tmp_path / "data", "test", images, labels)
    pixels, got_labels = load_images(str(tmp_path / "data"), "test").arrays(f)
    assert pixels.shape == (4, 48, 48, 3) and pixels.dtype.name == "uint8" and got_labels.tolist() == labels
    batch = torch.cat(list(normalized_batches(f, pixels)))
    expected = torch.stack([create_transform(**resolve_model_data_config(f))(img) for img in images])
    assert torch.allclose(batch, expected, atol=1e-5)


def test_explain_cli_takes_an_architecture_and_a_checkpoint(tmp_path):
    model = small_model(**OWN_CONFIG)
    checkpoint = tmp_path / "weights.safetensors"
    safetensors.torch.save_file(model.state_dict(), str(checkpoint))
    image = tmp_path / "x.png"
    make_images(1, seed=4, size=40)[0][0].save(image)
    with pytest.raises(SystemExit, match="no weights were given: pass --checkpoint"):
        main(["explain", "--backbone", "test_resnet", "--images", str(image), "--out", str(tmp_path / "e")])
    main(["explain", "--backbone", "test_resnet", "--checkpoint", str(checkpoint), "--images", str(image),
          "--out", str(tmp_path / "e")])
    record = json.loads((tmp_path / "e" / "explanations.json").read_text())
    assert (tmp_path / "e" / "x.png").is_file() and len(record["images"]) == 1
