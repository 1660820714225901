"""A run's identity includes what defines its data, and a folder holding another kind of model is refused
(issue 22, group 1)."""

from __future__ import annotations

import pytest
from helpers import make_images, write_parquet

from timm_introspect import CheckpointError, IntrospectiveHead, InvalidArgumentError
from timm_introspect.data.images import load_images
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
