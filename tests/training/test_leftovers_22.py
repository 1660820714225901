"""Issue 22's last cases: H is not fitted on data that defines f's classes otherwise; every file a run writes is
readable like a fresh file; ``run`` saves its model once; a refused run leaves its folder as it was; ``fit --scale
none`` works end to end."""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

import datasets
import numpy as np
import pytest
from helpers import make_images, write_parquet
from PIL import Image

from timm_introspect import CheckpointError, DataError, IntrospectiveHead, InvalidArgumentError
from timm_introspect.cli import main
from timm_introspect.data.images import load_images
from timm_introspect.io.checkpoint import default_file_mode
from timm_introspect.training.loop import Schedule
from timm_introspect.training.pipeline import fit_head, load_backbone, train_backbone

FAST = ["--epochs", "1", "--batch-size", "16"]


def six_classes(folder: Path, n: int = 48) -> Path:
    """Unnamed integer labels 0..5 (no ClassLabel: nothing but f's record tells its classes apart) and a second
    label column ``other`` holding other labels for the same images."""
    rng = np.random.default_rng(0)
    images, labels = [], []
    for i in range(n):
        arr = rng.integers(0, 90, (16, 16, 3), dtype=np.uint8)
        arr[..., i % 3] += 150 - 50 * (i % 6 // 3)
        images.append(Image.fromarray(arr))
        labels.append(i % 6)
    columns = {"img": images, "label": labels, "other": [(y + 3) % 6 for y in labels]}
    features = datasets.Features({"img": datasets.Image(), "label": datasets.Value("int64"),
                                  "other": datasets.Value("int64")})
    folder.mkdir(parents=True)
    datasets.Dataset.from_dict(columns, features=features).to_parquet(str(folder / "train-00000-of-00001.parquet"))
    return folder


@pytest.fixture(scope="module")
def f012(tmp_path_factory) -> tuple[Path, Path]:
    """f trained by the CLI on classes 0 1 2 of unnamed data: (data, f)."""
    root = tmp_path_factory.mktemp("f012")
    data = six_classes(root / "data")
    main(["train-backbone", "--data", str(data), "--classes", "0", "1", "2", "--arch", "test_resnet", *FAST,
          "--out", str(root / "f")])
    return data, root / "f"


def refused(argv: list[str], capsys) -> str:
    with pytest.raises(SystemExit) as exc:
        main(argv)
    message = str(exc.value.code)
    assert "Traceback" not in capsys.readouterr().err and len(message.splitlines()) == 1
    return message


# --- 1. f's classes and columns ---------------------------------------------------------------------------------

@pytest.mark.parametrize("other", [["--classes", "3", "4", "5"], ["--classes", "2", "1", "0"],
                                   ["--label-column", "other", "--classes", "0", "1", "2"]])
def test_fit_refuses_data_that_defines_other_classes_than_fs(f012, tmp_path, capsys, other):
    data, f = f012
    message = refused(["fit", "--backbone", str(f), "--data", str(data), *other, *FAST, "--out", str(tmp_path / "h")],
                      capsys)
    assert "f was trained on" in message and ("classes" in message or "columns" in message), message
    assert not (tmp_path / "h").exists()  # refused before any extraction


def test_fit_on_fs_own_classes_and_the_check_as_a_function(f012, tmp_path):
    from timm_introspect.training.pipeline import check_backbone_data

    data, f = f012
    main(["fit", "--backbone", str(f), "--data", str(data), "--classes", "0", "1", "2", *FAST,
          "--out", str(tmp_path / "h")])
    assert (tmp_path / "h" / "introspection_config.json").is_file()
    check_backbone_data(f, load_images(str(data), "train", classes=[0, 1, 2]))  # f's own: accepted
    check_backbone_data(f, load_images(str(data), "train", classes=[0, 1]))  # a prefix keeps each label's meaning
    with pytest.raises(DataError, match="classes"):
        check_backbone_data(f, load_images(str(data), "train", classes=[3, 4, 5]))
    with pytest.raises(DataError, match="columns"):
        check_backbone_data(f, load_images(str(data), "train", label_column="other", classes=[0, 1, 2]))


# --- 2., 3. a run's files are readable by others; run saves its model once ----------------------------------------

@pytest.fixture
def umask_002():
    """A group-writable umask, so that 0644 written by hand and 0600 written by a library both differ from a
    fresh file's mode (0664)."""
    old = os.umask(0o002)
    try:
        yield
    finally:
        os.umask(old)


def modes(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): oct(stat.S_IMODE(p.stat().st_mode)) for p in sorted(folder.rglob("*"))
            if p.is_file()}


def test_a_run_folder_holds_only_files_of_the_default_mode_and_run_saves_once(umask_002, tmp_path, caplog):
    from timm_introspect.jobs.main import run

    data = tmp_path / "data"
    write_parquet(data, "train", *make_images(40, 0))
    write_parquet(data, "test", *make_images(12, 1))
    fresh = tmp_path / "fresh"
    fresh.write_text("")
    expected = oct(stat.S_IMODE(fresh.stat().st_mode))
    assert expected == oct(default_file_mode()) == "0o664"
    with caplog.at_level(logging.DEBUG, logger="timm_introspect"):
        run(load_images(str(data), "train"), load_images(str(data), "test"), tmp_path / "run", "test_resnet", True,
            Schedule(epochs=1, lr=0.05, kind="onecycle"), Schedule(epochs=1, lr=0.1, kind="onecycle"), batch_size=16)
    found = modes(tmp_path / "run")
    assert any("checkpoints" in p for p in found) and "metrics.json" in found
    assert {p: m for p, m in found.items() if m != expected} == {}
    saves = [r for r in caplog.records if r.getMessage().startswith("saved the model to")]
    assert len(saves) == 1, [r.getMessage() for r in saves]
    head = IntrospectiveHead.from_pretrained(tmp_path / "run" / "introspective")
    assert head.metrics and "test" in head.metrics  # the one save has the results


