"""f's layer features for DAC: captured in f's own forward pass, equal to timm's forward_intermediates."""

import pytest
import timm
import torch

from timm_introspect.errors import InvalidArgumentError, NotFittedError
from timm_introspect.model.density import DensityScorer, LayerFeatures, pool_features


def test_captured_stage_features_equal_timms_intermediates():
    torch.manual_seed(0)
    model = timm.create_model("resnet10t", num_classes=5, pretrained=False).eval()
    x = torch.randn(3, 3, 64, 64)
    layers = LayerFeatures(model)
    with torch.no_grad(), layers.capture() as got:
        logits = torch.cat([model(x[:2]), model(x[2:])])  # two batches: features concatenated in order
    feats = got.features(logits)
    with torch.no_grad():
        maps = model.forward_intermediates(x, intermediates_only=True)
    assert len(feats) == len(maps) + 1
    for f, m in zip(feats, maps, strict=False):
        torch.testing.assert_close(f, m.mean((2, 3)), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(feats[-1], model(x).detach(), rtol=1e-5, atol=1e-6)
    with torch.no_grad():  # hooks are gone after the block
        model(x)
    assert len(got.features()[0]) == 3


def test_pooling_of_tokens_and_channels_last():
    assert pool_features(torch.ones(2, 5, 4)).shape == (2, 4)
    x = torch.arange(2 * 3 * 3 * 8, dtype=torch.float32).reshape(2, 3, 3, 8)
    torch.testing.assert_close(pool_features(x, channels=8), x.mean((1, 2)))


def test_density_scores_are_knn_distances_per_layer():
    gen = torch.Generator().manual_seed(0)
    bank = [torch.randn(40, 3, generator=gen), torch.randn(40, 6, generator=gen)]
    scorer = DensityScorer(k=1).fit(bank)
    s = scorer([b[:5] for b in bank])  # the bank's own images are at distance 0 from themselves
    torch.testing.assert_close(s, torch.zeros(5, 2), atol=1e-5, rtol=0)
    far = scorer([-b[:5] for b in bank])
    assert (far > 1e-3).all()  # not in the bank: a positive distance
    with pytest.raises(NotFittedError):
        DensityScorer()([bank[0]])
    with pytest.raises(InvalidArgumentError, match="fewer than k"):
        DensityScorer(k=50).fit(bank)
