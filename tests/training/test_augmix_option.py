"""H trained on f's training images plus AugMix copies of them (``train_head(..., augmix=N)``, ``fit --augmix N``):
the source's rows, labels and cache key; every image's copy the same in any batching, worker or resumed extraction;
the option through train_head, its feature cache and resume signature, and the CLI."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import make_images, tiny_cifar_model, write_parquet
from torch.utils.data import DataLoader, TensorDataset

from timm_introspect import CheckpointError, IntrospectiveHead, InvalidArgumentError, Schedule, train_head
from timm_introspect.cli import main
from timm_introspect.data.augmix import AUGMIX_OPS, augmix_image, augmix_seed
from timm_introspect.data.images import load_images
from timm_introspect.training.augmented import AugMixSource
from timm_introspect.training.sources import ImageSource

N = 12
SCHEDULE = Schedule(epochs=1, lr=0.05, weight_decay=5e-3, kind="onecycle")


@pytest.fixture(scope="module")
def split(tmp_path_factory):
    folder = tmp_path_factory.mktemp("augmix-data")
    write_parquet(folder, "train", *make_images(N, 0))
    return load_images(str(folder), "train")


def _model() -> torch.nn.Module:
    return tiny_cifar_model()


def _rows(source, start: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    xs, ys = zip(*source.batches(start), strict=True)
    return torch.cat(xs), torch.cat(ys)


def _source(split, batch_size: int = 5, workers: int = 0, **kwargs) -> AugMixSource:
    return AugMixSource(ImageSource(split, _model(), batch_size, workers), **kwargs)


def test_the_source_holds_the_originals_then_each_copy_block_with_their_labels_and_its_own_key(split):
    base = ImageSource(split, _model(), 5)
    source = AugMixSource(base, copies=2, seed=0)
    assert len(source) == 3 * N
    assert torch.equal(source.labels(), split.labels().repeat(3))
    x, y = _rows(source)
    assert x.shape == (3 * N, 3, 32, 32) and torch.equal(y, source.labels())
    assert torch.equal(x[:N], _rows(base)[0])  # the originals exactly as the plain split gives them
    key = json.loads(source.key())
    assert key[0] == base.key() and "augmix" in key and list(AUGMIX_OPS) in key
    others = [AugMixSource(base, copies=1, seed=0), AugMixSource(base, copies=2, seed=1),
              AugMixSource(base, copies=2, magnitude=9, seed=0), AugMixSource(base, copies=2, width=2, seed=0)]
    assert len({source.key(), base.key(), *(o.key() for o in others)}) == 6
    assert source.describe()["augmix"] == {"copies": 2, "magnitude": 3, "width": 3, "seed": 0}
    with pytest.raises(InvalidArgumentError, match="copies"):
        AugMixSource(base, copies=0)


def test_each_images_copy_is_the_same_in_any_batching_worker_or_resumed_extraction(split):
    full_x, full_y = _rows(_source(split, copies=2, seed=3))
    again_x, _ = _rows(_source(split, batch_size=7, workers=1, copies=2, seed=3))  # other batches, a worker process
    assert torch.equal(full_x, again_x)
    for start in (N + 5, 2 * N + 1, 4):  # inside the first copy block, the second, the originals
        x, y = _rows(_source(split, copies=2, seed=3), start)
        assert torch.equal(x, full_x[start:]) and torch.equal(y, full_y[start:])
    # the global random streams are left as they were
    random.seed(5)
    np.random.seed(5)
    _rows(_source(split, copies=1, seed=3))
    assert random.random() == random.Random(5).random()
    assert np.random.rand() == np.random.RandomState(5).rand()


def test_the_copies_differ_from_the_originals_and_from_each_other(split):
    x, _ = _rows(_source(split, copies=2, seed=0))
    originals, first, second = x[:N], x[N : 2 * N], x[2 * N :]
    per_image = lambda a, b: (a - b).abs().flatten(1).amax(1)  # noqa: E731
    assert (per_image(first, originals) > 0.05).all() and (per_image(second, first) > 0.05).all()
    other_seed, _ = _rows(_source(split, copies=1, seed=1))
    assert (per_image(other_seed[N:], first) > 0).all()
    # one image's draw: seeded by its pixels, so the same image always gets the same copy
    image = split.dataset[0]["img"].convert("RGB")
    seed = augmix_seed(image, 0, 1)
    assert seed == augmix_seed(image.copy(), 0, 1) != augmix_seed(image, 0, 2) != augmix_seed(image, 1, 1)
    assert np.array_equal(np.asarray(augmix_image(image, seed)), np.asarray(augmix_image(image, seed)))


def _entries(cache: Path) -> dict[str, dict]:
    return {p.name: json.loads((p / "meta.json").read_text()) for p in cache.iterdir() if (p / "meta.json").is_file()}


def test_train_head_with_augmix_trains_on_both_and_keeps_its_own_cache_entry_and_signature(split, tmp_path):
    cache = tmp_path / "cache"

    def fit(out: Path, augmix: int) -> IntrospectiveHead:
        torch.manual_seed(1)
        head = IntrospectiveHead.wrap(_model(), loss="mse-M", scale="standard")
        return train_head(head, split, out, SCHEDULE, batch_size=8, cache_dir=cache, augmix=augmix)

    plain = fit(tmp_path / "plain", 0)
    assert [m["count"] for m in _entries(cache).values()] == [N]
    augmented = fit(tmp_path / "augmented", 1)
    entries = _entries(cache)
    assert sorted(m["count"] for m in entries.values()) == [N, 2 * N]
    meta = next(m for m in entries.values() if m["count"] == 2 * N)
    assert meta["augmix"] == {"copies": 1, "magnitude": 3, "width": 3, "seed": 0}
    done = json.loads(next((tmp_path / "augmented" / "checkpoints").glob("epoch-*/done.json")).read_text())
    assert done["run"]["augmix"]["copies"] == 1 and done["run"]["batches_per_epoch"] == 3  # 2n = 24 rows of 8
    assert "augmix" not in json.loads(next((tmp_path / "plain" / "checkpoints").glob("epoch-*/done.json"))
                                      .read_text())["run"]  # an older run's signature is unchanged
    assert any(not torch.equal(a, b) for a, b in zip(plain.introspective_net.parameters(),
                                                     augmented.introspective_net.parameters(), strict=True))
    # the same out_dir with another augmix: its checkpoint is refused, not continued
    with pytest.raises(CheckpointError, match="other settings"):
        fit(tmp_path / "augmented", 0)


def test_a_users_loader_with_augmix_is_refused_with_what_to_do(tmp_path):
    head = IntrospectiveHead.wrap(_model(), loss="mse-M", scale="standard")
    loader = DataLoader(TensorDataset(torch.randn(6, 3, 32, 32), torch.arange(6) % 3), batch_size=3)
    with pytest.raises(InvalidArgumentError, match="add the AugMix copies to your loader"):
        train_head(head, loader, tmp_path / "h", SCHEDULE, augmix=1)
    with pytest.raises(InvalidArgumentError, match="0 or more"):
        train_head(head, loader, tmp_path / "h", SCHEDULE, augmix=-1)
    assert not (tmp_path / "h").exists()  # refused before any work


def test_fit_augmix_end_to_end_through_the_cli(tmp_path, capsys):
    data = tmp_path / "data"
    write_parquet(data, "train", *make_images(18, 0))
    fast = ["--epochs", "1", "--batch-size", "8"]
    main(["train-backbone", "--data", str(data), "--arch", "test_resnet", *fast, "--out", str(tmp_path / "f")])
    main(["fit", "--backbone", str(tmp_path / "f"), "--data", str(data), "--augmix", "1", *fast,
          "--out", str(tmp_path / "h")])
    [meta] = _entries(tmp_path / "h" / "feature-cache").values()
    assert meta["count"] == 36 and meta["augmix"]["copies"] == 1
    head = IntrospectiveHead.from_pretrained(tmp_path / "h")
    assert head(torch.randn(2, 3, 32, 32)).logits.shape == (2, 3)
