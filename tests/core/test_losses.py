"""The closed-form dJ/dz of every loss equals autograd of PyTorch's loss, and J is the loss we claim."""

import pytest
import torch
import torch.nn.functional as F

from timm_introspect import LOSSES, UnknownLossError, introspection_loss, loss_delta, parse_loss


@pytest.fixture(autouse=True)
def _own_registry(monkeypatch):
    """Losses a test registers are gone after it (the registry is process-wide)."""
    from timm_introspect.core import losses

    monkeypatch.setattr(losses, "_LOSSES", dict(losses._LOSSES))


@pytest.mark.parametrize("loss", LOSSES)
@pytest.mark.parametrize("target", [1.0, 3.7])
def test_closed_form_delta_matches_autograd(loss, target):
    torch.manual_seed(0)
    z = (3 * torch.randn(5, 10, dtype=torch.float64)).requires_grad_(True)
    (expected,) = torch.autograd.grad(introspection_loss(loss, z, target).sum(), z)
    torch.testing.assert_close(loss_delta(loss, z.detach(), target), expected, rtol=1e-12, atol=1e-12)


def test_losses_are_the_paper_table():
    assert set(LOSSES) == {"ce", "mse", "bce", "l1", "smooth_l1", "nll", "soft_margin"}


def test_loss_values_by_hand():
    z = torch.tensor([[0.5, -1.0, 2.0]], dtype=torch.float64)
    t = 2.0
    # MSE: sum_j (z_j - t)^2
    assert introspection_loss("mse", z, t).item() == pytest.approx(1.5**2 + 3.0**2 + 0.0)
    # CE with probability targets t * 1_N: -t * sum_j log softmax(z)_j
    assert introspection_loss("ce", z, t).item() == pytest.approx(-t * torch.log_softmax(z, -1).sum().item())
    # NLL summed over every class index, weighted by the target: -sum_j t z_j
    assert introspection_loss("nll", z, t).item() == pytest.approx(-t * (0.5 - 1.0 + 2.0))
    # L1 and smooth L1 (beta 1)
    assert introspection_loss("l1", z, t).item() == pytest.approx(1.5 + 3.0 + 0.0)
    assert introspection_loss("smooth_l1", z, t).item() == pytest.approx((1.5 - 0.5) + (3.0 - 0.5) + 0.0)
    # soft margin: sum_j log(1 + exp(-t z_j))
    assert introspection_loss("soft_margin", z, t).item() == pytest.approx(torch.log1p(torch.exp(-t * z)).sum().item())
    # nll with log-probabilities as input is CE with c = 1
    logp = torch.log_softmax(z, -1)
    assert introspection_loss("nll", logp, 1.0).item() == pytest.approx(introspection_loss("ce", z, 1.0).item())
    assert introspection_loss("bce", z, 1.0).item() == pytest.approx(
        F.binary_cross_entropy_with_logits(z, torch.ones_like(z), reduction="sum").item()
    )


def test_losses_are_per_sample():
    z = torch.randn(4, 7, dtype=torch.float64)
    for loss in LOSSES:
        batch = introspection_loss(loss, z, 1.5)
        single = torch.cat([introspection_loss(loss, z[i : i + 1], 1.5) for i in range(4)])
        torch.testing.assert_close(batch, single)


@pytest.mark.parametrize(
    "name, expected",
    [("mse", ("mse", None)), ("MSE-M", ("mse", "M")), ("smooth_l1-M", ("smooth_l1", "M")), ("L1-m", ("l1", "M")),
     ("SoftMargin", ("soft_margin", None)), ("cross_entropy", ("ce", None))],
)
def test_parse_loss(name, expected):
    assert parse_loss(name) == expected


def test_unknown_loss_says_what_to_use():
    with pytest.raises(UnknownLossError, match="use one of ce, mse"):
        parse_loss("hinge")
    with pytest.raises(ValueError):  # also a ValueError, for callers that catch that
        loss_delta("hinge", torch.zeros(1, 3))


# --- the registry --------------------------------------------------------------------------------------

def test_a_registered_loss_is_used_by_name_everywhere():
    from timm_introspect.core.losses import list_losses, register_loss

    def quartic(z, t):
        return ((z - t) ** 4).sum(-1)

    def quartic_delta(z, t):
        return 4 * (z - t) ** 3

    assert register_loss("quartic", quartic, quartic_delta) is quartic  # function form

    @register_loss("huber2", delta=lambda z, t: torch.clamp(z - t, -2.0, 2.0))  # decorator form
    def huber2(z, t):
        return F.huber_loss(z, t, reduction="none", delta=2.0).sum(-1)

    assert list_losses()[: len(LOSSES)] == list(LOSSES) and {"quartic", "huber2"} <= set(list_losses())
    assert set(LOSSES) == {"ce", "mse", "bce", "l1", "smooth_l1", "nll", "soft_margin"}  # the built-ins only
    assert parse_loss("Huber2-M") == ("huber2", "M") and parse_loss("quartic") == ("quartic", None)
    torch.manual_seed(0)
    z = (3 * torch.randn(5, 10, dtype=torch.float64)).requires_grad_(True)
    for loss in ("quartic", "huber2"):
        (expected,) = torch.autograd.grad(introspection_loss(loss, z, 1.5).sum(), z)
        torch.testing.assert_close(loss_delta(loss, z.detach(), 1.5), expected, rtol=1e-12, atol=1e-12)
    register_loss("quartic", quartic, quartic_delta)  # registering the same pair again is harmless
    with pytest.raises(UnknownLossError, match="nll, .*quartic, huber2"):  # unknown names list the registered
        parse_loss("hinge")


@pytest.mark.parametrize("name", ["Hinge", "hinge_m", "smoothl1", "ce", "two words", ""])
def test_register_loss_refuses_bad_names_and_redefinitions(name):
    from timm_introspect import InvalidArgumentError
    from timm_introspect.core.losses import register_loss

    with pytest.raises(InvalidArgumentError):
        register_loss(name, lambda z, t: z.sum(-1), lambda z, t: torch.ones_like(z))


def test_register_loss_needs_the_closed_form_delta():
    from timm_introspect import IntrospectionError
    from timm_introspect.core.losses import register_loss

    with pytest.raises(IntrospectionError, match="delta"):
        register_loss("cubic", lambda z, t: ((z - t) ** 3).sum(-1))
