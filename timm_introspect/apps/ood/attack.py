"""L-infinity PGD for "OOD under attack" (Chen et al. 2020's protocol, the paper's Table 2).

In pixel space ([0, 1], before f's normalization): eps = 1/255, 10 steps of 1/255, a uniform random start
in the eps-ball, every iterate projected onto the ball and clipped to [0, 1]. The objective is the
cross-entropy of the softmax to the uniform distribution, ``L(x) = -1/N sum_j log softmax(model(x))_j``
(= KL(u || p) + log N):

* ``goal="uniform"`` (in-distribution images): descend on L, toward uniform predictions (look OOD);
* ``goal="confident"`` (OOD images): ascend on L, toward confident predictions (look ID).

``model`` is f (as in the paper) or, for the adaptive attack on H,
:class:`~timm_introspect.apps.ood.path.IntrospectiveLogits`: the gradient then runs through H, the scaling and
r_x (itself a gradient of f) into f.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Literal

import torch
import torch.nn.functional as F

from ...errors import InvalidArgumentError

__all__ = ["Normalize", "pgd_attack", "uniform_cross_entropy"]

Goal = Literal["uniform", "confident"]


def uniform_cross_entropy(logits: torch.Tensor) -> torch.Tensor:
    """Per sample ``-1/N sum_j log softmax(logits)_j``: 0 + log N at uniform predictions, large when confident."""
    return -F.log_softmax(logits, dim=1).mean(1)


class Normalize(torch.nn.Module):
    """Pixels in [0, 1] to a model's input: ``(x - mean) / std`` per channel."""

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return (pixels - self.mean.to(pixels)) / self.std.to(pixels)


def pgd_attack(
    model: Callable[[torch.Tensor], torch.Tensor],
    pixels: torch.Tensor,
    goal: Goal,
    normalize: Callable[[torch.Tensor], torch.Tensor],
    eps: float = 1 / 255,
    steps: int = 10,
    step_size: float = 1 / 255,
    random_start: bool = True,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Perturb images within ``eps`` (L-inf) to move ``model``'s prediction toward ``goal``.

    Args:
        model: normalized images -> logits (f, or ``IntrospectiveLogits(head)``).
        pixels: ``(B, C, H, W)`` images in [0, 1].
        goal: ``"uniform"`` (descend on :func:`uniform_cross_entropy`) or ``"confident"`` (ascend on it).
        normalize: pixels -> the model's input (e.g. :class:`Normalize` with f's mean and std).
        eps, steps, step_size: the ball's radius, the number of signed-gradient steps and their size.
        random_start: start from a uniform random point of the ball (clipped to [0, 1]).
        generator: for the random start.

    Returns:
        The perturbed images, detached, in [0, 1] and within ``eps`` of ``pixels``.
    """
    if goal not in ("uniform", "confident"):
        raise InvalidArgumentError(f"goal must be 'uniform' (ID images) or 'confident' (OOD images), got {goal!r}")
    if not pixels.is_floating_point() or pixels.dim() != 4:
        raise InvalidArgumentError(
            f"expected float pixels (B, C, H, W) in [0, 1], got {pixels.dtype} {tuple(pixels.shape)}")
    if eps < 0 or step_size < 0 or steps < 0:
        raise InvalidArgumentError(f"eps, step_size and steps must be >= 0; got {eps}, {step_size}, {steps}")
    sign = -1.0 if goal == "uniform" else 1.0
    with torch.inference_mode(False), torch.enable_grad():  # also when called under torch.inference_mode()
        x0 = pixels.detach().clone()
        lower, upper = (x0 - eps).clamp(0, 1), (x0 + eps).clamp(0, 1)
        x = x0.clone()
        if random_start and eps > 0:
            noise = torch.rand(x0.shape, generator=generator, dtype=x0.dtype, device="cpu").to(x0.device)
            x = torch.minimum(torch.maximum(x0 + (2 * noise - 1) * eps, lower), upper)
        for _ in range(steps):
            x = x.detach().requires_grad_(True)
            loss = uniform_cross_entropy(model(normalize(x))).sum()
            (grad,) = torch.autograd.grad(loss, x)
            x = torch.minimum(torch.maximum(x.detach() + sign * step_size * grad.sign(), lower), upper)
    return x.detach()
