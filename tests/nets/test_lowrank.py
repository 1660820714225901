"""H without materializing r_x gives the same outputs as the materialized MLP where the two are equal."""

import pytest
import torch
from helpers import timm_model

from timm_introspect import FactorizedMLP, IntrospectiveHead, IntrospectiveMLP, RankOneMLP

ARCHS = [
    ("resnet18", {}, 32),  # one linear head, one position
    ("resnetv2_18", {}, 32),  # a 1x1 conv head
    ("deit_tiny_distilled_patch16_224", {"img_size": 32}, 32),  # two heads
]


def shapes_of(head):
    return [tuple(c.weight.shape[:2]) for c in head.classifiers]


@pytest.mark.parametrize("name, kwargs, size", ARCHS, ids=[a[0] for a in ARCHS])
def test_factors_rebuild_the_features(name, kwargs, size, images):
    head = IntrospectiveHead.wrap(timm_model(name, torch.float32, **kwargs), scale=False)
    x = images(3, size, torch.float32)
    _, raw = head.flat_features(x)
    _, factors = head.introspective_factors(x)
    rebuilt = torch.cat([torch.einsum("bsn,bsd->bnd", d, h).flatten(1) for d, h in factors.values()], 1)
    torch.testing.assert_close(rebuilt, raw, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name, kwargs, size", ARCHS, ids=[a[0] for a in ARCHS])
def test_rank_one_mlp_equals_the_materialized_mlp(name, kwargs, size, images):
    model = timm_model(name, torch.float32, **kwargs)
    torch.manual_seed(0)
    materialized = IntrospectiveHead.wrap(model, scale=False)
    rank_one = IntrospectiveHead.wrap(
        model, scale=False,
        introspective_net=RankOneMLP.from_mlp(materialized.introspective_net, shapes_of(materialized))
    )
    assert rank_one.takes_factors
    x = images(3, size, torch.float32)
    out = rank_one(x)
    assert out.features is None
    torch.testing.assert_close(out.logits, materialized(x).logits, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(out.base_logits, materialized(x).base_logits, rtol=0, atol=0)


def test_rank_one_with_factor_scaling_equals_mlp_on_scaled_features(images):
    model = timm_model("resnet18", torch.float32)
    head = IntrospectiveHead.wrap(model, introspective_net=RankOneMLP([(10, 512)], 10))
    x = images(6, 32, torch.float32)
    head.fit([x[:3], x[3:]], progress=False)
    mlp = IntrospectiveMLP(5120, 10)
    mlp.load_state_dict({"0.weight": head.introspective_net.first.weight, "0.bias": head.introspective_net.first.bias,
                         **{f"{int(k.split('.')[0]) + 1}.{k.split('.')[1]}": v
                            for k, v in head.introspective_net.rest.state_dict().items()}})
    test = images(4, 32, torch.float32, seed=7) * 3  # out of the training range: the clamp matters
    _, factors = head.introspective_factors(test)
    scaled = head.scaler(factors)
    delta, h = scaled["fc"]
    assert delta.abs().max() <= 1 and h.abs().max() <= 1
    expected = mlp(torch.einsum("bsn,bsd->bnd", delta, h).flatten(1))
    torch.testing.assert_close(head(test).logits, expected, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name, kwargs, size", ARCHS, ids=[a[0] for a in ARCHS])
def test_factorized_mlp_equals_its_materialized_form(name, kwargs, size, images):
    model = timm_model(name, torch.float32, **kwargs)
    probe = IntrospectiveHead.wrap(model, scale=False)
    torch.manual_seed(0)
    factorized = FactorizedMLP(shapes_of(probe), 10, rank=32, hidden=(16,))
    low = IntrospectiveHead.wrap(model, scale=False, introspective_net=factorized)
    full = IntrospectiveHead.wrap(model, scale=False, introspective_net=factorized.to_materialized())
    x = images(3, size, torch.float32)
    torch.testing.assert_close(low(x).logits, full(x).logits, rtol=1e-4, atol=1e-5)


def test_low_rank_heads_round_trip(tmp_path, images):
    model = timm_model("resnet18", torch.float32)
    x = images(4, 32, torch.float32)
    for net in (RankOneMLP([(10, 512)], 10), FactorizedMLP([(10, 512)], 10, rank=8)):
        head = IntrospectiveHead.wrap(model, introspective_net=net).fit([x], progress=False)
        head.save_pretrained(tmp_path / type(net).__name__)
        loaded = IntrospectiveHead.from_pretrained(tmp_path / type(net).__name__)
        assert type(loaded.introspective_net) is type(net)
        assert torch.equal(loaded(x).logits, head(x).logits)


def test_factors_are_trained_without_weight_decay():
    from timm_introspect.nets.mlp import IntrospectiveMLP
    from timm_introspect.training.loop import Schedule

    net = FactorizedMLP([(10, 32)], 10, rank=8, hidden=(4,))
    opt = Schedule(epochs=1, weight_decay=5e-3).optimizer(net)
    decayed, free = opt.param_groups
    assert decayed["weight_decay"] == 5e-3 and free["weight_decay"] == 0.0
    free_ids = {id(p) for p in free["params"]}
    assert free_ids == {id(net.delta_proj[0]), id(net.h_proj[0]), id(net.bias)}
    assert {id(p) for p in decayed["params"]} == {id(p) for p in net.rest.parameters()}
    (only,) = Schedule(epochs=1).optimizer(IntrospectiveMLP(20, 10)).param_groups  # the paper's H: all decayed
    assert only["weight_decay"] == 5e-4
