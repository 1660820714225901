"""The main job's table scores the field's post-hoc calibrators of f: f+ETS, DAC+TS, DAC+ETS, computed here again
from f's outputs, timm's own intermediate features and an independent k-NN (numpy)."""

import numpy as np
import timm
import torch

from timm_introspect import IntrospectiveHead
from timm_introspect.core.calibration import fit_dac, fit_ets
from timm_introspect.core.metrics import classification_metrics, fit_temperature
from timm_introspect.jobs.robustness import corruption_benchmark, normalized_batches, summary_table


def _knn(bank: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
    b = bank / np.linalg.norm(bank, axis=1, keepdims=True)
    q = queries / np.linalg.norm(queries, axis=1, keepdims=True)
    return np.sort(((q[:, None] - b[None]) ** 2).sum(-1), axis=1)[:, k - 1]


def test_the_table_scores_ets_and_dac_as_their_definitions_say():
    torch.manual_seed(0)
    f = timm.create_model("test_resnet", num_classes=3).eval()
    f.pretrained_cfg = {**f.pretrained_cfg, "input_size": (3, 32, 32)}
    head = IntrospectiveHead.wrap(f, loss="ce", scale="none").eval()
    rng = np.random.default_rng(0)

    def images(n):
        return (rng.random((n, 32, 32, 3)) * 255).astype(np.uint8), rng.integers(0, 3, n)

    (train, _), (cal, y_cal), (test, y_test) = images(40), images(30), images(20)
    res = corruption_benchmark(head, test, y_test, (cal, y_cal), ["gaussian_noise"], severities=(3,),
                               progress=False, training=train, knn_k=5)
    assert res["models"] == ["f", "f+TS", "f+ETS", "DAC+TS", "DAC+ETS", "H"]

    def f_pass(x):  # f's logits and its stages, pooled, by timm's own forward_intermediates
        x = torch.cat(list(normalized_batches(f, x)))
        with torch.no_grad():
            maps = f.forward_intermediates(x, intermediates_only=True)
            z = f(x)
        return z, [m.mean((2, 3)).numpy() for m in maps] + [z.numpy()]

    (_, l_tr), (z_cal, l_cal), (z_te, l_te) = f_pass(train), f_pass(cal), f_pass(test)

    def scores(layers):
        return torch.as_tensor(np.stack([_knn(b, q, 5) for b, q in zip(l_tr, layers, strict=True)], 1))

    s_cal, s_te = scores(l_cal), scores(l_te)
    y_cal, y_test = torch.as_tensor(y_cal), torch.as_tensor(y_test)
    expect = {"f+TS": z_te / fit_temperature(z_cal, y_cal), "f+ETS": fit_ets(z_cal, y_cal)(z_te)}
    dac = fit_dac(z_cal, y_cal, s_cal)
    expect["DAC+TS"] = dac(z_te, s_te) / fit_temperature(dac(z_cal, s_cal), y_cal)
    expect["DAC+ETS"] = fit_ets(dac(z_cal, s_cal), y_cal)(dac(z_te, s_te))
    for name, logits in expect.items():
        got, want = res["clean"][name], classification_metrics(logits, y_test)
        for key in ("accuracy", "ece", "nll", "brier"):
            assert abs(got[key] - want[key]) < 2e-4, (name, key, got[key], want[key])
    assert "| clean | DAC+ETS |" in summary_table(res)
    without = corruption_benchmark(head, test, y_test, (cal, y_cal), ["gaussian_noise"], severities=(3,),
                                   progress=False)
    assert without["models"] == ["f", "f+TS", "f+ETS", "H"]
