"""A run's identity includes what defines its data, and a folder holding another kind of model is refused
(issue 22, group 1)."""

from __future__ import annotations

import os

import datasets
import numpy as np
import pytest
from helpers import make_images, write_parquet
from PIL import Image

from timm_introspect import CheckpointError, IntrospectiveHead, InvalidArgumentError
from timm_introspect.data.images import LabeledImages, load_images
from timm_introspect.training.loop import Schedule
from timm_introspect.training.pipeline import load_backbone, train_backbone

FAST = dict(batch_size=16, seed=0)


def _train(data, out):
    return train_backbone(load_images(str(data), "train"), out, "test_resnet", cifar_stem=True,
                          schedule=Schedule(epochs=1, lr=0.05, kind="onecycle"), **FAST)


def test_replaced_files_at_the_same_path_are_not_resumed(tmp_path):
    data = tmp_path / "data"
    write_parquet(data, "train", *make_images(32, 0))
    _train(data, tmp_path / "f")
    _train(data, tmp_path / "f")  # the same data: resumed (the checkpoint of the finished epoch)
    write_parquet(data, "train", *make_images(32, 7))  # other images under the same path
    with pytest.raises(CheckpointError, match="other settings"):
        _train(data, tmp_path / "f")


def test_a_copy_of_the_same_files_resumes(tmp_path):
    """The same rows in files with new modification times (a copy, a re-download) are the same data: the run
    resumes (``datasets``' own fingerprint of a local folder follows the files' times)."""
    data = tmp_path / "data"
    write_parquet(data, "train", *make_images(32, 0))
    _train(data, tmp_path / "f")
    for file in data.rglob("*.parquet"):
        stat = file.stat()
        os.utime(file, ns=(stat.st_atime_ns + 10**10, stat.st_mtime_ns + 10**10))
    _train(data, tmp_path / "f")  # raised CheckpointError("... other settings ...") before: not resumed
    assert load_images(str(data), "train").fingerprint() == load_images(str(data), "train").fingerprint()


def test_the_fingerprint_follows_the_rows():
    images, labels = make_images(40, 0)
    last = np.asarray(images[-1]).copy()
    last[0, 0, 0] ^= 1  # one pixel of the last row
    fingerprints = set()
    for rows in (images, [*images[:-1], Image.fromarray(last)]):
        ds = datasets.Dataset.from_dict({"img": rows, "label": labels}, features=datasets.Features(
            {"img": datasets.Image(), "label": datasets.Value("int64")}))
        fingerprints.add(LabeledImages(ds, "img", "label", None, "mem", "train").fingerprint())
    assert len(fingerprints) == 2


def test_a_backbone_is_not_trained_into_a_saved_introspective_model(tmp_path):
    data = tmp_path / "data"
    write_parquet(data, "train", *make_images(32, 0))
    _train(data, tmp_path / "f")
    head = IntrospectiveHead.wrap(load_backbone(tmp_path / "f"))
    head.save_pretrained(tmp_path / "model")
    before = (tmp_path / "model" / "model.safetensors").read_bytes()
    with pytest.raises(InvalidArgumentError, match="holds a saved introspective model"):
        _train(data, tmp_path / "model")
    assert (tmp_path / "model" / "model.safetensors").read_bytes() == before
