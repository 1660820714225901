"""Active learning (timm_introspect.apps.active) on tiny 32 px data and a tiny timm ResNet: every strategy queries n
distinct unlabeled images through f and through H, BADGE's embeddings are per-image autograd gradients, BALD's
dropout really samples, and a killed loop resumes to the uninterrupted result. Nothing is timed here."""

import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import timm
import torch
import torch.nn.functional as F
from helpers import make_images, rel_err

from timm_introspect import CheckpointError, InvalidArgumentError
from timm_introspect.apps.active import (
    STRATEGIES,
    ActiveConfig,
    ActiveData,
    LabeledPool,
    corrupted_set,
    create_strategy,
    gradient_embeddings,
    kmeans_pp,
    load_round,
    make_view,
    mc_dropout,
    run_active_learning,
)
from timm_introspect.apps.active.learner import fit_h
from timm_introspect.cli import main
from timm_introspect.jobs.robustness import normalized_batches
from timm_introspect.training.loop import Schedule

MODEL = "test_resnet_cifar"


def arrays(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    images, labels = make_images(n, seed, size=32)
    return np.stack([np.asarray(i) for i in images]), np.asarray(labels)


def tiny_config(**kw) -> ActiveConfig:
    values = dict(model=MODEL, initial=10, query_size=8, rounds=2, batch_size=16, min_steps=4, head_batch_size=16,
                  hidden=(16,), head_min_steps=4, mc_passes=3,
                  schedule=Schedule(epochs=1, lr=0.05, kind="linear", nesterov=True),
                  head_schedule=Schedule(epochs=1, lr=0.1, weight_decay=5e-3, kind="onecycle"))
    return ActiveConfig(**{**values, **kw})


@pytest.fixture(scope="module")
def data() -> ActiveData:
    pool_images, pool_labels = arrays(60, 0)
    test_images, test_labels = arrays(24, 1)
    noisy = np.clip(test_images.astype(int) + np.random.default_rng(0).integers(-80, 80, test_images.shape), 0, 255)
    return ActiveData(pool_images, pool_labels, {"clean": (test_images, test_labels),
                                                 "noisy": (noisy.astype(np.uint8), test_labels)})


@pytest.fixture(scope="module")
def head(data, tmp_path_factory):
    """f (random weights, dropout 0.3 before its classifier) and an H fitted on 20 of the pool's images."""
    torch.manual_seed(0)
    model = timm.create_model(MODEL, num_classes=3, drop_rate=0.3).eval()
    config = tiny_config(head_drop_rate=0.3)
    return fit_h(model, data.pool_images[:20], data.pool_labels[:20], config, 0, tmp_path_factory.mktemp("h"))


def normalized(model, images: np.ndarray) -> torch.Tensor:
    return torch.cat(list(normalized_batches(model, images)))


@pytest.mark.parametrize("via", ["f", "H"])
@pytest.mark.parametrize("name", list(STRATEGIES))
def test_each_strategy_queries_n_distinct_unlabeled_images(name, via, data, head):
    pool = LabeledPool(len(data.pool_labels), range(0, 60, 3))  # 20 labeled
    strategy = create_strategy(name, pool, data.pool_images, head, via=via, seed=[0, 1], mc_passes=3)
    picked = strategy.query(15)
    assert len(picked) == 15 and len(set(picked.tolist())) == 15
    assert set(picked.tolist()) <= set(pool.unlabeled.tolist()) and not pool.is_labeled(picked).any()
    pool.add(picked)
    assert len(pool) == 35
    with pytest.raises(InvalidArgumentError, match="unlabeled"):
        strategy.query(26)  # only 25 left


@pytest.mark.parametrize("via", ["f", "H"])
def test_uncertainty_strategies_pick_the_top_scores_of_the_real_model(via, data, head):
    pool = LabeledPool(len(data.pool_labels), range(10))
    unlabeled = pool.unlabeled
    x = normalized(head.model, data.pool_images[unlabeled])
    with torch.no_grad():  # the wrapped model's own forward pass: f's logits, or H's through head(x)
        logits = head.model(x) if via == "f" else head(x).logits
    p = torch.softmax(logits.double(), -1)
    top2 = p.topk(2, -1).values
    scores = {"entropy": -(p * p.log()).sum(-1), "least_confidence": -p.amax(-1), "margin": top2[:, 1] - top2[:, 0]}
    for name, score in scores.items():
        picked = create_strategy(name, pool, data.pool_images, head, via=via).query(12)
        expected = unlabeled[torch.argsort(score, descending=True, stable=True)[:12].numpy()]
        assert set(picked.tolist()) == set(expected.tolist()), name


@pytest.mark.parametrize("scale", ["maxabs", "standard", "none"])
def test_h_view_reads_what_the_head_reads(scale, data, tmp_path):
    torch.manual_seed(1)
    model = timm.create_model(MODEL, num_classes=3).eval()
    head = fit_h(model, data.pool_images[:20], data.pool_labels[:20], tiny_config(scale=scale), 0, tmp_path)
    assert head.scaling == scale
    images = data.pool_images[20:30]
    with torch.no_grad():
        expected = head(normalized(model, images)).logits
    assert torch.allclose(make_view(head, "H").logits(images), expected, atol=1e-5)


def test_badge_embeddings_equal_per_image_autograd_of_ce_with_predicted_label(data, head):
    images = data.pool_images[:5]
    model = head.model
    emb_f = make_view(head, "f").embeddings(images)
    emb_h = make_view(head, "H").embeddings(images)
    fc, last = model.get_classifier(), head.introspective_net[-1]
    assert emb_f.shape == (5, fc.weight.numel()) and emb_h.shape == (5, last.weight.numel())
    x = normalized(model, images)
    for i in range(5):
        with torch.enable_grad():  # f: CE(f(x_i), argmax) w.r.t. f's classifier weight, one backward per image
            weight = fc.weight.detach().clone().requires_grad_(True)
            z = torch.func.functional_call(model, {"fc.weight": weight}, (x[i : i + 1],))
            (grad_f,) = torch.autograd.grad(F.cross_entropy(z, z.argmax(1)), weight)
            weight = last.weight.detach().clone().requires_grad_(True)  # H: w.r.t. H's last linear layer
            features = head(x[i : i + 1]).features
            name = f"{len(head.introspective_net) - 1}.weight"
            out = torch.func.functional_call(head.introspective_net, {name: weight}, (features,))
            (grad_h,) = torch.autograd.grad(F.cross_entropy(out, out.argmax(1)), weight)
        assert rel_err(emb_f[i].view_as(grad_f), grad_f) < 1e-5
        assert rel_err(emb_h[i].view_as(grad_h), grad_h) < 1e-4
    assert gradient_embeddings(torch.tensor([[2.0, 0.0]]), torch.ones(1, 3)).abs().sum() > 0


def test_a_registered_strategy_is_listed_created_by_name_and_accepted_by_the_config(data, head):
    from timm_introspect.apps.active import Strategy, list_strategies, register_strategy

    @register_strategy("First-Unlabeled")
    class FirstUnlabeled(Strategy):
        needs_model = False

        def __init__(self, *args, skip: int = 0, **kwargs) -> None:
            self.skip = skip
            super().__init__(*args, **kwargs)

        def select(self, candidates, n):
            return np.arange(self.skip, self.skip + n)

    try:
        assert FirstUnlabeled.name == "first_unlabeled" and list_strategies()[-1] == "first_unlabeled"
        assert list_strategies()[:6] == ["random", "entropy", "least_confidence", "margin", "bald", "badge"]
        pool = LabeledPool(len(data.pool_labels), range(0, 60, 3))
        strategy = create_strategy("first-unlabeled", pool, data.pool_images, mc_passes=3, skip=2)  # no mc_passes
        assert isinstance(strategy, FirstUnlabeled)
        assert strategy.query(4).tolist() == pool.unlabeled[2:6].tolist()
        assert tiny_config(strategy="first_unlabeled").strategy == "first_unlabeled"
        assert create_strategy("BALD", pool, data.pool_images, head, mc_passes=3).mc_passes == 3  # BALD takes it
        with pytest.raises(InvalidArgumentError, match="already registered"):
            register_strategy("first_unlabeled")(type("Other", (Strategy,), {}))
    finally:
        STRATEGIES.pop("first_unlabeled")
    with pytest.raises(InvalidArgumentError, match="use one of random, entropy, least_confidence, margin, bald, badge"):
        create_strategy("coreset", pool, data.pool_images)
    with pytest.raises(InvalidArgumentError, match="subclass of Strategy"):
        register_strategy("plain")(object)
    with pytest.raises(InvalidArgumentError, match="letters"):
        register_strategy("two words")


def test_kmeans_pp_seeds_one_center_per_far_cluster_and_never_repeats():
    g = torch.Generator().manual_seed(0)
    centers = torch.tensor([[0.0, 0.0], [100.0, 0.0], [0.0, 100.0], [100.0, 100.0]])
    points = (centers.repeat_interleave(25, 0) + 0.01 * torch.randn(100, 2, generator=g)).double()
    chosen = kmeans_pp(points, 4, seed=0)
    assert chosen[0] == int(points.norm(dim=1).argmax())  # the largest norm first, as BADGE's init_centers
    assert {int(i) // 25 for i in chosen} == {0, 1, 2, 3}  # D^2 sampling: every far cluster gets a center
    assert sorted(kmeans_pp(torch.zeros(6, 3), 6, seed=1).tolist()) == list(range(6))  # duplicates only: uniform
    with pytest.raises(InvalidArgumentError):
        kmeans_pp(points, 101)


def test_bald_dropout_samples_between_passes_and_only_dropout_is_on(data, head, tmp_path):
    images = data.pool_images[:8]
    bn = next(m for m in head.model.modules() if isinstance(m, torch.nn.BatchNorm2d))
    running = bn.running_mean.clone()
    for via in ("f", "H"):
        view = make_view(head, via)
        passes = view.mc_logits(images, 4)
        assert passes.shape == (4, 8, 3)
        assert not torch.allclose(passes[0], passes[1]) and not torch.allclose(passes[1], passes[2])
        assert torch.equal(view.logits(images), view.logits(images))  # without MC dropout: deterministic
    assert torch.equal(bn.running_mean, running) and not head.model.training  # f stayed in eval mode
    net = head.introspective_net
    with mc_dropout(net) as drops:
        assert drops and all(m.training == isinstance(m, torch.nn.Dropout) for m in net.modules())
    assert not any(m.training for m in net.modules())
    x = normalized(head.model, images)
    with torch.no_grad():
        assert torch.allclose(make_view(head, "H").logits(images), head(x).logits, atol=1e-5)

    no_dropout = fit_h(timm.create_model(MODEL, num_classes=3).eval(), data.pool_images[:20], data.pool_labels[:20],
                       tiny_config(head_drop_rate=0.0), 0, tmp_path)
    for via, what in (("f", "drop_rate"), ("H", "dropout")):
        with pytest.raises(InvalidArgumentError, match=what):
            make_view(no_dropout, via).mc_logits(images, 2)


def test_pool_refuses_duplicates_labeled_and_out_of_range_indices():
    pool = LabeledPool.random(10, 3, seed=0)
    assert len(pool) == 3 and len(pool.unlabeled) == 7
    for bad, match in (([pool.labeled[0]], "labeled already"), ([4, 4], "distinct"), ([10], r"\[0, 10\)")):
        with pytest.raises(InvalidArgumentError, match=match):
            pool.add(bad)
    assert len(pool) == 3  # all or nothing
    assert LabeledPool.from_state(json.loads(json.dumps(pool.state_dict()))).labeled.tolist() == pool.labeled.tolist()


def test_gaussian_noise_set_spreads_severities_or_repeats_them():
    images, labels = arrays(10, 2)
    spread, y = corrupted_set(images, labels, seed=0, spread=True)
    assert spread.shape == images.shape and (y == labels).all() and (spread != images).any(axis=(1, 2, 3)).all()
    full, y_full = corrupted_set(images, labels, seed=0)
    assert full.shape == (50, 32, 32, 3) and (y_full == np.tile(labels, 5)).all()
    again, _ = corrupted_set(images, labels, seed=0, spread=True)
    assert np.array_equal(spread, again)


def _round_summary(result: dict) -> list:
    return [(r["round"], r["labeled_images"], r["queried"], r["metrics"]) for r in result["history"]]


KILLED = textwrap.dedent("""
    import json, os, sys
    from timm_introspect.apps.active import ActiveConfig, ActiveData, run_active_learning
    data = ActiveData.load(sys.argv[1])
    config = ActiveConfig(**json.loads(sys.argv[2]))
    def kill(k, record):
        if k == 1:
            os._exit(17)  # a hard kill right after round 1 was saved: no cleanup, no result.json
    run_active_learning(data, config, sys.argv[3], progress=False, on_round=kill)
""")


@pytest.mark.parametrize("strategy,via,reset", [("badge", "H", False), ("bald", "f", True)])
def test_killed_loop_resumes_to_the_uninterrupted_result(strategy, via, reset, data, tmp_path):
    config = tiny_config(strategy=strategy, via=via, reset=reset, rounds=3)
    whole = run_active_learning(data, config, tmp_path / "whole", progress=False)
    assert [r["labeled_images"] for r in whole["history"]] == [10, 18, 26, 34] and len(whole["labeled"]) == 34

    data.save(tmp_path / "data.safetensors")
    killed = subprocess.run([sys.executable, "-c", KILLED, str(tmp_path / "data.safetensors"),
                             json.dumps(config.to_dict()), str(tmp_path / "killed")], capture_output=True, text=True)
    assert killed.returncode == 17, killed.stderr[-2000:]
    assert not (tmp_path / "killed" / "result.json").exists()
    (tmp_path / "killed" / "rounds" / "round-002.tmp").mkdir()  # a round that was being written when it died
    rerun = []
    resumed = run_active_learning(data, config, tmp_path / "killed", progress=False,
                                  on_round=lambda k, r: rerun.append(k))
    assert rerun == [2, 3]  # rounds 0 and 1 were not trained again
    assert resumed["labeled"] == whole["labeled"]
    assert _round_summary(resumed) == _round_summary(whole)

    head, state = load_round(tmp_path / "killed")
    assert state["round"] == 3 and head.introspective_net[0].in_features == 3 * head.model.num_features
    with pytest.raises(InvalidArgumentError, match="other settings"):
        run_active_learning(data, tiny_config(strategy=strategy, via=via, reset=reset, rounds=3, query_size=9),
                            tmp_path / "killed", progress=False)


def _stop():
    raise KeyboardInterrupt


@pytest.fixture
def stopped_after_round_0(data, tmp_path):
    config = tiny_config(strategy="margin", via="f", reset=False, rounds=2)
    with pytest.raises(KeyboardInterrupt):
        run_active_learning(data, config, tmp_path, progress=False, on_round=lambda k, r: _stop())
    return config, tmp_path


def test_resume_refuses_a_damaged_checkpoint(data, stopped_after_round_0):
    config, out = stopped_after_round_0
    weights = out / "rounds" / "round-000" / "weights.safetensors"
    weights.write_bytes(weights.read_bytes()[:-100])
    with pytest.raises(CheckpointError, match="damaged"):
        run_active_learning(data, config, out, progress=False)


def test_cli_active_runs_a_smoke_protocol_on_local_parquet(tmp_path, capsys):
    from helpers import write_parquet

    write_parquet(tmp_path / "data", "train", *make_images(40, 0, size=32))
    write_parquet(tmp_path / "data", "test", *make_images(15, 1, size=32))
    main(["active", "--data", str(tmp_path / "data"), "--strategy", "badge", "--via", "H", "--protocol", "smoke",
          "--model", MODEL, "--initial", "10", "--query-size", "6", "--rounds", "1", "--epochs", "1",
          "--min-steps", "2", "--out", str(tmp_path / "run")])
    result = json.loads((tmp_path / "run" / "result.json").read_text())
    assert [r["labeled_images"] for r in result["history"]] == [10, 16]
    assert set(result["history"][0]["metrics"]) == {"clean", "gaussian_noise"}
    assert result["config"]["strategy"] == "badge" and result["config"]["via"] == "H"
    assert "| mean |" in capsys.readouterr().out
