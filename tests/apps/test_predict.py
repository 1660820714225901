"""Predictions: the numbers are the head's own (f, f / T, H, the energy of H), T and the OOD threshold come from
the model's held-out images (stored at evaluation time, or fitted), inputs of any kind are read or refused by
name, and the CLI writes JSON / CSV that read back to the same predictions."""

from __future__ import annotations

import csv
import json
import logging
import os

import numpy as np
import pytest
import torch
from helpers import CLASSES, make_images, write_parquet
from PIL import Image

from timm_introspect import (
    Calibration,
    DataError,
    ImagePrediction,
    IntrospectiveHead,
    calibration_for,
    create_model,
    evaluate_head,
    fit_temperature,
    predict_images,
)
from timm_introspect.apps.predict import energy_score, expand_folders
from timm_introspect.apps.predict.cli import format_table
from timm_introspect.cli import main
from timm_introspect.data.images import load_images, make_loader, make_transform
from timm_introspect.training.calibrate import keep_threshold


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """60 labeled 16 px images in a Parquet folder (the held-out half: 30 images) and the images themselves."""
    folder = tmp_path_factory.mktemp("data") / "colours"
    images, labels = make_images(60, 0)
    write_parquet(folder, "train", images, labels)
    return folder, images, labels


@pytest.fixture(scope="module")
def trained(data):
    """A tiny CIFAR-stem f with its statistics fitted and a few steps of training, wrapped with a random H."""
    folder, _, _ = data
    torch.manual_seed(0)
    model = create_model("test_resnet_cifar", 3, cifar_stem=True)
    train = load_images(str(folder), "train")
    loader = make_loader(train, model, False, 20)
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    for x, y in loader:  # one epoch: f is not random, so that T is an ordinary number
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    head = IntrospectiveHead.wrap(model, loss="mse", label_names=CLASSES)
    head.fit(loader, progress=False)
    return head


@pytest.fixture
def head(trained, data):
    """The head as saved by a run: it records its held-out images (half of the data, seed 0), nothing fitted."""
    head = IntrospectiveHead.wrap(trained.model, loss="mse", label_names=CLASSES,
                                  introspective_net=trained.introspective_net)
    head.load_state_dict(trained.state_dict())
    head.calibration = {"data": str(data[0]), "split": "train", "limit": None, "seed": 0, "holdout": 0.5}
    return head.eval()


def own_outputs(head, images):
    """The head's own pass on images preprocessed by hand with the model's transform."""
    transform = make_transform(head.model, train=False)
    x = torch.stack([transform(im.convert("RGB")) for im in images])
    with torch.no_grad():
        out = head(x)
    return out.base_logits.double(), out.logits.double()


def as_probs(top):
    """A full top-k list (k = all classes) as a probability vector in class order."""
    return torch.tensor([dict(top)[c] for c in CLASSES], dtype=torch.float64)


def test_numbers_are_the_heads_own(head, data):
    images = data[1][:5]
    cal = Calibration(temperature=1.7, ood_threshold=-1.0, images=30)
    preds = predict_images(head, images, top_k=3, calibration=cal)
    f, h = own_outputs(head, images)
    assert [p.source for p in preds] == [0, 1, 2, 3, 4]
    for i, p in enumerate(preds):
        assert isinstance(p, ImagePrediction)
        assert torch.allclose(as_probs(p.f), f[i].softmax(-1), atol=1e-6)
        assert torch.allclose(as_probs(p.f_ts), (f[i] / 1.7).softmax(-1), atol=1e-6)
        assert torch.allclose(as_probs(p.h), h[i].softmax(-1), atol=1e-6)
        assert [v for _, v in p.h] == sorted((v for _, v in p.h), reverse=True)  # most probable first
        assert p.ood_score == pytest.approx(-torch.logsumexp(h[i], 0).item(), abs=1e-6)
        assert p.is_ood == (p.ood_score > -1.0) and p.ood_threshold == -1.0 and p.temperature == 1.7
    assert [len(p.h) for p in predict_images(head, images[:2], top_k=2, calibration=cal)] == [2, 2]


def test_the_ood_score_is_the_registered_energy_detector(head, data):
    pytest.importorskip("pytorch_ood")
    from timm_introspect.apps.ood import create_detector

    _, h = own_outputs(head, data[1][:6])
    detector = create_detector("energy_h", head)
    assert torch.allclose(detector.predict_logits(h).double(), energy_score(h), atol=1e-9)


