"""Saving, pushing and loading through the real huggingface_hub client over HTTP (tests/hub_server.py)."""

import hashlib
import json
from pathlib import Path

import pytest
import timm
import torch
from huggingface_hub import constants
from huggingface_hub.errors import HfHubHTTPError

from timm_introspect import CheckpointError, IntrospectiveHead
from timm_introspect.io.hub import load_strict


def make_head(name: str, size: int, **kwargs) -> tuple[IntrospectiveHead, torch.Tensor]:
    torch.manual_seed(0)
    model = timm.create_model(name, num_classes=4, **kwargs)
    head = IntrospectiveHead.wrap(model, loss="mse-M", label_names=["cat", "dog", "ship", "frog"])
    x = torch.randn(6, 3, size, size)
    head.fit([x[:3], x[3:]], progress=False)
    torch.nn.init.normal_(head.introspective_net[0].weight)  # an H that is not just its init
    head.metrics = {"clean": {"f": {"accuracy": 0.5, "ece": 0.2}, "H": {"accuracy": 0.6, "ece": 0.1}}}
    head.dataset = "uoft-cs/cifar10"
    return head, x


@pytest.mark.parametrize("name, kwargs, size", [("resnet18", {}, 32), ("vit_tiny_patch16_224", {"img_size": 32}, 32)])
def test_push_and_load_round_trip_is_bit_identical(hub, name, kwargs, size, tmp_path, monkeypatch):
    head, x = make_head(name, size, **kwargs)
    head.push_to_hub("tester/introspective")
    assert set(hub.state.repos["tester/introspective"].files) == {
        "config.json", "model.safetensors", "introspection_config.json", "introspection.safetensors", "README.md",
        "accuracy_vs_ece.png",  # the card's picture of the recorded metrics (tests/io/test_card_figures.py)
    }
    loaded = IntrospectiveHead.from_pretrained("tester/introspective")
    assert any(m == "GET" and "introspection.safetensors" in p for m, p in hub.state.requests)
    expected, got = head(x), loaded(x)
    assert torch.equal(got.base_logits, expected.base_logits)
    assert torch.equal(got.logits, expected.logits)
    assert loaded.label_names == head.label_names and loaded.metrics == head.metrics
    assert loaded.loss == "mse" and loaded.target == "M" and torch.equal(loaded.target_value, head.target_value)

    # plain timm still loads the backbone from the same repo, over HTTP
    backbone = timm.create_model("hf-hub:tester/introspective", pretrained=True).eval()
    with torch.no_grad():
        assert torch.equal(backbone(x), expected.base_logits)

    # offline, from the cache only
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    hub.state.requests.clear()
    offline = IntrospectiveHead.from_pretrained("tester/introspective")
    assert hub.state.requests == []
    assert torch.equal(offline(x).logits, expected.logits)


def test_model_card_has_results_and_model_index(hub):
    head, _ = make_head("resnet18", 32)
    head.push_to_hub("tester/card")
    card = hub.state.repos["tester/card"].files["README.md"].decode()
    assert "library_name: timm-introspect" in card and "model-index:" in card
    assert "| clean | H | 0.6000 | 0.1000 |" in card
    assert 'IntrospectiveHead.from_pretrained("tester/card")' in card
    assert "MLP 2048 → 300 → 100 → 4" in card
    assert "cat, dog, ship, frog" in card


