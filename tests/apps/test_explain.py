"""Explanations: Grad-CAM and "why P, rather than Q?" maps, checked against autograd the authors' way.

The reference runs one image and one target per forward + backward pass (F.cross_entropy(z, Q).backward(),
or z_P.backward() for Grad-CAM), reads the gradient at the feature map and averages it over positions, with
the layout of each model written out by hand. Tiny models in float64.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import timm
import torch
import torch.nn.functional as F
from helpers import CLASSES, make_images, rel_err, timm_model
from PIL import Image

from timm_introspect import InputShapeError, InvalidArgumentError, NoClassifierError, NoSpatialMapError, create_model
from timm_introspect.apps.explain import (
    ContrastiveTarget,
    Explainer,
    contrastive_cam,
    deletion_curves,
    deletion_logits,
    grad_cam,
    margin_auc,
    token_reshape,
)
from timm_introspect.io.hub import save_backbone

VIT = dict(img_size=32, patch_size=8, depth=2)
SWIN = dict(img_size=64, window_size=4, depths=(1, 1, 1, 1), embed_dim=24, num_heads=(1, 2, 2, 4))


def nchw(t):
    return t


def nhwc(t):
    return t.permute(0, 3, 1, 2)


def tokens(prefix, grid):
    def to_map(t):
        return t[:, prefix:].reshape(t.shape[0], *grid, t.shape[-1]).permute(0, 3, 1, 2)

    return to_map


def reference(model, x, contrast, to_map, layer=None):
    """Grad-CAM ``(B, h, w)`` and contrastive maps ``(B, K, h, w)``: one backward pass per image and target."""
    gcams, maps = [], []
    for i in range(len(x)):
        per_image = []
        for q in [None, *contrast[i]]:
            if layer is None:
                act = model.forward_features(x[i : i + 1])
                logits = model.forward_head(act)
            else:
                seen: list[torch.Tensor] = []
                handle = model.get_submodule(layer).register_forward_hook(lambda m, a, out, seen=seen: seen.append(out))
                logits = model(x[i : i + 1])
                handle.remove()
                act = seen[0]
            act.retain_grad()
            loss = logits[0, logits.argmax()] if q is None else F.cross_entropy(logits, torch.tensor([q]))
            loss.backward()
            grad, value = to_map(act.grad), to_map(act.detach())
            alpha = grad.mean(dim=(2, 3))
            per_image.append(torch.relu((alpha[:, :, None, None] * value).sum(1))[0])
        gcams.append(per_image[0])
        maps.append(torch.stack(per_image[1:]))
    return torch.stack(gcams), torch.stack(maps)


# name, timm kwargs, image size, layout of the final map, the closed form's tail
CLOSED = {
    "cnn": ("test_resnet", {}, 64, nchw, "linear"),
    "convnext": ("test_convnext", {}, 64, nchw, "head-jacobian"),
    "swin": ("swin_tiny_patch4_window7_224", SWIN, 64, nhwc, "linear"),
    "vit-avg": ("vit_tiny_patch16_224", dict(VIT, global_pool="avg"), 32, tokens(1, (4, 4)), "head-jacobian"),
    "distilled": ("repvit_m0_9", {}, 64, nchw, "head-jacobian"),  # head and head_dist (BN + linear each), averaged
}


def _model(name, kwargs):
    return timm_model(name, **{k: tuple(v) if isinstance(v, list) else v for k, v in kwargs.items()})


@pytest.mark.parametrize("case", list(CLOSED))
def test_closed_form_equals_autograd_cross_entropy(case, images):
    name, kwargs, size, to_map, tail = CLOSED[case]
    model = _model(name, kwargs)
    x = images(2, size)
    out = Explainer(model)(x, contrast="all")
    assert (out.plan.method, out.plan.layer, out.plan.tail) == ("closed-form", "forward_features", tail)
    assert torch.equal(out.contrast, torch.arange(10).expand(2, 10))
    ref_gcam, ref_maps = reference(model, x, out.contrast.tolist(), to_map)
    assert ref_maps.abs().amax() > 0 and ref_gcam.abs().amax() > 0
    assert rel_err(out.contrastive, ref_maps) < 1e-10
    assert rel_err(out.grad_cam, ref_gcam) < 1e-10
    assert torch.allclose(out.logits, model(x), atol=1e-12)


@pytest.mark.parametrize("name, prefix", [("vit_tiny_patch16_224", 1), ("deit_tiny_distilled_patch16_224", 2)])
def test_class_token_heads_use_the_last_norm1(name, prefix, images):
    """A ViT's (and DeiT-distilled's two) class-token head gives the final patch tokens no gradient: the maps
    are taken at the last block's norm1, by autograd, and equal the per-image reference there."""
    model = _model(name, VIT)
    x = images(2, 32)
    explainer = Explainer(model)
    out = explainer(x, contrast=[3, 7])
    assert (out.plan.method, out.plan.layer, out.plan.layout.prefix) == ("autograd", "blocks.1.norm1", prefix)
    assert "class token" in out.plan.reason
    ref_gcam, ref_maps = reference(model, x, out.contrast.tolist(), tokens(prefix, (4, 4)), layer="blocks.1.norm1")
    assert rel_err(out.contrastive, ref_maps) < 1e-10
    assert rel_err(out.grad_cam, ref_gcam) < 1e-10
    with pytest.raises(InvalidArgumentError, match="closed form does not apply.*class token"):
        Explainer(model, method="closed-form").plan(x)