def test_active_learning_files_have_the_default_mode(umask_002, tmp_path):
    from timm_introspect.apps.active import ActiveConfig, ActiveData, run_active_learning

    images, labels = make_images(30, 0, size=32)
    pool = np.stack([np.asarray(i) for i in images])
    data = ActiveData(pool, np.asarray(labels), {"clean": (pool[:12], np.asarray(labels[:12]))})
    config = ActiveConfig(model="test_resnet_cifar", initial=10, query_size=4, rounds=1, batch_size=16, min_steps=2,
                          head_batch_size=16, hidden=(8,), head_min_steps=2,
                          schedule=Schedule(epochs=1, lr=0.05, kind="linear"),
                          head_schedule=Schedule(epochs=1, lr=0.1, kind="onecycle"))
    run_active_learning(data, config, tmp_path / "active", progress=False)
    data.save(tmp_path / "active" / "data.safetensors")
    found = modes(tmp_path / "active")
    assert any(p.endswith("weights.safetensors") for p in found) and "data.safetensors" in found
    assert {p: m for p, m in found.items() if m != "0o664"} == {}


# --- 5. a refused run leaves its folder byte for byte as it was ----------------------------------------------------

def snapshot(folder: Path) -> dict[str, bytes | None]:
    return {str(p.relative_to(folder)): (p.read_bytes() if p.is_file() else None) for p in sorted(folder.rglob("*"))}


def test_a_refused_run_leaves_its_folder_unchanged(tmp_path):
    data = tmp_path / "data"
    write_parquet(data, "train", *make_images(32, 0))
    schedule = Schedule(epochs=1, lr=0.05, kind="onecycle")
    f = train_backbone(load_images(str(data), "train"), tmp_path / "f", "test_resnet", schedule=schedule,
                       batch_size=16)
    assert not (tmp_path / "f" / ".lock").exists()  # a finished run leaves no lock behind
    IntrospectiveHead.wrap(f).save_pretrained(tmp_path / "model")
    for folder in ("f", "model"):
        before = snapshot(tmp_path / folder)
        with pytest.raises(InvalidArgumentError, match="holds a saved"):  # the wrong kind of folder
            if folder == "f":
                fit_head(f, load_images(str(data), "train"), tmp_path / folder, schedule=schedule, batch_size=16)
            else:
                train_backbone(load_images(str(data), "train"), tmp_path / folder, "test_resnet", schedule=schedule,
                               batch_size=16)
        assert snapshot(tmp_path / folder) == before, folder
    before = snapshot(tmp_path / "f")
    write_parquet(data, "train", *make_images(32, 5))  # a mismatched run: other images under the same path
    with pytest.raises(CheckpointError, match="other settings"):
        train_backbone(load_images(str(data), "train"), tmp_path / "f", "test_resnet", schedule=schedule,
                       batch_size=16)
    assert snapshot(tmp_path / "f") == before
    with pytest.raises(InvalidArgumentError):  # a folder that does not exist yet is not created by a refusal
        train_backbone(load_images(str(data), "train"), tmp_path / "model" / "model.safetensors" / "x",
                       "test_resnet", schedule=schedule, batch_size=16)


# --- 6. fit --scale none -------------------------------------------------------------------------------------------

def test_fit_with_scale_none_fits_saves_loads_and_evaluates(tmp_path, capsys):
    data = tmp_path / "data"
    write_parquet(data, "train", *make_images(36, 0))
    write_parquet(data, "test", *make_images(12, 1))
    main(["train-backbone", "--data", str(data), "--arch", "test_resnet", *FAST, "--out", str(tmp_path / "f")])
    main(["fit", "--backbone", str(tmp_path / "f"), "--data", str(data), "--scale", "none", *FAST,
          "--out", str(tmp_path / "h")])
    head = IntrospectiveHead.from_pretrained(tmp_path / "h")
    assert head.scaling == "none" and not head.scaled
    main(["evaluate", "--model", str(tmp_path / "h"), "--data", str(data), "--split", "test"])
    assert "H: accuracy" in capsys.readouterr().out
    main(["fit", "--backbone", str(tmp_path / "f"), "--data", str(data), "--scale", "none", *FAST,
          "--out", str(tmp_path / "h")])  # run again: resumed from the cache and the finished checkpoint
    again = IntrospectiveHead.from_pretrained(tmp_path / "h")
    assert all(np.array_equal(a.numpy(), b.numpy()) for a, b in zip(head.state_dict().values(),
                                                                    again.state_dict().values(), strict=True))
    assert load_backbone(tmp_path / "f") is not None


def test_the_lock_removed_at_the_end_still_excludes_a_second_run(tmp_path):
    """Runs that start while another ends (and removes the lock file) never hold the folder together."""
    import threading
    import time

    from timm_introspect import RunLockedError
    from timm_introspect.training.loop import exclusive_run

    inside, most, entered = [0], [0], [0]
    guard = threading.Lock()

    def runs() -> None:
        for _ in range(300):
            try:
                with exclusive_run(tmp_path / "out"):
                    with guard:
                        inside[0] += 1
                        most[0] = max(most[0], inside[0])
                        entered[0] += 1
                    time.sleep(0.0002)  # long enough for the others to open, lock and remove the file meanwhile
                    with guard:
                        inside[0] -= 1
            except RunLockedError:
                pass

    threads = [threading.Thread(target=runs) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert most[0] == 1 and entered[0] > 0
    assert list((tmp_path / "out").iterdir()) == []  # no lock file left behind