def test_threshold_keeps_95_percent_of_the_held_out_images(head, data, caplog):
    with caplog.at_level(logging.INFO, "timm_introspect"):
        cal = calibration_for(head)  # nothing stored: fitted on the 30 held-out images the model records
    assert "fitted T" in caplog.text and cal.images == 30 and head.fitted_calibration == cal.to_dict()
    held = load_images(str(data[0]), "train").split_holdout(0.5, 0)[1]
    held_images = [Image.fromarray(a) for a in held.arrays()[0]]
    preds = predict_images(head, held_images, calibration=cal)
    kept = sum(not p.is_ood for p in preds)
    assert kept >= 0.95 * 30 and kept == 29  # the smallest count that keeps 95 %: ceil(0.95 * 30)
    assert cal.ood_threshold == pytest.approx(sorted(p.ood_score for p in preds)[28], abs=1e-9)
    f, _ = own_outputs(head, held_images)
    labels = torch.as_tensor(held.dataset["label"])
    assert cal.temperature == pytest.approx(fit_temperature(f.float(), labels), rel=1e-4)
    assert calibration_for(head) == cal  # kept on the head: not fitted again


def test_keep_threshold():
    scores = torch.arange(100, dtype=torch.float64)
    assert keep_threshold(scores) == 94.0  # 95 of 100 at or below it
    assert keep_threshold(scores[:1]) == 0.0 and keep_threshold(scores, keep=1.0) == 99.0


def test_evaluation_stores_t_and_the_threshold_in_the_saved_model(head, data, tmp_path):
    folder, images, labels = data
    held = load_images(str(folder), "train").split_holdout(0.5, 0)[1]
    test = load_images(str(folder), "train").split_holdout(0.5, 0)[0]
    metrics = evaluate_head(head, make_loader(test, head.model, False, 16), progress=False, split="test",
                            calibration=make_loader(held, head.model, False, 16))
    stored = Calibration.from_dict(head.fitted_calibration)
    assert stored.images == 30 and stored.temperature > 0 and stored.ood_threshold is not None
    assert set(head.reliability["test"]) == set(metrics) == {"f", "f+TS", "H"}
    head.save_pretrained(tmp_path / "model")
    loaded = IntrospectiveHead.from_pretrained(tmp_path / "model")
    loaded.calibration = {**loaded.calibration, "data": str(tmp_path / "gone")}  # not loadable: T is stored
    assert calibration_for(loaded) == stored
    (p,) = predict_images(loaded, images[:1], top_k=3)
    f, _ = own_outputs(loaded, images[:1])
    assert p.temperature == stored.temperature
    assert torch.allclose(as_probs(p.f_ts), (f[0] / stored.temperature).softmax(-1), atol=1e-6)
    assert p.ood_threshold == stored.ood_threshold


def test_without_held_out_images_there_is_no_ts_and_no_threshold(head, data, caplog):
    head.calibration = None
    with caplog.at_level(logging.INFO, "timm_introspect"):
        (p,) = predict_images(head, data[1][:1])
    assert p.f_ts is None and p.temperature is None and p.ood_threshold is None and p.is_ood is None
    assert "records no held-out images" in caplog.text
    head.calibration = {"data": "/nonexistent/colours", "split": "train", "limit": None, "seed": 0, "holdout": 0.5}
    caplog.clear()
    with caplog.at_level(logging.INFO, "timm_introspect"):
        assert calibration_for(head) == Calibration()
    assert "cannot be loaded" in caplog.text and head.fitted_calibration is None


def test_images_of_any_mode_and_size(head, data, tmp_path):
    image = data[1][0]
    cal = Calibration()
    (ref,) = predict_images(head, [image], calibration=cal)
    big = image.resize((48, 48), Image.BILINEAR)
    arr = np.asarray(image)
    inputs = [image.convert("RGBA"), arr, arr.astype(np.float32) / 255, image.convert("L"), big]
    preds = predict_images(head, inputs, calibration=cal)
    for p in preds[:3]:  # RGBA (opaque), uint8 and float arrays: the same pixels
        assert [c for c, _ in p.h] == [c for c, _ in ref.h]
        assert np.allclose([v for _, v in p.h], [v for _, v in ref.h], atol=1e-6)
    gray, _ = own_outputs(head, [image.convert("L")])  # grayscale: converted to RGB as the data loader does
    assert torch.allclose(as_probs(preds[3].f), gray[0].softmax(-1), atol=1e-6)
    resized, _ = own_outputs(head, [big])  # another size: the model's own resize
    assert torch.allclose(as_probs(preds[4].f), resized[0].softmax(-1), atol=1e-6)
    wide = (np.asarray(image.convert("L")).astype(np.uint16) * 257)  # 16-bit: scaled, not clipped to white
    Image.fromarray(wide.astype(np.int32), "I").save(tmp_path / "wide.png")
    (p16,) = predict_images(head, [tmp_path / "wide.png"], calibration=cal)
    assert np.allclose([v for _, v in p16.f], [v for _, v in preds[3].f], atol=1e-6)


