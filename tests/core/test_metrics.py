"""Metrics against hand-computed cases."""

import math

import pytest
import torch

import timm_introspect
from timm_introspect.core.metrics import accuracy, brier_score, calibration_errors, classification_metrics, nll


def logits_for(probs):
    return torch.log(torch.tensor(probs, dtype=torch.float64))


def test_calibration_by_hand():
    # confidences 0.9, 0.9 (bin 9), 0.6 (bin 6), 0.35 -> (0.3, 0.4] bin 4... as three-class rows
    logits = logits_for([[0.9, 0.05, 0.05], [0.9, 0.05, 0.05], [0.6, 0.3, 0.1], [0.3, 0.35, 0.35]])
    labels = torch.tensor([0, 1, 0, 0])
    # bin (0.8, 0.9]: acc 1/2, conf 0.9 -> gap 0.4, 2 samples; bin (0.5, 0.6]: acc 1, conf 0.6 -> 0.4;
    # bin (0.3, 0.4]: predicted class 1 (first max), label 0 -> acc 0, conf 0.35 -> 0.35
    ece, mce = calibration_errors(logits, labels)
    assert ece == pytest.approx((2 * 0.4 + 0.4 + 0.35) / 4)
    assert mce == pytest.approx(0.4)


def test_confidence_one_and_empty_bins():
    logits = torch.tensor([[100.0, 0.0], [100.0, 0.0]], dtype=torch.float64)  # confidence 1.0: the last bin
    ece, mce = calibration_errors(logits, torch.tensor([0, 1]))
    assert ece == pytest.approx(0.5) and mce == pytest.approx(0.5)


def test_accuracy_nll_brier():
    logits = logits_for([[0.7, 0.2, 0.1], [0.1, 0.1, 0.8]])
    labels = torch.tensor([0, 0])
    assert accuracy(logits, labels) == 0.5
    assert nll(logits, labels) == pytest.approx(-(math.log(0.7) + math.log(0.1)) / 2)
    expected = ((0.3**2 + 0.2**2 + 0.1**2) + (0.9**2 + 0.1**2 + 0.8**2)) / 6
    assert brier_score(logits, labels) == pytest.approx(expected)
    assert classification_metrics(logits, labels)["count"] == 2


@pytest.mark.parametrize("n, scale", [(7, 1.0), (500, 3.0), (2000, 5.0)])
def test_ece_mce_match_torchmetrics(n, scale):
    """torchmetrics bins [lo, hi) with a separate bin for confidence 1.0; ours are Guo et al.'s (lo, hi].
    Away from bin edges the two agree exactly."""
    from torchmetrics.classification import MulticlassCalibrationError

    g = torch.Generator().manual_seed(n)
    logits = torch.randn(n, 10, generator=g) * scale
    labels = torch.randint(0, 10, (n,), generator=g)
    probs = torch.softmax(logits.double(), -1)  # the same confidences as ours
    conf = probs.max(-1).values
    assert not torch.isclose(conf * 10, (conf * 10).round(), rtol=0, atol=1e-12).any()  # no sample on an edge
    ece, mce = calibration_errors(logits, labels)
    assert ece == pytest.approx(MulticlassCalibrationError(10, n_bins=10, norm="l1")(probs, labels).item(), abs=1e-6)
    assert mce == pytest.approx(MulticlassCalibrationError(10, n_bins=10, norm="max")(probs, labels).item(), abs=1e-6)


def test_temperature_recovers_a_known_scale():
    from timm_introspect.core.metrics import fit_temperature

    g = torch.Generator().manual_seed(0)
    true_logits = torch.randn(4000, 10, generator=g, dtype=torch.float64) * 2
    labels = torch.multinomial(torch.softmax(true_logits, -1), 1, generator=g).squeeze(1)  # y ~ softmax(logits)
    t = fit_temperature(true_logits * 3, labels)  # logits 3x overconfident
    assert t == pytest.approx(3.0, rel=0.1)
    assert nll(true_logits * 3 / t, labels) < nll(true_logits * 3, labels)


def test_any_integer_labels_and_clear_errors():
    import numpy as np

    logits = torch.randn(50, 10, generator=torch.Generator().manual_seed(0))
    labels = torch.randint(0, 10, (50,), generator=torch.Generator().manual_seed(1))
    reference = classification_metrics(logits, labels)
    # CIFAR-10-C's labels.npy is uint8
    assert classification_metrics(logits, torch.as_tensor(labels.numpy().astype(np.uint8))) == reference
    assert classification_metrics(logits, labels.numpy().astype(np.int32)) == reference
    with pytest.raises(timm_introspect.DataError, match="integer class indices"):
        classification_metrics(logits, labels.float())
    with pytest.raises(ValueError, match="labels for logits"):
        classification_metrics(logits, labels[:49])


def test_ece_floor_is_what_a_calibrated_model_measures():
    """Labels drawn from the model's own probabilities (calibrated by construction) measure an ECE near the floor,
    the floor shrinks about as 1/sqrt(n), and a miscalibrated model measures far above its floor."""
    from timm_introspect import ece_floor

    g = torch.Generator().manual_seed(1)
    logits = 2.5 * torch.randn(4000, 10, generator=g)
    probs = torch.softmax(logits, 1)
    measured = [calibration_errors(logits[i::8], torch.multinomial(probs[i::8], 1, generator=g)[:, 0])[0]
                for i in range(8)]  # eight calibrated sets of 500
    floor = ece_floor(logits[:500], draws=40)
    assert 0.01 < floor < 0.08
    assert abs(sum(measured) / 8 - floor) < 0.3 * floor
    assert ece_floor(logits, draws=10) < 0.6 * floor  # 8x the images: about 1/sqrt(8) = 0.35 of the floor
    assert ece_floor(logits[:500], draws=40) == floor  # seeded
    labels = torch.multinomial(probs, 1, generator=g)[:, 0]
    assert calibration_errors(3 * logits, labels)[0] > 3 * ece_floor(3 * logits)  # overconfident: far above
    with pytest.raises(timm_introspect.InvalidArgumentError, match="draws"):
        ece_floor(logits, draws=0)