@pytest.mark.parametrize("case", ["cnn", "convnext"])
def test_closed_form_equals_our_autograd_path(case, images):
    name, kwargs, size, _, _ = CLOSED[case]
    model = _model(name, kwargs)
    x = images(3, size, seed=1)
    closed = Explainer(model)(x, contrast="all")
    auto = Explainer(model, method="autograd")(x, contrast="all")
    assert auto.plan.method == "autograd" and closed.plan.method == "closed-form"
    assert rel_err(closed.contrastive, auto.contrastive) < 1e-10
    assert rel_err(closed.grad_cam, auto.grad_cam) < 1e-10


def test_max_pooling_and_named_layers_go_through_autograd(images):
    model = _model("test_resnet", dict(global_pool="max"))
    x = images(2, 64)
    out = Explainer(model)(x)
    assert out.plan.method == "autograd" and "max pooling" in out.plan.reason
    _, ref = reference(model, x, out.contrast.tolist(), nchw)
    assert rel_err(out.contrastive, ref) < 1e-10

    model = _model("test_resnet", {})
    out = Explainer(model, target_layer="layer3")(x, contrast=[0, 5])
    assert out.plan.layer == "layer3" and out.contrastive.shape == (2, 2, 4, 4)
    ref_gcam, ref = reference(model, x, out.contrast.tolist(), nchw, layer="layer3")
    assert rel_err(out.contrastive, ref) < 1e-10 and rel_err(out.grad_cam, ref_gcam) < 1e-10


@pytest.mark.parametrize("case", ["convnext", "vit"])
def test_batch_equals_single_images(case, images):
    model = _model("test_convnext", {}) if case == "convnext" else _model("vit_tiny_patch16_224", VIT)
    x = images(3, 64 if case == "convnext" else 32, seed=2)
    explainer = Explainer(model)
    for contrast in ("all", None):
        batch = explainer(x, contrast)
        for i in range(3):
            one = explainer(x[i : i + 1], contrast)
            assert torch.equal(one.contrast[0], batch.contrast[i])
            assert torch.allclose(one.contrastive[0], batch.contrastive[i], rtol=1e-10, atol=1e-12)
            assert torch.allclose(one.grad_cam[0], batch.grad_cam[i], rtol=1e-10, atol=1e-12)


def test_runner_up_is_the_default_and_maps_are_normalized(images):
    model = _model("test_convnext", {})
    x = images(2, 64)
    out = Explainer(model)(x)
    assert torch.equal(out.contrast[:, 0], model(x).topk(2, dim=1).indices[:, 1])
    maps = contrastive_cam(model, x)
    assert maps.shape == (2, 1, 64, 64) and maps.amin() == 0
    assert torch.allclose(maps.flatten(2).amax(-1), maps.new_ones(2, 1))
    assert torch.allclose(maps, out.maps("contrastive"))
    assert grad_cam(model, x).shape == (2, 64, 64)


