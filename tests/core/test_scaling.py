"""Feature scalings before H: the paper's max-abs [-1, 1], standardization, none."""

import pytest
import safetensors.torch
import torch
import torch.distributed as dist
from helpers import timm_model

from timm_introspect import IntrospectiveHead, StandardScaler
from timm_introspect.errors import NotFittedError


def test_standard_scaler_matches_the_batch_moments_and_is_batching_independent():
    torch.manual_seed(0)
    x = torch.randn(100, 7, dtype=torch.float64) * torch.arange(1, 8) + 3.0
    x[:, 2] = 5.0  # a dimension that never varies: centred only
    whole, parts = StandardScaler(7), StandardScaler(7)
    whole.update(x)
    for chunk in x.split(13):
        parts.update(chunk)
    expected = (x - x.mean(0)) / x.std(0, unbiased=False)
    expected[:, 2] = 0.0
    torch.testing.assert_close(whole(x), expected)
    torch.testing.assert_close(parts(x), whole(x))
    mean, std = whole.moments()
    assert std[2] == 1.0 and mean[2] == 5.0


def test_a_constant_dimension_is_only_centred_even_when_its_square_does_not_cancel():
    x = torch.randn(1000, 3, dtype=torch.float64)
    x[:, 1] = 0.1
    scaler = StandardScaler(3)
    scaler.update(x)
    _, std = scaler.moments()
    assert std[1] == 1.0
    probe = x[:2].clone()
    probe[:, 1] = 0.1 * (1 + 1e-4)  # 0.01 % off the training constant stays small
    assert scaler(probe)[:, 1].abs().max() < 1e-4


def test_standard_scaler_keeps_its_sums_in_float64_through_dtype_casts():
    scaler = StandardScaler(2)
    scaler.update(torch.tensor([[70000.0, 1.0], [70002.0, 3.0]]))
    expected = scaler(torch.tensor([[70001.0, 2.0]], dtype=torch.float64))
    scaler.half()  # a head cast to float16 must not overflow its sums of squares (4.9e9)
    assert scaler.sum_sq.dtype == torch.float64
    torch.testing.assert_close(scaler(torch.tensor([[70001.0, 2.0]], dtype=torch.float64)), expected)


def test_standard_scaler_must_be_fitted_and_refuses_non_finite_features():
    scaler = StandardScaler(3)
    with pytest.raises(NotFittedError, match="fit"):
        scaler(torch.zeros(2, 3))
    with pytest.raises(Exception, match="non-finite"):
        scaler.update(torch.tensor([[1.0, float("nan"), 0.0]]))


def _shard_worker(rank: int, world: int, init: str, out: str) -> None:
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=world)
    try:
        x = torch.randn(30, 4, generator=torch.Generator().manual_seed(0)) * 3 + 1
        scaler = StandardScaler(4)
        scaler.update(x[rank::world])  # each process sees its own shard
        scaler.sync()
        if rank == 0:
            mean, std = scaler.moments()
            safetensors.torch.save_file({"mean": mean, "std": std, "x": x}, out)
    finally:
        dist.destroy_process_group()


def test_standard_scaler_sums_over_processes(tmp_path):
    import torch.multiprocessing as mp

    out = tmp_path / "moments.safetensors"
    mp.spawn(_shard_worker, args=(2, f"file://{tmp_path / 'pg'}", str(out)), nprocs=2, join=True)
    saved = safetensors.torch.load_file(str(out))
    whole = StandardScaler(4)
    whole.update(saved["x"])
    for synced, expected in zip((saved["mean"], saved["std"]), whole.moments(), strict=True):
        torch.testing.assert_close(synced, expected)


@pytest.mark.parametrize("scale, kind", [("standard", StandardScaler), ("none", torch.nn.Identity),
                                         (False, torch.nn.Identity)])
def test_head_scalings_save_and_load(scale, kind, images, tmp_path):
    model = timm_model("resnet18", torch.float32)
    x = images(6, 32, torch.float32)
    head = IntrospectiveHead.wrap(model, loss="mse-M", scale=scale)
    assert isinstance(head.scaler, kind)
    head.fit([x[:3], x[3:]], progress=False)
    out = head(x)
    if scale == "standard":  # training features standardized: mean 0, population std 1 where they vary
        _, raw = head.flat_features(x)
        varying = raw.std(0) > 1e-6
        torch.testing.assert_close(out.features.mean(0), torch.zeros_like(out.features[0]), atol=1e-4, rtol=0)
        torch.testing.assert_close(out.features.std(0, unbiased=False)[varying],
                                   torch.ones(int(varying.sum())), atol=1e-3, rtol=0)
    head.save_pretrained(tmp_path / "m")
    loaded = IntrospectiveHead.from_pretrained(tmp_path / "m")
    assert loaded.scaling == head.scaling
    assert torch.equal(loaded(x).logits, out.logits)


def test_bad_scalings_are_refused():
    model = timm_model("resnet18", torch.float32)
    with pytest.raises(ValueError, match="maxabs, standard, none"):
        IntrospectiveHead.wrap(model, scale="minmax")
    with pytest.raises(ValueError, match="factors"):
        IntrospectiveHead.wrap(model, scale="standard", introspective_net="factorized")
