"""IntrospectiveHead behaviour: f untouched, fitting M and the scale, H, and clear errors."""

import pytest
import timm
import torch
from helpers import timm_model
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from timm_introspect import (
    InputShapeError,
    IntrospectiveHead,
    IntrospectiveMLP,
    IntrospectiveOutput,
    NoClassifierError,
    NotFittedError,
    UnknownLossError,
)


@pytest.fixture
def resnet():
    return timm_model("resnet18", torch.float32)


@pytest.mark.parametrize(
    "name, kwargs, size",
    [("resnet18", {}, 32), ("resnetv2_18", {}, 32), ("deit_tiny_distilled_patch16_224", {"img_size": 32}, 32)],
)
def test_f_predictions_are_bit_identical(name, kwargs, size, images):
    model = timm_model(name, torch.float32, **kwargs)
    x = images(4, size, torch.float32)
    with torch.no_grad():
        expected = model(x)
    head = IntrospectiveHead.wrap(model)
    head.fit([x], progress=False)
    out = head(x)
    assert isinstance(out, IntrospectiveOutput)
    assert torch.equal(out.base_logits, expected)
    assert out.logits.shape == (4, 10)
    assert out.features.shape == (4, head.num_features)
    with torch.no_grad():
        assert torch.equal(model(x), expected)  # no hook left behind


def test_default_h_is_the_papers_mlp(resnet):
    head = IntrospectiveHead.wrap(resnet)
    net = head.introspective_net
    assert isinstance(net, IntrospectiveMLP)
    linears = [m for m in net if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(5120, 300), (300, 100), (100, 10)]
    assert sum(isinstance(m, nn.Sigmoid) for m in net) == 2


def test_fit_estimates_target_m_and_scale(resnet, images):
    x = images(8, 32, torch.float32)
    loader = DataLoader(TensorDataset(x, torch.zeros(8, dtype=torch.long)), batch_size=3)
    head = IntrospectiveHead.wrap(resnet, loss="mse-M")
    assert head.loss == "mse" and head.target == "M"
    with pytest.raises(NotFittedError, match="fit"):
        head.introspective_features(x)
    head.fit(loader, progress=False)

    with torch.no_grad():
        logits = resnet(x)
    m = logits.max(-1).values.mean()
    torch.testing.assert_close(head.target_value, m)
    # the features use target M: dJ/dz = 2 (z - M), times h
    feats = head.introspective_features(x)
    h = resnet.forward_head(resnet.forward_features(x), pre_logits=True)
    torch.testing.assert_close(feats, (2 * (logits - m)).unsqueeze(2) * h.unsqueeze(1), rtol=1e-5, atol=1e-5)
    # scale: per-dimension max |r_x| over the training data; training features land in [-1, 1]
    torch.testing.assert_close(head.scaler.scale, feats.flatten(1).abs().amax(0))
    scaled = head(x).features
    assert scaled.abs().max() <= 1.0
    assert torch.allclose(scaled.abs().amax(0)[head.scaler.scale > 0], torch.tensor(1.0))


def test_state_travels_in_state_dict(resnet, images):
    x = images(4, 32, torch.float32)
    head = IntrospectiveHead.wrap(resnet, loss="ce-M").fit([(x, None)], progress=False)
    state = head.state_dict()
    assert {"target_value", "scaler.scale", "scaler.fitted"} <= set(state)
    fresh = IntrospectiveHead.wrap(timm_model("resnet18", torch.float32), loss="ce-M")
    fresh.load_state_dict(state)
    assert torch.equal(fresh(x).logits, head(x).logits)


def test_unfitted_scale_is_refused(resnet, images):
    head = IntrospectiveHead.wrap(resnet)
    with pytest.raises(NotFittedError, match=r"head.fit\(train_loader\)"):
        head(images(2, 32, torch.float32))
    unscaled = IntrospectiveHead.wrap(resnet, scale=False)
    assert unscaled(images(2, 32, torch.float32)).logits.shape == (2, 10)


def test_h_is_swappable_and_trains_alone(resnet, images):
    h_net = nn.Linear(5120, 10)
    head = IntrospectiveHead.wrap(resnet, introspective_net=h_net, scale=False)
    head.train()
    assert not head.model.training and head.introspective_net.training
    x = images(4, 32, torch.float32)
    out = head(x)
    torch.testing.assert_close(out.logits, h_net(out.features))
    nn.functional.cross_entropy(out.logits, torch.tensor([0, 1, 2, 3])).backward()
    assert h_net.weight.grad is not None and h_net.weight.grad.abs().sum() > 0
    assert all(p.grad is None and not p.requires_grad for p in head.model.parameters())


