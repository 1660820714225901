"""Issue 22, groups 2 and 8: saving is all or nothing, keeps a run's other files, writes readable files; runs
sharing a feature cache wait for each other's entry instead of crashing on it.
"""

from __future__ import annotations

import builtins
import fcntl
import hashlib
import logging
import os
import stat
import threading
import time
from pathlib import Path

import pytest
import safetensors.torch
import timm
import torch
from accelerate import Accelerator
from helpers import make_images, write_parquet

from timm_introspect import CheckpointError, IntrospectiveHead
from timm_introspect.data.images import load_images
from timm_introspect.io import checkpoint as checkpoint_module
from timm_introspect.io.backbones import load_folder
from timm_introspect.io.hub import save_backbone
from timm_introspect.training import cache as cache_module
from timm_introspect.training.cache import extract_features, fingerprint
from timm_introspect.training.sources import as_source

MODEL_FILES = {"config.json", "model.safetensors", "introspection_config.json", "introspection.safetensors",
               "README.md"}


def make_head(seed: int) -> IntrospectiveHead:
    torch.manual_seed(seed)
    return IntrospectiveHead.wrap(timm.create_model("test_resnet", num_classes=3).eval(), scale=False)


def digest(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def run_folder(tmp_path: Path) -> Path:
    """A model folder that also holds a training run's other files."""
    folder = tmp_path / "introspective"
    make_head(0).save_pretrained(folder)
    (folder / "checkpoints").mkdir()
    (folder / "checkpoints" / "step-1.safetensors").write_bytes(b"resume me")
    (folder / "feature-cache").mkdir()
    (folder / "feature-cache" / "entry").write_bytes(b"cached")
    (folder / ".lock").write_text("")
    (folder / "training.json").write_text("{}")
    return folder


def no_leftovers(folder: Path) -> bool:
    return not [p for p in folder.parent.iterdir() if p.name.endswith(".saving")]


def _raise_disk_full(*args, **kwargs):
    raise OSError(28, "No space left on device")


@pytest.mark.parametrize("failing", ["safetensors.torch.save_file", "timm.models.save_for_hf", "card"])
def test_a_failed_save_leaves_the_old_model_loadable_bit_identically(tmp_path, monkeypatch, failing):
    folder = run_folder(tmp_path)
    before = digest(folder)
    old = IntrospectiveHead.from_pretrained(folder)
    new = make_head(1)
    if failing == "card":
        monkeypatch.setattr(type(new), "generate_model_card", lambda self, **kw: _raise_disk_full())
    else:
        module, name = failing.rsplit(".", 1)
        target = safetensors.torch if module == "safetensors.torch" else timm.models
        monkeypatch.setattr(target, name, _raise_disk_full)
    with pytest.raises((CheckpointError, OSError)):
        new.save_pretrained(folder)
    monkeypatch.undo()
    assert digest(folder) == before and no_leftovers(folder)
    assert same_weights(IntrospectiveHead.from_pretrained(folder), old)


def test_a_failed_save_raises_the_package_error(tmp_path, monkeypatch):
    folder = run_folder(tmp_path)
    monkeypatch.setattr(safetensors.torch, "save_file", _raise_disk_full)
    with pytest.raises(CheckpointError, match="No space left on device.*nothing was changed"):
        make_head(1).save_pretrained(folder)


def test_saving_replaces_the_model_and_keeps_the_runs_other_files(tmp_path):
    folder = run_folder(tmp_path)
    others = {k: v for k, v in digest(folder).items() if k.split("/")[0] not in MODEL_FILES}
    new = make_head(1)
    new.save_pretrained(folder)
    after = digest(folder)
    assert {k: v for k, v in after.items() if k in others} == others  # checkpoints, cache, lock, training.json
    assert MODEL_FILES <= set(after) and no_leftovers(folder)
    assert same_weights(IntrospectiveHead.from_pretrained(folder), new)


def test_save_to_a_file_is_refused_before_anything_is_written(tmp_path):
    path = tmp_path / "model"
    path.write_text("not a folder")
    with pytest.raises(CheckpointError, match="not a folder"):
        make_head(0).save_pretrained(path)
    assert path.read_text() == "not a folder" and no_leftovers(path)


def test_save_backbone_is_atomic_and_keeps_checkpoints(tmp_path, monkeypatch):
    torch.manual_seed(0)
    old = timm.create_model("test_resnet", num_classes=3).eval()
    folder = tmp_path / "backbone"
    save_backbone(old, folder)
    (folder / "checkpoints").mkdir()
    (folder / "checkpoints" / "state").write_bytes(b"x")
    before = digest(folder)
    torch.manual_seed(1)
    new = timm.create_model("test_resnet", num_classes=3).eval()
    monkeypatch.setattr(timm.models, "save_for_hf", _raise_disk_full)
    with pytest.raises(CheckpointError):
        save_backbone(new, folder)
    monkeypatch.undo()
    assert digest(folder) == before and same_weights(load_folder(folder), old) and no_leftovers(folder)
    save_backbone(new, folder)
    assert same_weights(load_folder(folder), new) and (folder / "checkpoints" / "state").read_bytes() == b"x"


def test_a_compiled_backbone_is_saved_as_its_original_module(tmp_path):
    torch.manual_seed(0)
    model = timm.create_model("test_resnet", num_classes=3).eval()
    save_backbone(torch.compile(model), tmp_path / "f")  # compiled lazily: nothing runs
    assert same_weights(load_folder(tmp_path / "f"), model)


# --- group 8: file modes and unreadable files --------------------------------------------------------------

@pytest.mark.parametrize("mask", [0o022, 0o027])
def test_every_saved_file_gets_the_default_mode(tmp_path, mask):
    old = os.umask(mask)
    try:
        make_head(0).save_pretrained(tmp_path / "m")
        torch.manual_seed(0)
        save_backbone(timm.create_model("test_resnet", num_classes=3).eval(), tmp_path / "f")
    finally:
        os.umask(old)
    files = [p for p in (tmp_path / "m").iterdir()] + [p for p in (tmp_path / "f").iterdir()]
    assert files and {oct(stat.S_IMODE(p.stat().st_mode)) for p in files} == {oct(0o666 & ~mask)}


@pytest.mark.parametrize("name", ["model.safetensors", "introspection.safetensors", "introspection_config.json"])
def test_an_unreadable_file_is_reported_as_permission_denied(tmp_path, monkeypatch, name):
    make_head(0).save_pretrained(tmp_path / "m")
    path = tmp_path / "m" / name
    if os.geteuid() != 0:
        path.chmod(0)
    else:  # root reads any file: refuse this one as the kernel would for another user
        real_open = builtins.open

        def refusing_open(file, *args, **kwargs):
            if Path(str(file)) == path:
                raise PermissionError(13, "Permission denied", str(file))
            return real_open(file, *args, **kwargs)

        monkeypatch.setattr(checkpoint_module, "open", refusing_open, raising=False)
    with pytest.raises(CheckpointError, match="permission denied") as info:
        IntrospectiveHead.from_pretrained(tmp_path / "m")
    assert "corrupt" not in str(info.value)


# --- group 8: two runs sharing a feature cache ----------------------------------------------------------------

@pytest.fixture(scope="module")
def train(tmp_path_factory):
    folder = tmp_path_factory.mktemp("data")
    write_parquet(folder, "train", *make_images(24, 0))
    return load_images(str(folder), "train")


def cache_head() -> IntrospectiveHead:
    torch.manual_seed(0)
    return IntrospectiveHead.wrap(timm.create_model("test_resnet", num_classes=3).eval(), loss="mse-M")


def test_a_run_waits_for_the_entry_another_run_is_extracting_then_reuses_it(train, tmp_path, monkeypatch, caplog):
    built, _, built_folder = extract_features(Accelerator(), cache_head(), train, tmp_path / "other", batch_size=8)
    expected = built.clone()
    head = cache_head()
    key = fingerprint(head, as_source(train, head.model, 8, 0))
    cache_dir = tmp_path / "shared"
    cache_dir.mkdir()
    lock = open(cache_dir / f".{key}.lock", "a+")  # noqa: SIM115 (the other run, mid-extraction)
    fcntl.flock(lock, fcntl.LOCK_EX)
    extracted = []
    real_extract = cache_module._extract
    monkeypatch.setattr(cache_module, "_extract", lambda *a, **k: extracted.append(1) or real_extract(*a, **k))
    result = {}

    def second_run():
        try:
            result["out"] = extract_features(Accelerator(), head, train, cache_dir, batch_size=8)
        except Exception as err:  # noqa: BLE001 (reported by the test)
            result["error"] = err

    caplog.set_level(logging.INFO, logger="timm_introspect.training.cache")
    thread = threading.Thread(target=second_run)
    thread.start()
    deadline = time.monotonic() + 60
    while "waiting for it" not in caplog.text and thread.is_alive() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert "waiting for it" in caplog.text, result
    assert not (cache_dir / f".{key}.partial").exists()  # it touched nothing of the entry being written
    # the other run finishes its entry (renamed into place) and releases the lock
    (cache_dir / key).mkdir()
    for p in built_folder.iterdir():
        (cache_dir / key / p.name).write_bytes(p.read_bytes())
    fcntl.flock(lock, fcntl.LOCK_UN)
    lock.close()
    thread.join(60)
    assert "error" not in result, result.get("error")
    features, labels, folder = result["out"]
    assert folder == cache_dir / key and not extracted  # reused, not extracted again
    assert torch.equal(features, expected) and torch.equal(labels, train.labels())
    assert "reusing cached features" in caplog.text


def test_the_lock_is_free_after_an_extraction(train, tmp_path):
    head = cache_head()
    _, _, folder = extract_features(Accelerator(), head, train, tmp_path, batch_size=8)
    with open(tmp_path / f".{folder.name}.lock", "a+") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)  # would raise if a run still held it
