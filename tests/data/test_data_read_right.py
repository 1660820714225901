"""Output folders never written through a planted link; data read right or refused by name (issue 22, groups 3, 5
and 6): ImageNet-C's class order, several image columns, absent classes, digit class names, 16-bit PNGs, mixed
sizes, decompression bombs, zero rows, missing local folders, relative paths."""

from __future__ import annotations

import io
import json

import datasets
import numpy as np
import pytest
from helpers import make_images, write_parquet
from PIL import Image

from timm_introspect import DataError
from timm_introspect.data.images import load_images
from timm_introspect.data.outputs import prepare_output, write_text
from timm_introspect.errors import InvalidArgumentError

# --- group 3: links planted in an output folder -------------------------------------------------------------

def test_a_link_planted_in_out_is_never_written_through(tmp_path):
    pytest.importorskip("cv2")
    from timm_introspect.data.cifar10c import write_official

    outside = tmp_path / "precious.txt"
    outside.write_text("keep me")
    out = tmp_path / "c10c"
    out.mkdir()
    (out / "labels.npy").symlink_to(outside)
    images = np.zeros((2, 32, 32, 3), np.uint8)
    with pytest.raises(InvalidArgumentError, match="symbolic link"):
        write_official(out, images, np.array([0, 1]), ("brightness",), progress=False)
    assert outside.read_text() == "keep me"
    (out / "labels.npy").unlink()
    (out / "manifest.json").symlink_to(outside)
    with pytest.raises(InvalidArgumentError, match="symbolic link"):
        write_official(out, images, np.array([0, 1]), ("brightness",), progress=False)
    assert outside.read_text() == "keep me"
    with pytest.raises(InvalidArgumentError, match="symbolic link"):
        write_text(out / "manifest.json", "x")


def test_prepare_output_refuses_another_kind_and_accepts_its_own(tmp_path):
    model = tmp_path / "model"
    model.mkdir()
    (model / "introspection_config.json").write_text("{}")
    with pytest.raises(InvalidArgumentError, match="holds a saved introspective model"):
        prepare_output(model, "backbone")
    assert prepare_output(model, "introspective") == model
    assert prepare_output(tmp_path / "new" / "deep", "explain").is_dir()


# --- group 6: ImageNet-C's class order ----------------------------------------------------------------------

def test_imagenetc_from_names_that_do_not_sort_in_class_order_reads_back_its_labels(tmp_path):
    pytest.importorskip("cv2")
    from timm_introspect.data.cifar10c import load_imagenet_c, write_imagenet_c

    images = np.random.default_rng(0).integers(0, 255, (6, 224, 224, 3), dtype=np.uint8)
    labels = np.array([0, 1, 2, 0, 1, 2])
    classes = ["zebra", "apple", "mango"]  # sorted: apple, mango, zebra
    write_imagenet_c(tmp_path, images, labels, classes=classes, corruptions=("brightness",), severities=(1,),
                     progress=False)
    _, read = load_imagenet_c(tmp_path, "brightness", 1)
    assert sorted(read.tolist()) == sorted(labels.tolist())
    # images come by class folder (sorted names), each labelled with its class index, not the folder's rank
    assert read.tolist() == [1, 1, 2, 2, 0, 0]


# --- group 6: columns and classes ---------------------------------------------------------------------------

def _table(folder, columns: dict, features: dict, split: str = "train"):
    folder.mkdir(parents=True, exist_ok=True)
    ds = datasets.Dataset.from_dict(columns, features=datasets.Features(features))
    ds.to_parquet(str(folder / f"{split}-00000-of-00001.parquet"))
    return folder


def test_two_image_columns_need_image_column(tmp_path):
    images, labels = make_images(6, 0)
    folder = _table(tmp_path / "d", {"image": images, "mask": images, "label": labels},
                    {"image": datasets.Image(), "mask": datasets.Image(),
                     "label": datasets.ClassLabel(names=["a", "b", "c"])})
    with pytest.raises(DataError, match="2 image columns .*image_column="):
        load_images(str(folder), "train")
    assert load_images(str(folder), "train", image_column="mask").image_column == "mask"
    with pytest.raises(DataError, match="not images"):
        load_images(str(folder), "train", image_column="label")


def test_classes_absent_and_digit_names(tmp_path):
    images, labels = make_images(6, 0)
    labels = [0, 0, 1, 1, 0, 1]  # class 2 has no images
    names = ["10", "2", "7"]
    folder = _table(tmp_path / "d", {"img": images, "label": labels},
                    {"img": datasets.Image(), "label": datasets.ClassLabel(names=names)})
    with pytest.raises(DataError, match="no images of the class"):
        load_images(str(folder), "train", classes=["10", "7"])
    picked = load_images(str(folder), "train", classes=["2", "10"])  # names, not indices 2 and 10
    assert picked.label_names == ["2", "10"] and sorted(set(picked.labels().tolist())) == [0, 1]


def test_zero_rows_missing_folder_and_relative_path(tmp_path, monkeypatch):
    folder = _table(tmp_path / "empty", {"img": [], "label": []},
                    {"img": datasets.Image(), "label": datasets.ClassLabel(names=["a"])})
    with pytest.raises(DataError, match="no rows"):
        load_images(str(folder), "train")
    with pytest.raises(DataError, match="does not exist"):
        load_images(str(tmp_path / "missing" / "folder"), "train")
    write_parquet(tmp_path / "data", "train", *make_images(3, 0))
    monkeypatch.chdir(tmp_path)
    assert load_images("data", "train").source == str(tmp_path / "data")  # recorded absolute


# --- group 5 / 6: decoding ----------------------------------------------------------------------------------

def _png(arr: np.ndarray, mode: str | None = None) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr, mode).save(buf, format="PNG")
    return buf.getvalue()


def test_16_bit_pngs_are_scaled_not_clipped(tmp_path):
    from timm_introspect.data.decode import decode_image

    arr = np.array([[0, 32896, 65535]], dtype=np.uint16)
    image = decode_image({"bytes": _png(arr), "path": None}, "RGB")
    assert np.asarray(image)[0, :, 0].tolist() == [0, 128, 255]


def test_mixed_sizes_name_the_odd_image(tmp_path):
    small, _ = make_images(2, 0, size=16)
    big, _ = make_images(1, 1, size=24)
    folder = _table(tmp_path / "d", {"img": [*small, *big], "label": [0, 1, 2]},
                    {"img": datasets.Image(), "label": datasets.ClassLabel(names=["a", "b", "c"])})
    with pytest.raises(DataError, match="image 2 .*24x24"):
        load_images(str(folder), "train").arrays()


def test_a_decompression_bomb_is_a_data_error(monkeypatch):
    from timm_introspect.data.decode import decode_image

    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 10)
    with pytest.raises(DataError, match="decompression bomb"):
        decode_image({"bytes": _png(np.zeros((16, 16, 3), np.uint8)), "path": "big.png"}, "RGB")


def test_a_fifo_in_a_dataset_is_not_opened(tmp_path):
    import os

    from timm_introspect.data.decode import decode_image

    os.mkfifo(tmp_path / "x.png")
    with pytest.raises(DataError, match="not a regular file"):
        decode_image({"bytes": None, "path": str(tmp_path / "x.png")}, "RGB")


def test_generation_json_is_written_without_following_links(tmp_path):
    outside = tmp_path / "outside.json"
    outside.write_text(json.dumps({"keep": True}))
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "generation.json").symlink_to(outside)
    with pytest.raises(InvalidArgumentError):
        write_text(tmp_path / "out" / "generation.json", "{}")
    assert json.loads(outside.read_text()) == {"keep": True}