def tree_digest(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


def test_failed_push_leaves_local_folder_intact(hub, tmp_path):
    head, x = make_head("resnet18", 32)
    folder = tmp_path / "model"
    head.save_pretrained(folder)
    before = tree_digest(folder)
    hub.state.fail_commits = True
    with pytest.raises(HfHubHTTPError):
        head.push_to_hub("tester/broken")
    assert tree_digest(folder) == before
    assert hub.state.repos["tester/broken"].files == {}  # nothing half-pushed either
    assert torch.equal(IntrospectiveHead.from_pretrained(folder)(x).logits, head(x).logits)


@pytest.fixture
def saved(tmp_path):
    head, x = make_head("resnet18", 32)
    folder = tmp_path / "model"
    head.save_pretrained(folder)
    return folder


def test_missing_file(saved):
    (saved / "introspection.safetensors").unlink()
    with pytest.raises(CheckpointError, match="has no introspection.safetensors"):
        IntrospectiveHead.from_pretrained(saved)


def test_plain_timm_model_is_not_introspective(tmp_path):
    folder = tmp_path / "plain"
    timm.models.save_for_hf(timm.create_model("resnet18", num_classes=4), str(folder), safe_serialization=True)
    with pytest.raises(CheckpointError, match=r"not a timm-introspect model.*IntrospectiveHead.wrap"):
        IntrospectiveHead.from_pretrained(folder)


def test_pickle_weights_are_never_read(saved):
    (saved / "model.safetensors").unlink()
    torch.save({"fc.weight": torch.zeros(4, 512)}, saved / "pytorch_model.bin")  # a pickle next to it
    with pytest.raises(CheckpointError, match="has no model.safetensors"):
        IntrospectiveHead.from_pretrained(saved)


@pytest.mark.parametrize("damage", ["truncate", "garble_header"])
@pytest.mark.parametrize("file", ["model.safetensors", "introspection.safetensors"])
def test_corrupt_safetensors(saved, damage, file):
    path = saved / file
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2] if damage == "truncate" else data[:8] + b"{garbage" + data[16:])
    with pytest.raises(CheckpointError, match="truncated or corrupted"):
        IntrospectiveHead.from_pretrained(saved)


def test_class_count_mismatch(saved):
    cfg = json.loads((saved / "config.json").read_text())
    cfg["num_classes"] = 10
    (saved / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match="10 classes.*says 4"):
        IntrospectiveHead.from_pretrained(saved)