def test_batch_equals_single_images(resnet, images):
    head = IntrospectiveHead.wrap(resnet, loss="bce", scale=False)
    x = images(5, 32, torch.float32)
    batch = head.introspective_features(x)
    singles = torch.cat([head.introspective_features(x[i : i + 1]) for i in range(5)])
    torch.testing.assert_close(batch, singles, rtol=1e-5, atol=1e-6)


def test_works_under_no_grad_and_inference_mode(images):
    model = timm_model("deit_tiny_distilled_patch16_224", torch.float32, img_size=32)  # needs autograd for its tail
    head = IntrospectiveHead.wrap(model, scale=False)
    x = images(2, 32, torch.float32)
    expected = head.introspective_features(x)
    with torch.no_grad():
        got = head.introspective_features(x)
    with torch.inference_mode():
        got_inf = head.introspective_features(x)
    for key in expected:
        assert torch.equal(got[key], expected[key])
        assert torch.equal(got_inf[key], expected[key])


def test_model_without_classifier_is_refused():
    with pytest.raises(NoClassifierError, match="num_classes=0"):
        IntrospectiveHead.wrap(timm.create_model("resnet18", num_classes=0))
    with pytest.raises(NoClassifierError, match="no get_classifier"):
        IntrospectiveHead.wrap(nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten()))


def test_wrong_input_shapes_say_what_to_do(resnet, images):
    head = IntrospectiveHead.wrap(resnet, scale=False)
    with pytest.raises(InputShapeError, match=r"unsqueeze\(0\)"):
        head.introspective_features(torch.randn(3, 32, 32))
    with pytest.raises(InputShapeError, match=r"expects \(B, 3, 224, 224\).*create_transform"):
        head.introspective_features(torch.randn(2, 1, 32, 32))  # grayscale into an RGB model
    vit = IntrospectiveHead.wrap(timm_model("vit_tiny_patch16_224", torch.float32), scale=False)
    with pytest.raises(InputShapeError, match="resolve_model_data_config"):
        vit.introspective_features(torch.randn(1, 3, 64, 64))  # a fixed-size ViT


def test_bad_loss_and_target(resnet):
    with pytest.raises(UnknownLossError, match="use one of"):
        IntrospectiveHead.wrap(resnet, loss="hinge")
    with pytest.raises(ValueError, match="number or 'M'"):
        IntrospectiveHead.wrap(resnet, target="max")


def test_fit_needs_data(resnet):
    with pytest.raises(ValueError, match="no batches"):
        IntrospectiveHead.wrap(resnet).fit([], progress=False)


def test_one_head_used_from_several_threads_gives_each_its_own_features():
    """Issue 15.4: concurrent calls add hooks to the same classifier; each must see only its own forward."""
    from concurrent.futures import ThreadPoolExecutor

    torch.manual_seed(0)
    model = timm.create_model("resnet18", num_classes=10).eval()
    head = IntrospectiveHead.wrap(model, loss="mse")
    batches = [torch.randn(3, 3, 32, 32) for _ in range(8)]
    expected = [head.introspective_features(x) for x in batches]
    with ThreadPoolExecutor(max_workers=4) as pool:
        for _ in range(3):
            got = list(pool.map(head.introspective_features, batches))
            for e, g in zip(expected, got, strict=True):
                assert torch.equal(e, g)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64])
def test_other_float_dtypes_are_converted_and_integers_are_explained(dtype):
    """Issue 15.10: float16/bfloat16/float64 images run (converted to f's dtype); uint8 gets a clear error."""
    torch.manual_seed(0)
    head = IntrospectiveHead.wrap(timm.create_model("resnet18", num_classes=10).eval(), loss="mse")
    x = torch.randn(2, 3, 32, 32).to(dtype)
    expected = head.introspective_features(x.float())
    assert torch.equal(head.introspective_features(x), expected)
    with pytest.raises(InputShapeError, match="float images normalized"):
        head.introspective_features((x.float() * 50 + 128).clamp(0, 255).to(torch.uint8))


def test_a_classifier_inside_a_container_is_found_and_exact():
    """Issue 15.11: a classifier that is nn.Sequential(Dropout, Linear) is introspected through its Linear."""
    from timm_introspect import autograd_features

    torch.manual_seed(0)
    model = timm.create_model("resnet18", num_classes=10).double().eval()
    model.fc = nn.Sequential(nn.Dropout(0.2), nn.Linear(512, 10)).double()
    head = IntrospectiveHead.wrap(model, loss="mse", scale=False)
    assert [(c.name, c.kind) for c in head.classifiers] == [("fc.1", "linear")]
    x = torch.randn(3, 3, 32, 32, dtype=torch.float64)
    expected = autograd_features(model, x, "mse", 1.0)["fc.1"]
    assert torch.allclose(head.introspective_features(x), expected, rtol=1e-10, atol=1e-12)
