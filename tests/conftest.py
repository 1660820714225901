from __future__ import annotations

import functools

import pytest
import timm
import torch
from torch import nn

from timm_introspect import find_classifiers


@functools.lru_cache(maxsize=None)
def timm_model(name: str, dtype: torch.dtype = torch.float64, **kwargs) -> torch.nn.Module:
    """A timm model with random weights and 10 classes, seeded, in eval mode (cached per worker)."""
    torch.manual_seed(0)
    model = timm.create_model(name, num_classes=10, **kwargs).to(dtype).eval()
    # timm zero-initializes some heads (e.g. MLP-Mixer): give every classifier random weights so that
    # logits, and hence introspective features, are not degenerate.
    for layer in find_classifiers(model):
        nn.init.normal_(layer.weight, std=layer.weight[0].numel() ** -0.5)
        if getattr(layer.module, "bias", None) is not None:
            nn.init.normal_(layer.module.bias, std=0.1)
    return model


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    """Relative error ||a - b|| / ||b|| (Frobenius)."""
    return ((a - b).norm() / b.norm().clamp_min(torch.finfo(b.dtype).tiny)).item()


@pytest.fixture
def images():
    def make(batch: int = 2, size: int = 32, dtype: torch.dtype = torch.float64, seed: int = 0) -> torch.Tensor:
        g = torch.Generator().manual_seed(seed)
        return torch.randn(batch, 3, size, size, generator=g, dtype=dtype)

    return make


@pytest.fixture
def hub(tmp_path, monkeypatch):
    """A Hub on 127.0.0.1 (tests/hub_server.py), an empty cache, a token: huggingface_hub and datasets
    configured as a user would (datasets reads HF_ENDPOINT when imported, so its copy is set too)."""
    import datasets.config
    from huggingface_hub import constants

    from hub_server import HubServer

    with HubServer() as server:
        monkeypatch.setattr(constants, "ENDPOINT", server.endpoint)
        monkeypatch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE", server.endpoint + "/{repo_id}/resolve/{revision}/{filename}")
        monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "cache"))
        monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
        monkeypatch.setattr(datasets.config, "HF_ENDPOINT", server.endpoint)
        monkeypatch.setattr(datasets.config, "HUB_DATASETS_URL",
                            server.endpoint + "/datasets/{repo_id}/resolve/{revision}/{path}")
        monkeypatch.setenv("HF_TOKEN", "hf_test_token")
        yield server
