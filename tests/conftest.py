"""Fixtures shared by the tests (helper functions are in helpers.py)."""

from __future__ import annotations

import pytest
import torch


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
    from hub_server import HubServer
    from huggingface_hub import constants

    with HubServer() as server:
        monkeypatch.setattr(constants, "ENDPOINT", server.endpoint)
        monkeypatch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE",
                            server.endpoint + "/{repo_id}/resolve/{revision}/{filename}")
        monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "cache"))
        monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
        monkeypatch.setattr(datasets.config, "HF_ENDPOINT", server.endpoint)
        monkeypatch.setattr(datasets.config, "HUB_DATASETS_URL",
                            server.endpoint + "/datasets/{repo_id}/resolve/{revision}/{path}")
        monkeypatch.setenv("HF_TOKEN", "hf_test_token")
        yield server
