"""r_x from one batched forward pass equals per-image ``loss.backward()`` on the classifier weight.

Every loss of the paper's Table 7, with target 1 and a "-M"-style target, on architectures from many
timm families (linear heads, 1x1-conv heads, two averaged heads), in float64 and float32.
"""

import pytest
import torch
import torch.nn.functional as F
from helpers import rel_err, timm_model
from torch import nn

from timm_introspect import LOSSES, IntrospectiveHead, autograd_features

# (architecture, create_model kwargs, input size): one or more per family
ARCHS = [
    ("resnet18", {}, 32),  # ResNet
    ("resnetv2_18", {}, 32),  # ResNetV2 / BiT: 1x1 conv head
    ("convnext_atto", {}, 32),  # ConvNeXt
    ("vit_tiny_patch16_224", {"img_size": 32}, 32),  # ViT
    ("deit_tiny_distilled_patch16_224", {"img_size": 32}, 32),  # DeiT distilled: two heads
    ("swin_tiny_patch4_window7_224", {"img_size": 56}, 56),  # Swin
    ("efficientnet_b0", {}, 32),  # EfficientNet
    ("mobilenetv3_small_050", {}, 32),  # MobileNetV3
    ("regnetx_002", {}, 32),  # RegNet
    ("dla46_c", {}, 32),  # DLA: 1x1 conv head
    ("levit_128s", {"img_size": 64}, 64),  # LeViT: two heads inside NormLinear containers
    ("maxvit_nano_rw_256", {"img_size": 64}, 64),  # MaxViT
    ("pit_ti_distilled_224", {"img_size": 64}, 64),  # PiT distilled: two heads
    ("mixer_s16_224", {"img_size": 32}, 32),  # MLP-Mixer
    ("cait_xxs24_224", {"img_size": 32}, 32),  # CaiT: class-attention head
    ("tiny_vit_5m_224", {}, 64),  # TinyViT
    ("dpn48b", {}, 32),  # DPN: 1x1 conv head
    ("xcit_nano_12_p16_224", {"img_size": 32}, 32),  # XCiT
    ("hrnet_w18_small", {}, 64),  # HRNet
    ("eva02_tiny_patch14_224", {"img_size": 28}, 28),  # EVA-02
]


def _ids(arch):
    return arch[0]


@pytest.mark.parametrize("arch", ARCHS, ids=_ids)
def test_every_loss_matches_autograd_float64(arch, images):
    name, kwargs, size = arch
    model = timm_model(name, torch.float64, **kwargs)
    x = images(2, size, torch.float64)
    # target 1 on every architecture; the "-M" style target on the first few
    targets = (1.0, 2.5) if arch in ARCHS[:6] else (1.0,)
    for loss in LOSSES:
        for target in targets:
            head = IntrospectiveHead.wrap(model, loss=loss, target=target, scale=False)
            ours = head.introspective_features(x)
            ours = ours if isinstance(ours, dict) else {head.classifiers[0].name: ours}
            ref = autograd_features(model, x, loss, target)
            assert ours.keys() == ref.keys()
            for key in ref:
                weight = model.get_submodule(key).weight
                assert ours[key].shape == (2, *weight.shape)
                err = rel_err(ours[key], ref[key])
                assert err < 1e-5, f"{name} {loss} target={target} {key}: relative error {err:.2e}"


@pytest.mark.parametrize("arch", ARCHS[:12], ids=_ids)
def test_matches_autograd_float32(arch, images):
    name, kwargs, size = arch
    model = timm_model(name, torch.float32, **kwargs)
    x = images(3, size, torch.float32)
    head = IntrospectiveHead.wrap(model, loss="mse", target=2.5, scale=False)
    ours = head.introspect(x).features()
    ref = autograd_features(model, x, "mse", 2.5)
    for key in ref:
        assert rel_err(ours[key], ref[key]) < 1e-4


def test_two_heads_give_both_features(images):
    model = timm_model("deit_tiny_distilled_patch16_224", torch.float64, img_size=32)
    head = IntrospectiveHead.wrap(model, scale=False)
    feats = head.introspective_features(images(2, 32))
    assert set(feats) == {"head", "head_dist"}
    assert head.num_features == 2 * 10 * 192
    # each head gets half of dJ/dz: the features differ only through the heads' own inputs
    assert not torch.allclose(feats["head"], feats["head_dist"])


class CosineClassifier(nn.Module):
    """A classifier that is neither nn.Linear nor a 1x1 conv: only the torch.func fallback applies."""

    def __init__(self, in_features: int, num_classes: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(num_classes, in_features))
        self.scale = 10.0

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.scale * F.normalize(h, dim=-1) @ F.normalize(self.weight, dim=-1).T


def test_functional_fallback_on_custom_classifier(images):
    import timm

    torch.manual_seed(0)
    model = timm.create_model("resnet18", num_classes=10).double().eval()
    model.fc = CosineClassifier(512, 10).double()
    head = IntrospectiveHead.wrap(model, loss="ce", scale=False)
    assert [c.kind for c in head.classifiers] == ["functional"]
    x = images(3, 32)
    assert rel_err(head.introspective_features(x), autograd_features(model, x, "ce")["fc"]) < 1e-10