def test_class_names_and_bad_contrasts(images):
    torch.manual_seed(0)
    model = timm.create_model("test_resnet", num_classes=3, pretrained_cfg_overlay=dict(label_names=CLASSES)).eval()
    x = images(2, 64, dtype=torch.float32)
    out = Explainer(model)(x, contrast=["green", 2])
    assert out.contrast.tolist() == [[1, 2], [1, 2]]
    p = CLASSES[out.prediction[0]]
    assert out.titles(0) == [f"why {p}?", f"why {p}, rather than green?", f"why {p}, rather than blue?"]
    explainer = Explainer(model)
    with pytest.raises(InvalidArgumentError, match="unknown class name 'gren'.*did you mean 'green'"):
        explainer(x, contrast="gren")
    with pytest.raises(InvalidArgumentError, match="out of range: the model has 3 classes"):
        explainer(x, contrast=3)
    with pytest.raises(InvalidArgumentError, match="out of range"):
        explainer(x, contrast=torch.tensor([0, -1]))
    with pytest.raises(InvalidArgumentError, match="pass \\(B,\\) or \\(B, K\\)"):
        explainer(x, contrast=torch.tensor([0, 1, 2]))
    with pytest.raises(InvalidArgumentError, match="no class names"):
        Explainer(_model("test_resnet", {}))(images(1, 64), contrast="cat")
    with pytest.raises(InvalidArgumentError, match="2 label_names for a model with 3 classes"):
        Explainer(model, label_names=["a", "b"])


def test_bad_inputs_get_clear_errors(images):
    model = _model("test_resnet", {})
    with pytest.raises(NoSpatialMapError, match="1x1 map"):  # 32 px: the last stage is 1x1
        Explainer(model)(images(1, 32))
    with pytest.raises(NoSpatialMapError, match="not a spatial map"):
        Explainer(model, target_layer="fc")(images(1, 64))
    with pytest.raises(InvalidArgumentError, match="no module 'layer9'.*did you mean"):
        Explainer(model, target_layer="layer9")
    with pytest.raises(InputShapeError, match="add a batch dimension"):
        Explainer(model)(images(1, 64)[0])
    with pytest.raises(InputShapeError, match="uint8 images"):
        Explainer(model)(torch.zeros(1, 3, 64, 64, dtype=torch.uint8))
    with pytest.raises(NoClassifierError, match="num_classes=0"):
        Explainer(timm.create_model("test_resnet", num_classes=0))
    vit = _model("vit_tiny_patch16_224", VIT)
    with pytest.raises(NoSpatialMapError, match="only the class token"):  # the final tokens: no patch gradient
        Explainer(vit, target_layer="norm")(images(1, 32))


def test_pytorch_grad_cam_with_our_contrastive_target(images):
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.image import scale_cam_image

    model = _model("vit_tiny_patch16_224", VIT)
    x = images(2, 32)
    ours = Explainer(model)(x, contrast=[4])
    reshape = token_reshape(model, (32, 32), "blocks.1.norm1")
    with GradCAM(model, [model.blocks[-1].norm1], reshape_transform=reshape) as cam:
        theirs = cam(x, targets=[ContrastiveTarget(4), ContrastiveTarget(4)])
    # pytorch-grad-cam scales each layer's map to [0, 1], resizes it, then scales the result again
    expected = scale_cam_image(scale_cam_image(ours.contrastive[:, 0].numpy(), (32, 32)))
    assert np.abs(theirs - expected).max() < 1e-6


def test_deletion_removes_the_top_pixels(images):
    model = _model("test_resnet", {})
    x = images(2, 64)
    maps = torch.zeros(2, 64, 64, dtype=torch.float64)
    maps[:, :16, :32] = 1.0  # 512 pixels = 1/8 of the image ranked first
    logits = deletion_logits(model, x, maps, [0.0, 1 / 8, 1.0], fill="mean")
    removed = x.clone()
    removed[:, :, :16, :32] = 0
    with torch.no_grad():
        assert torch.allclose(logits[:, 0], model(x)) and torch.allclose(logits[:, 2], model(torch.zeros_like(x)))
        assert torch.allclose(logits[:, 1], model(removed))
    curves = deletion_curves(model, x, maps, torch.tensor([0, 1]), torch.tensor([1, 0]), [0.0, 1 / 8, 1.0])
    assert torch.allclose(curves.margins[0], (logits[0, :, 0] - logits[0, :, 1]).float().double().to(curves.margins))
    assert margin_auc(torch.tensor([[2.0, 2.0, 2.0]]), [0.0, 0.5, 1.0]).item() == pytest.approx(2.0)
    assert margin_auc(torch.tensor([[2.0, 0.0]]), [0.0, 0.4]).item() == pytest.approx(1.0)
    with pytest.raises(InvalidArgumentError, match="fill must be one of"):
        deletion_logits(model, x, maps, [0.5], fill="noise")


