"""ETS and DAC against their definitions: by hand, by brute force, and by recovering known parameters."""

import itertools

import numpy as np
import pytest
import torch

from timm_introspect.core.calibration import (
    DensityTemperature,
    EnsembleTemperature,
    fit_dac,
    fit_ets,
    knn_distances,
)
from timm_introspect.errors import InvalidArgumentError


def _sample(p: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    return torch.multinomial(p, 1, generator=gen)[:, 0]


def test_ets_probabilities_are_the_papers_mixture_by_hand():
    z = torch.tensor([[2.0, 0.0, -1.0], [0.5, 0.5, 3.0]])
    ets = EnsembleTemperature(2.0, (0.5, 0.3, 0.2))
    by_hand = []
    for row in z.tolist():
        e_t = [np.exp(v / 2.0) for v in row]
        e_1 = [np.exp(v) for v in row]
        by_hand.append([0.5 * a / sum(e_t) + 0.3 * b / sum(e_1) + 0.2 / 3 for a, b in zip(e_t, e_1, strict=True)])
    torch.testing.assert_close(ets.probs(z), torch.tensor(by_hand, dtype=torch.float32), rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(ets(z).exp(), torch.tensor(by_hand, dtype=torch.float32), rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("loss", ["mse", "nll"])
def test_ets_weights_minimize_the_loss_against_a_brute_force_grid(loss):
    gen = torch.Generator().manual_seed(0)
    z = 4 * torch.randn(600, 5, generator=gen)
    # labels from a known mixture: 60 % softmax(z / 2), 10 % softmax(z), 30 % uniform
    p_true = 0.6 * torch.softmax(z / 2, 1) + 0.1 * torch.softmax(z, 1) + 0.3 / 5
    y = _sample(p_true, gen)
    ets = fit_ets(z, y, loss=loss)
    assert abs(sum(ets.weights) - 1) < 1e-9 and min(ets.weights) >= 0

    def objective(w):
        p = EnsembleTemperature(ets.temperature, w).probs(z.double())
        if loss == "mse":
            return torch.mean((p - torch.eye(5, dtype=p.dtype)[y]) ** 2).item()
        return -p[torch.arange(len(y)), y].log().mean().item()

    grid = [(a, b, 1 - a - b) for a, b in itertools.product(np.linspace(0, 1, 41), repeat=2) if a + b <= 1 + 1e-12]
    best = min(grid, key=objective)
    assert objective(ets.weights) <= objective(best) + 1e-9
    assert np.allclose(ets.weights, best, atol=0.05)


def test_knn_distances_equal_brute_force_on_unit_vectors():
    gen = torch.Generator().manual_seed(1)
    bank, queries = torch.randn(300, 7, generator=gen), 3 * torch.randn(50, 7, generator=gen)
    b = bank.numpy() / np.linalg.norm(bank.numpy(), axis=1, keepdims=True)
    q = queries.numpy() / np.linalg.norm(queries.numpy(), axis=1, keepdims=True)
    d2 = ((q[:, None, :] - b[None, :, :]) ** 2).sum(-1)
    for k in (1, 5, 300):
        expected = np.sort(d2, axis=1)[:, k - 1]
        np.testing.assert_allclose(knn_distances(bank, queries, k, chunk=16).numpy(), expected, atol=2e-6)
    with pytest.raises(InvalidArgumentError, match="k must be"):
        knn_distances(bank, queries, 301)


def test_dac_temperature_and_scaled_logits_by_hand():
    dac = DensityTemperature((2.0, 0.5), -0.25)
    s = torch.tensor([[0.5, 1.0], [0.1, 0.0]])
    t = dac.temperature(s)
    torch.testing.assert_close(t, torch.tensor([2 * 0.5 + 0.5 * 1.0 - 0.25, 2 * 0.1 - 0.25], dtype=torch.float64)
                               .clamp_min(1e-20))
    z = torch.tensor([[3.0, 1.0], [1.0, 0.0]])
    torch.testing.assert_close(dac(z, s)[0], z[0] / 1.25)
    with pytest.raises(InvalidArgumentError, match="one per layer"):
        dac.temperature(torch.zeros(2, 3))


@pytest.mark.parametrize("loss", ["nll", "mse"])
def test_dac_recovers_a_known_per_sample_temperature(loss):
    """Labels drawn from softmax(z / T(x)) with T(x) = 3 s_1 + 0 s_2 + 0.5: the fit finds those weights."""
    gen = torch.Generator().manual_seed(2)
    n = 6000
    z = 3 * torch.randn(n, 4, generator=gen)
    s = torch.rand(n, 2, generator=gen)
    t = 3.0 * s[:, 0] + 0.5
    y = _sample(torch.softmax(z / t[:, None], 1), gen)
    dac = fit_dac(z, y, s, loss=loss)
    assert dac.weights[0] == pytest.approx(3.0, abs=0.6)
    assert dac.weights[1] == pytest.approx(0.0, abs=0.3)
    assert dac.bias == pytest.approx(0.5, abs=0.25)
    # and it beats a single temperature on those labels
    nll = torch.nn.functional.cross_entropy
    single = fit_dac(z, y, torch.zeros(n, 1), loss=loss)
    assert nll(dac(z, s).float(), y) < nll(single(z, torch.zeros(n, 1)).float(), y) - 0.01


def test_bad_arguments_are_refused():
    with pytest.raises(InvalidArgumentError, match="loss must be"):
        fit_ets(torch.zeros(3, 2), torch.zeros(3, dtype=torch.long), loss="hinge")
    with pytest.raises(InvalidArgumentError, match="n >= 1"):
        fit_dac(torch.zeros(0, 2), torch.zeros(0, dtype=torch.long), torch.zeros(0, 1))


def test_fit_calibrators_compose_the_fitted_parts():
    from timm_introspect.core.calibration import fit_calibrators
    from timm_introspect.core.metrics import fit_temperature

    gen = torch.Generator().manual_seed(3)
    z, s = 4 * torch.randn(500, 3, generator=gen), torch.rand(500, 2, generator=gen)
    y = _sample(torch.softmax(z / (1 + 2 * s[:, :1]), 1), gen)
    cal = fit_calibrators(z, y, s)
    assert set(cal) == {"TS", "ETS", "DAC+TS", "DAC+ETS"}
    torch.testing.assert_close(cal["TS"](z), z / fit_temperature(z, y))
    torch.testing.assert_close(cal["ETS"](z), fit_ets(z, y)(z))
    dac = fit_dac(z, y, s)
    torch.testing.assert_close(cal["DAC+ETS"](z, s), fit_ets(dac(z, s), y)(dac(z, s)))
    torch.testing.assert_close(cal["DAC+TS"](z, s), dac(z, s) / fit_temperature(dac(z, s), y))
    with pytest.raises(InvalidArgumentError, match="density-aware"):
        cal["DAC+TS"](z)
    with pytest.raises(InvalidArgumentError, match="density scores"):
        fit_calibrators(z, y, methods=["DAC+TS"])