def test_shape_mismatch(saved):
    cfg = json.loads((saved / "introspection_config.json").read_text())
    cfg["introspective_net"]["hidden"] = [200, 100]
    (saved / "introspection_config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match=r"other shapes.*nothing was loaded"):
        IntrospectiveHead.from_pretrained(saved)


def test_weights_of_another_model(saved, tmp_path):
    other, _ = make_head("resnet34", 32)
    other.save_pretrained(tmp_path / "other")
    (saved / "model.safetensors").write_bytes((tmp_path / "other" / "model.safetensors").read_bytes())
    with pytest.raises(CheckpointError, match="unexpected"):
        IntrospectiveHead.from_pretrained(saved)


def test_incompatible_format_version(saved):
    cfg = json.loads((saved / "introspection_config.json").read_text())
    cfg["format_version"] = 99
    (saved / "introspection_config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match="format_version 99.*reads format 1"):
        IntrospectiveHead.from_pretrained(saved)


def test_unknown_repo(hub):
    with pytest.raises(CheckpointError, match="neither a local folder nor a Hub repository"):
        IntrospectiveHead.from_pretrained("tester/does-not-exist")


def test_failed_strict_load_changes_nothing():
    module = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.Linear(2, 2))
    before = {k: v.clone() for k, v in module.state_dict().items()}
    state = {"0.weight": torch.ones(2, 3), "0.bias": torch.ones(2),
             "1.weight": torch.ones(3, 2), "1.bias": torch.ones(2)}
    with pytest.raises(CheckpointError, match="nothing was loaded"):
        load_strict(module, state, "test.safetensors")
    assert all(torch.equal(module.state_dict()[k], v) for k, v in before.items())


def test_offline_without_cache_and_bad_paths(hub, monkeypatch, tmp_path):
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(CheckpointError, match="not in the local cache"):
        IntrospectiveHead.from_pretrained("tester/never-downloaded")
    with pytest.raises(CheckpointError, match="neither an existing folder nor a valid Hub repo id"):
        IntrospectiveHead.from_pretrained(str(tmp_path / "no" / "such" / "folder"))


def test_saving_again_rewrites_the_card(saved):
    head = IntrospectiveHead.from_pretrained(saved)
    head.metrics = {"clean": {"H": {"accuracy": 0.75}}}
    head.save_pretrained(saved)
    assert "| clean | H | 0.7500 |" in (saved / "README.md").read_text()


def _deep_stem_head() -> tuple[IntrospectiveHead, torch.Tensor]:
    torch.manual_seed(0)
    model = timm.create_model("test_resnet_cifar", num_classes=4).eval()  # a deep stem: shapes alone cannot tell
    head = IntrospectiveHead.wrap(model, loss="mse", label_names=["cat", "dog", "ship", "frog"])
    x = torch.randn(6, 3, 32, 32)
    head.fit([x], progress=False)
    return head, x


def test_cifar_model_is_a_registered_architecture_on_the_hub(hub, tmp_path):
    import os
    import subprocess
    import sys

    head, x = _deep_stem_head()
    head.push_to_hub("tester/cifar")
    config = json.loads(hub.state.repos["tester/cifar"].files["config.json"])
    assert config["architecture"] == "test_resnet_cifar" and "cifar_stem" not in config
    # timm alone rebuilds the CIFAR stem from the architecture's name (timm_introspect is imported here)
    backbone = timm.create_model("hf-hub:tester/cifar", pretrained=True).eval()
    assert backbone.conv1[0].stride == (1, 1) and isinstance(backbone.maxpool, torch.nn.Identity)
    with torch.no_grad():
        assert torch.equal(backbone(x), head.model(x))
    assert torch.equal(IntrospectiveHead.from_pretrained("tester/cifar")(x).logits, head(x).logits)
    # without timm_introspect, plain timm refuses the unknown architecture instead of building a wrong stem
    code = "import timm; timm.create_model('hf-hub:tester/cifar', pretrained=True)"
    env = {**os.environ, "HF_ENDPOINT": hub.endpoint, "HF_HUB_CACHE": str(tmp_path / "fresh-cache")}
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0 and "Unknown model (test_resnet_cifar)" in proc.stderr, proc.stderr[-2000:]


def test_the_layout_saved_before_registered_architectures_still_loads(tmp_path):
    """Older saves: a plain timm name with ``"cifar_stem": true`` in both configs, H saved by class name."""
    from timm_introspect.training.pipeline import load_backbone

    head, x = _deep_stem_head()
    head.save_pretrained(tmp_path / "m")
    config = json.loads((tmp_path / "m" / "config.json").read_text())
    config.update(architecture="test_resnet", cifar_stem=True)
    config["pretrained_cfg"]["architecture"] = "test_resnet"
    (tmp_path / "m" / "config.json").write_text(json.dumps(config))
    intro = json.loads((tmp_path / "m" / "introspection_config.json").read_text())
    net = intro["introspective_net"]
    old_net = {"type": "IntrospectiveMLP", **{k: v for k, v in net.items() if k != "name"}}
    intro.update(cifar_stem=True, introspective_net=old_net)
    (tmp_path / "m" / "introspection_config.json").write_text(json.dumps(intro))

    loaded = IntrospectiveHead.from_pretrained(tmp_path / "m")
    assert loaded.model.pretrained_cfg["architecture"] == "test_resnet_cifar"
    assert torch.equal(loaded(x).logits, head(x).logits) and torch.equal(loaded(x).base_logits, head(x).base_logits)
    with torch.no_grad():
        assert torch.equal(load_backbone(tmp_path / "m")(x), head.model(x))
    config["cifar_stem"] = "yes"  # only a JSON boolean counts
    (tmp_path / "m" / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="cifar_stem 'yes'"):
        IntrospectiveHead.from_pretrained(tmp_path / "m")


def test_model_card_escapes_names_and_survives_odd_metrics(tmp_path):
    """Issue 15.13: names with | or newlines or HTML stay in their cells; a None metric or a non-string dataset
    does not break saving."""
    torch.manual_seed(0)
    names = ["cat|dog", "ship\nfrog", "<script>alert(1)</script>", "plane"]
    head = IntrospectiveHead.wrap(timm.create_model("resnet18", num_classes=4), loss="mse", scale=False,
                                  label_names=names)
    head.metrics = {"clean|set": {"f": {"accuracy": 0.5, "ece": None, "a|b": 0.25}}}
    head.dataset = 123
    head.save_pretrained(tmp_path / "m")
    card = (tmp_path / "m" / "README.md").read_text()
    assert "<script>" not in card and "&lt;script&gt;" in card
    row = next(line for line in card.splitlines() if line.startswith("| clean"))
    assert row.replace("\\|", "").count("|") == 6  # split, model, accuracy, ece, a|b: 5 cells
    assert "cat\\|dog" in card and "ship frog" in card
    assert IntrospectiveHead.from_pretrained(tmp_path / "m").label_names == names


@pytest.mark.parametrize("damage", ["int", "bool", "nan", "negative scale"])
def test_weights_that_would_load_but_be_wrong_are_refused(saved, damage):
    """Issue 15.7: dtypes, finiteness and the sign of the scale are checked; nothing is half-loaded."""
    import safetensors.torch

    path = saved / "introspection.safetensors"
    state = safetensors.torch.load_file(str(path))
    key = "introspective_net.0.weight"
    if damage == "int":
        state[key] = state[key].to(torch.int32)
    elif damage == "bool":
        state[key] = state[key] > 0
    elif damage == "nan":
        state[key][0, 0] = float("nan")
    else:
        state["scaler.scale"][0] = -1.0
    safetensors.torch.save_file(state, str(path))
    with pytest.raises(CheckpointError, match="dtype|non-finite|negative"):
        IntrospectiveHead.from_pretrained(saved)


def test_non_finite_weights_are_never_saved(tmp_path):
    """Issue 15.6: a diverged model is refused at saving, and the folder is left as it was."""
    head, _ = make_head("resnet18", 32)
    head.save_pretrained(tmp_path / "m")
    before = {p.name: p.read_bytes() for p in (tmp_path / "m").iterdir()}
    with torch.no_grad():
        head.introspective_net[0].weight[0, 0] = float("inf")
    with pytest.raises(CheckpointError, match="non-finite"):
        head.save_pretrained(tmp_path / "m")
    assert {p.name: p.read_bytes() for p in (tmp_path / "m").iterdir()} == before


@pytest.mark.parametrize("content", [
    "{not json", b"\xff\xfe\x00garbage", "[1, 2, 3]", "[" * 100000 + "]" * 100000, '{"architecture": 3}',
    '{"architecture": "resnet18", "num_classes": true}',
    '{"architecture": "resnet18", "num_classes": 4, "model_args": 7}',
])
def test_malformed_config_json_is_a_checkpoint_error(saved, content):
    """Issue 15.3: a damaged config.json is refused by name, never a raw JSON/Unicode/Recursion/Type error."""
    path = saved / "config.json"
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    with pytest.raises(CheckpointError, match="config.json"):
        IntrospectiveHead.from_pretrained(saved)


def test_config_json_cannot_make_timm_load_a_file(saved, tmp_path):
    """Issue 15.3: model arguments come from an allow-list: no checkpoint_path, no file-loading pretrained_cfg."""
    import os

    config = json.loads((saved / "config.json").read_text())
    bait = tmp_path / "bait.pth"
    bait.write_bytes(b"not a checkpoint")
    for key, value in (("model_args", {**config["model_args"], "checkpoint_path": str(bait)}),
                       ("pretrained_cfg", {**config["pretrained_cfg"], "file": str(bait)})):
        (saved / "config.json").write_text(json.dumps({**config, key: value}))
        with pytest.raises(CheckpointError, match="checkpoint_path|file"):
            IntrospectiveHead.from_pretrained(saved)
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    (saved / "config.json").unlink()
    (saved / "config.json").symlink_to(fifo)
    with pytest.raises(CheckpointError, match="config.json"):  # and no hang
        IntrospectiveHead.from_pretrained(saved)