def test_bad_inputs_are_named(head, data, tmp_path, monkeypatch):
    (tmp_path / "notes.png").write_text("not an image")
    with pytest.raises(DataError, match="notes.png' is not an image"):
        predict_images(head, [data[1][0], tmp_path / "notes.png"])
    with pytest.raises(DataError, match="does not exist"):
        predict_images(head, [tmp_path / "missing.png"])
    with pytest.raises(DataError, match="not a regular file"):
        predict_images(head, [tmp_path])
    os.mkfifo(tmp_path / "pipe.png")  # refused before any model is loaded (a FIFO would block the reader)
    with pytest.raises(DataError, match="not a regular file"):
        expand_folders([tmp_path / "pipe.png"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="holds no image files"):
        expand_folders([tmp_path / "empty"])
    with pytest.raises(DataError, match="shape"):
        predict_images(head, [np.zeros((4, 4, 2), np.uint8)])
    with pytest.raises(DataError, match=r"outside \[0, 1\]"):
        predict_images(head, [np.full((4, 4), 3.0)])
    data[1][0].save(tmp_path / "huge.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)  # 16 x 16 = 256 pixels > 2 x 100
    with pytest.raises(DataError, match="decompression bomb"):
        predict_images(head, [tmp_path / "huge.png"])
    with pytest.raises(DataError, match="decompression-bomb limit"):
        predict_images(head, [data[1][0]])


def test_cli_json_and_csv_round_trip_with_a_folder(head, data, tmp_path, capsys):
    head.save_pretrained(tmp_path / "model")
    folder = tmp_path / "images"
    folder.mkdir()
    for i, image in enumerate(data[1][:3]):
        image.save(folder / f"{i}.png")
    data[1][3].convert("LA").save(folder / "3-gray.png")  # grayscale with alpha
    (folder / "readme.txt").write_text("not an image, skipped in a folder")
    expected = predict_images(IntrospectiveHead.from_pretrained(tmp_path / "model"),
                              sorted(p for p in folder.iterdir() if p.suffix == ".png"), top_k=2)
    assert main(["predict", "--model", str(tmp_path / "model"), "--images", str(folder), "--top-k", "2", "--out",
                 str(tmp_path / "out.json")]) == 0
    written = json.loads((tmp_path / "out.json").read_text())
    assert written == json.loads(json.dumps([p.to_dict() for p in expected]))
    assert [r["source"] for r in written] == [str(folder / n) for n in ("0.png", "1.png", "2.png", "3-gray.png")]
    shown = capsys.readouterr().out
    assert format_table(expected) in shown and "OOD score" in shown
    assert main(["predict", "--model", str(tmp_path / "model"), "--images", str(folder / "1.png"),
                 str(folder / "0.png"), "--top-k", "2", "--out", str(tmp_path / "out.csv")]) == 0
    with open(tmp_path / "out.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["source"] for r in rows] == [str(folder / "1.png"), str(folder / "0.png")]
    for row, p in zip(rows, [expected[1], expected[0]], strict=True):
        assert [row["h_1"], row["h_2"]] == [c for c, _ in p.h]
        assert float(row["h_1_p"]) == pytest.approx(p.h[0][1], abs=1e-6)
        assert float(row["ood_score"]) == pytest.approx(p.ood_score, abs=1e-6)
        assert row["is_ood"] == ("" if p.is_ood is None else str(p.is_ood))


def test_predict_takes_only_a_head_and_lists(head):
    with pytest.raises(Exception, match="IntrospectiveHead"):
        predict_images(head.model, [np.zeros((8, 8), np.uint8)])
    with pytest.raises(Exception, match="list"):
        predict_images(head, "cat.png")
    with pytest.raises(Exception, match="top_k"):
        predict_images(head, [np.zeros((8, 8), np.uint8)], top_k=0)
    assert predict_images(head, [], calibration=Calibration()) == []