def _write_images(folder, n=2):
    pictures, _ = make_images(n, seed=0, size=32)
    paths = []
    for i, picture in enumerate(pictures):
        path = folder / f"image{i}.png"
        picture.save(path)
        paths.append(str(path))
    return paths


def test_cli_writes_a_png_grid(tmp_path):
    from timm_introspect.cli import main

    torch.manual_seed(0)
    model = create_model("test_resnet", 3, cifar_stem=True).eval()
    save_backbone(model, tmp_path / "f", CLASSES)
    paths = _write_images(tmp_path)
    assert main(["explain", "--backbone", str(tmp_path / "f"), "--images", *paths, "--contrast", "all",
                 "--out", str(tmp_path / "maps")]) == 0
    for i in range(2):
        with Image.open(tmp_path / "maps" / f"image{i}.png") as grid:
            assert grid.format == "PNG" and grid.width > 3 * grid.height / 2 > 200
    summary = json.loads((tmp_path / "maps" / "explanations.json").read_text())
    assert summary["method"] == "closed-form" and len(summary["images"]) == 2
    assert summary["images"][0]["contrast"] == CLASSES and summary["images"][0]["prediction"] in CLASSES
    with pytest.raises(SystemExit, match="unknown class name 'purple'"):
        main(["explain", "--backbone", str(tmp_path / "f"), "--images", paths[0], "--contrast", "purple",
              "--out", str(tmp_path / "bad")])
    with pytest.raises(SystemExit, match="does not exist"):
        main(["explain", "--model", str(tmp_path / "f"), "--images", str(tmp_path / "none.png"),
              "--out", str(tmp_path / "bad")])


def test_cli_loads_introspective_models_and_backbones_from_the_hub(hub, tmp_path):
    from huggingface_hub import HfApi

    from timm_introspect import IntrospectiveHead
    from timm_introspect.cli import main

    torch.manual_seed(0)
    model = create_model("test_resnet", 3, cifar_stem=True).eval()
    IntrospectiveHead.wrap(model, loss="mse", scale=False, label_names=CLASSES).push_to_hub("tester/introspective")
    save_backbone(model, tmp_path / "f", CLASSES)
    api = HfApi()
    api.create_repo("tester/backbone")
    api.upload_folder(repo_id="tester/backbone", folder_path=str(tmp_path / "f"))
    paths = _write_images(tmp_path, 1)
    summaries = []
    for repo in ("introspective", "backbone"):
        out = tmp_path / repo
        assert main(["explain", "--model", f"hf-hub:tester/{repo}", "--images", *paths, "--contrast", "green", "blue",
                     "--out", str(out)]) == 0
        assert (out / "image0.png").is_file()
        summaries.append(json.loads((out / "explanations.json").read_text())["images"])
    assert summaries[0] == summaries[1] and summaries[0][0]["contrast"] == ["green", "blue"]
    with pytest.raises(SystemExit, match="not a Hub repository"):
        main(["explain", "--model", "hf-hub:tester/nothing", "--images", *paths, "--out", str(tmp_path / "x")])


def test_explain_job_without_matplotlib_names_the_extra(tmp_path, monkeypatch):
    import sys

    from timm_introspect import MissingDependencyError
    from timm_introspect.apps.explain.job import explain_images

    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib now fails
    with pytest.raises(MissingDependencyError, match=r"timm-introspect\[explain\]"):
        explain_images(tmp_path / "no-model", [tmp_path / "x.png"], tmp_path / "out")
    assert not (tmp_path / "out").exists()
