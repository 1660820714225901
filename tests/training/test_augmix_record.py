"""A saved introspective model records how H was trained (``train_head(..., augmix=N)``, ``fit --augmix N``): its
``introspection_config.json`` holds ``h_training`` (the images, the rows H trained on, the AugMix copies and what they
are), ``from_pretrained`` gives it back, and the model card says it in one line of its details; with augmix off the card
says nothing about AugMix, and a model saved before the field existed still loads (the recipe unknown)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from helpers import make_images, tiny_cifar_model, write_parquet
from torch.utils.data import DataLoader, TensorDataset

from timm_introspect import CheckpointError, IntrospectiveHead, Schedule, train_head
from timm_introspect.cli import main
from timm_introspect.data.augmix import AUGMIX_OPS
from timm_introspect.data.images import load_images

N = 12
SCHEDULE = Schedule(epochs=1, lr=0.05, weight_decay=5e-3, kind="onecycle")
CONFIG = "introspection_config.json"


@pytest.fixture(scope="module")
def split(tmp_path_factory):
    folder = tmp_path_factory.mktemp("augmix-record-data")
    write_parquet(folder, "train", *make_images(N, 0))
    return load_images(str(folder), "train")


def _model() -> torch.nn.Module:
    return tiny_cifar_model()


@pytest.fixture(scope="module")
def saved(split, tmp_path_factory):
    """``{augmix: folder}``: a model trained with augmix 0 and one with augmix 1, saved (copy one to change it)."""
    folders = {}
    for augmix in (0, 1):
        folder = tmp_path_factory.mktemp(f"augmix-{augmix}")
        torch.manual_seed(1)
        head = IntrospectiveHead.wrap(_model(), loss="mse-M", scale="standard")
        head = train_head(head, split, folder / "run", SCHEDULE, batch_size=8, cache_dir=folder / "cache",
                          augmix=augmix)
        head.save_pretrained(folder / "model")
        folders[augmix] = folder / "model"
    return folders


def _copy(folder: Path, to: Path) -> Path:
    shutil.copytree(folder, to)
    return to


def _details(card: str) -> list[str]:
    """The rows of the card's "Model details" table."""
    section = card.split("## Model details", 1)[1].split("## Results", 1)[0]
    return [line for line in section.splitlines() if line.startswith("| ")]


AUGMIX_1 = {"copies": 1, "operations": list(AUGMIX_OPS), "magnitude": 3, "width": 3, "seed": 0,
            "seeded_by": "each image's pixels, the seed and the copy number"}


def test_a_model_trained_with_augmix_records_it_in_its_config_loads_it_back_and_its_card_says_it(saved, tmp_path):
    folder = saved[1]
    record = json.loads((folder / CONFIG).read_text())["h_training"]
    assert record == {"images": N, "rows": 2 * N, "augmix": AUGMIX_1}
    loaded = IntrospectiveHead.from_pretrained(folder)
    assert loaded.h_training == record
    for card in ((folder / "README.md").read_text(), str(loaded.generate_model_card())):
        [line] = [row for row in _details(card) if "AugMix" in row]
        assert line.startswith(f"| H trained on | r_x of {N} training images and 1 AugMix copy of each ({2 * N} rows; ")
        assert "magnitude 3, width 3" in line and ", ".join(AUGMIX_OPS) in line and "seed 0" in line
        assert sum("AugMix" in row for row in card.splitlines()) == 1  # one line, in the details
    # saved again after loading: the record is kept
    loaded.save_pretrained(tmp_path / "again")
    assert json.loads((tmp_path / "again" / CONFIG).read_text())["h_training"] == record


def test_without_augmix_the_record_says_zero_copies_and_the_card_says_nothing_about_augmix(saved):
    folder = saved[0]
    record = json.loads((folder / CONFIG).read_text())["h_training"]
    assert record == {"images": N, "rows": N, "augmix": {"copies": 0}}
    assert IntrospectiveHead.from_pretrained(folder).h_training == record
    card = (folder / "README.md").read_text()
    assert "augmix" not in card.lower()
    assert f"| H trained on | r_x of {N} training images |" in _details(card)


def test_a_model_saved_without_the_record_still_loads_its_recipe_unknown(saved, tmp_path):
    folder = _copy(saved[1], tmp_path / "old")
    cfg = json.loads((folder / CONFIG).read_text())
    del cfg["h_training"]  # as an older timm-introspect wrote it
    (folder / CONFIG).write_text(json.dumps(cfg))
    head = IntrospectiveHead.from_pretrained(folder)
    assert head.h_training is None
    card = str(head.generate_model_card())
    assert "augmix" not in card.lower() and not any(row.startswith("| H trained on") for row in _details(card))
    head.save_pretrained(tmp_path / "again")  # saved again: still unknown, not invented
    assert json.loads((tmp_path / "again" / CONFIG).read_text())["h_training"] is None


@pytest.mark.parametrize("bad", ["24 rows", {"rows": "24"}, {"rows": 24, "augmix": {"copies": -1}},
                                 {"rows": 24, "images": 12, "augmix": "yes"},
                                 {"rows": 24, "images": None, "augmix": {"copies": 1}}])
def test_a_damaged_record_is_refused_with_what_to_do(saved, tmp_path, bad):
    folder = _copy(saved[1], tmp_path / "damaged")
    cfg = json.loads((folder / CONFIG).read_text())
    cfg["h_training"] = bad
    (folder / CONFIG).write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match="h_training.*save the model again"):
        IntrospectiveHead.from_pretrained(folder)


def test_h_trained_on_a_users_loader_records_its_rows(tmp_path):
    head = IntrospectiveHead.wrap(_model(), loss="mse-M", scale="standard")
    loader = DataLoader(TensorDataset(torch.randn(6, 3, 32, 32), torch.arange(6) % 3), batch_size=3)
    head = train_head(head, loader, tmp_path / "h", SCHEDULE)
    assert head.h_training == {"images": None, "rows": 6, "augmix": {"copies": 0}}
    card = str(head.generate_model_card())
    assert "| H trained on | r_x of 6 rows of the caller's data |" in _details(card) and "augmix" not in card.lower()


def test_fit_augmix_through_the_cli_saves_the_record_and_the_card_line(tmp_path):
    data = tmp_path / "data"
    write_parquet(data, "train", *make_images(18, 0))
    fast = ["--epochs", "1", "--batch-size", "8"]
    main(["train-backbone", "--data", str(data), "--arch", "test_resnet", *fast, "--out", str(tmp_path / "f")])
    main(["fit", "--backbone", str(tmp_path / "f"), "--data", str(data), "--augmix", "2", *fast,
          "--out", str(tmp_path / "h")])
    head = IntrospectiveHead.from_pretrained(tmp_path / "h")
    assert head.h_training["rows"] == 54 and head.h_training["images"] == 18
    assert head.h_training["augmix"]["copies"] == 2
    card = (tmp_path / "h" / "README.md").read_text()
    assert "| H trained on | r_x of 18 training images and 2 AugMix copies of each (54 rows; " in card
