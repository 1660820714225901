"""Active learning trained as the BADGE code (``ActiveConfig(until_train_accuracy=..., dropout="bald")``, the
``cpu-badge`` preset): f and H train until their accuracy on the labeled set reaches the threshold or the cap,
dropout is on only where BALD samples it, each round records its epochs, and a killed run still resumes to the
uninterrupted result. Tiny 32 px data and a tiny timm ResNet; nothing is timed."""

import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from helpers import make_images

from timm_introspect import InvalidArgumentError
from timm_introspect.apps.active import STRATEGIES, ActiveConfig, ActiveData, load_round, protocol_config
from timm_introspect.apps.active.learner import fit_h, train_f
from timm_introspect.apps.active.views import DROPOUT_TYPES, backbone_outputs
from timm_introspect.cli import main
from timm_introspect.training.loop import Schedule

MODEL = "test_resnet_cifar"


def arrays(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    images, labels = make_images(n, seed, size=32)
    return np.stack([np.asarray(i) for i in images]), np.asarray(labels)


def until_config(**kw) -> ActiveConfig:
    values = dict(model=MODEL, initial=10, query_size=8, rounds=2, batch_size=8, head_batch_size=8, hidden=(16,),
                  mc_passes=3, until_train_accuracy=0.99, max_epochs=6, head_max_epochs=8, dropout="bald",
                  augment=False, schedule=Schedule(epochs=1, lr=0.05, kind="linear", nesterov=True),
                  head_schedule=Schedule(epochs=1, lr=0.1, weight_decay=5e-3, kind="onecycle"))
    return ActiveConfig(**{**values, **kw})


@pytest.fixture(scope="module")
def data() -> ActiveData:
    pool_images, pool_labels = arrays(60, 0)
    test_images, test_labels = arrays(24, 1)
    return ActiveData(pool_images, pool_labels, {"clean": (test_images, test_labels)})


def f_accuracy(model, images, labels) -> float:
    logits = backbone_outputs(model, images)[0]
    return float((logits.argmax(-1).cpu().numpy() == labels).mean())


def test_f_stops_at_the_first_epoch_that_reaches_the_threshold(data, tmp_path):
    images, labels = data.pool_images[:12], data.pool_labels[:12]
    config = until_config(until_train_accuracy=0.75, max_epochs=40)
    stats = {}
    model = train_f(images, labels, 3, config, 0, tmp_path, stats=stats)
    assert stats["reached"] and 1 <= stats["epochs"] < 40
    per_epoch = stats["accuracy_per_epoch"]
    assert len(per_epoch) == stats["epochs"] and per_epoch[-1] >= 0.75 and all(a < 0.75 for a in per_epoch[:-1])
    # the recorded accuracy is the returned f's on the labeled images (in eval mode, as a fresh pass finds it)
    assert not model.training and stats["train_accuracy"] == pytest.approx(f_accuracy(model, images, labels))
    again = {}
    train_f(images, labels, 3, config, 0, tmp_path, stats=again)
    assert again == stats  # a function of the seed


def test_f_stops_at_the_cap_when_the_threshold_is_out_of_reach(data, tmp_path):
    images, labels = data.pool_images[:40], np.random.default_rng(0).integers(0, 3, 40)  # random labels
    config = until_config(until_train_accuracy=1.0, max_epochs=2,
                          schedule=Schedule(epochs=1, lr=1e-6, kind="linear"))  # f barely moves from its init
    stats = {}
    model = train_f(images, labels, 3, config, 0, tmp_path, stats=stats)
    assert stats["epochs"] == 2 and not stats["reached"] and len(stats["accuracy_per_epoch"]) == 2
    assert stats["train_accuracy"] == pytest.approx(f_accuracy(model, images, labels))
    assert stats["train_accuracy"] < 1.0


def test_h_trains_until_the_threshold_or_its_cap(data, tmp_path):
    images, labels = data.pool_images[:20], data.pool_labels[:20]
    torch.manual_seed(0)
    f = train_f(images, labels, 3, until_config(until_train_accuracy=0.9, max_epochs=30), 0, tmp_path)
    stats = {}
    head = fit_h(f, images, labels, until_config(until_train_accuracy=0.9, head_max_epochs=200), 1, tmp_path,
                 stats=stats)
    assert stats["reached"] and stats["epochs"] < 200 and stats["accuracy_per_epoch"][-1] >= 0.9
    with torch.no_grad():  # H's own accuracy on the labeled images, through the wrapped model's forward pass
        from timm_introspect.jobs.robustness import normalized_batches

        logits = torch.cat([head(x).logits for x in normalized_batches(head.model, images)])
    assert stats["train_accuracy"] == pytest.approx(float((logits.argmax(-1).numpy() == labels).mean()))
    capped = {}
    fit_h(f, images, labels, until_config(until_train_accuracy=1.0, head_max_epochs=1,
                                          head_schedule=Schedule(epochs=1, lr=1e-7)), 1, tmp_path, stats=capped)
    assert capped["epochs"] == 1 and capped["accuracy_per_epoch"] == [round(capped["train_accuracy"], 5)]


@pytest.mark.parametrize("via", ["f", "H"])
@pytest.mark.parametrize("strategy", list(STRATEGIES))
def test_cpu_badge_preset_has_dropout_only_where_bald_samples_it(strategy, via):
    config = protocol_config("cpu-badge", strategy=strategy, via=via)
    assert config.until_train_accuracy == 0.99 and config.dropout == "bald" and not config.augment
    assert config.f_drop_rate == (0.3 if (strategy, via) == ("bald", "f") else 0.0)
    assert config.h_drop_rate == (0.3 if (strategy, via) == ("bald", "H") else 0.0)
    cpu = protocol_config("cpu", strategy=strategy, via=via)  # the fixed-schedule preset keeps dropout everywhere
    assert (cpu.f_drop_rate, cpu.h_drop_rate, cpu.until_train_accuracy, cpu.augment) == (0.3, 0.3, None, True)


def _dropouts(module) -> list[float]:
    return [m.p for m in module.modules() if isinstance(m, DROPOUT_TYPES)]


@pytest.mark.parametrize("strategy,via,f_rate,h_rate", [("entropy", "H", 0.0, 0.0), ("bald", "f", 0.3, 0.0),
                                                        ("bald", "H", 0.0, 0.3)])
def test_trained_models_carry_only_the_dropout_bald_needs(strategy, via, f_rate, h_rate, data, tmp_path):
    config = until_config(strategy=strategy, via=via, rounds=1, max_epochs=2, head_max_epochs=2)
    result = run(data, config, tmp_path)
    head, state = load_round(tmp_path)
    assert head.model.drop_rate == f_rate and _dropouts(head.introspective_net) == ([h_rate] if h_rate else [])
    for record in result["history"]:  # every round records how far f and H trained
        for model, cap in (("f", 2), ("H", 2)):
            stats = record["training"][model]
            assert 1 <= stats["epochs"] <= cap and stats["reached"] == (stats["train_accuracy"] >= 0.99)
    assert state["history"] == result["history"]


def run(data, config, out, **kw):
    from timm_introspect.apps.active import run_active_learning

    return run_active_learning(data, config, out, progress=False, **kw)


def test_config_checks_and_old_signatures(data):
    for bad in (dict(until_train_accuracy=0.0), dict(until_train_accuracy=1.5), dict(max_epochs=0),
                dict(head_max_epochs=0), dict(dropout="never")):
        with pytest.raises(InvalidArgumentError):
            until_config(**bad)
    # runs recorded before these fields existed still resume: their defaults stay out of the signature
    old = ActiveConfig(model=MODEL).to_dict()
    assert not {"until_train_accuracy", "max_epochs", "head_max_epochs", "dropout", "augment"} & set(old)
    assert ActiveConfig(**old) == ActiveConfig(model=MODEL)
    new = until_config().to_dict()
    assert new["until_train_accuracy"] == 0.99 and new["dropout"] == "bald" and new["augment"] is False
    assert ActiveConfig(**json.loads(json.dumps(new))) == until_config()


KILLED = textwrap.dedent("""
    import json, os, sys
    from timm_introspect.apps.active import ActiveConfig, ActiveData, run_active_learning
    data = ActiveData.load(sys.argv[1])
    config = ActiveConfig(**json.loads(sys.argv[2]))
    def kill(k, record):
        if k == 1:
            os._exit(17)  # a hard kill right after round 1 was saved
    run_active_learning(data, config, sys.argv[3], progress=False, on_round=kill)
""")


@pytest.mark.parametrize("strategy,via,augment", [("badge", "H", False), ("bald", "f", True)])
def test_killed_until_run_resumes_to_the_uninterrupted_result(strategy, via, augment, data, tmp_path):
    config = until_config(strategy=strategy, via=via, augment=augment, rounds=3, until_train_accuracy=0.8,
                          max_epochs=4, head_max_epochs=6)
    whole = run(data, config, tmp_path / "whole")
    assert [r["labeled_images"] for r in whole["history"]] == [10, 18, 26, 34]
    data.save(tmp_path / "data.safetensors")
    killed = subprocess.run([sys.executable, "-c", KILLED, str(tmp_path / "data.safetensors"),
                             json.dumps(config.to_dict()), str(tmp_path / "killed")], capture_output=True, text=True)
    assert killed.returncode == 17, killed.stderr[-2000:]
    rerun = []
    resumed = run(data, config, tmp_path / "killed", on_round=lambda k, r: rerun.append(k))
    assert rerun == [2, 3] and resumed["labeled"] == whole["labeled"]
    summary = [(r["round"], r["queried"], r["metrics"], r["training"]) for r in resumed["history"]]
    assert summary == [(r["round"], r["queried"], r["metrics"], r["training"]) for r in whole["history"]]
    with pytest.raises(InvalidArgumentError, match="other settings"):  # the schedule is part of the signature
        run(data, until_config(strategy=strategy, via=via, augment=augment, rounds=3, until_train_accuracy=0.9,
                               max_epochs=4, head_max_epochs=6), tmp_path / "killed")


def test_cli_active_runs_the_until_schedule(tmp_path, capsys):
    from helpers import write_parquet

    write_parquet(tmp_path / "data", "train", *make_images(40, 0, size=32))
    write_parquet(tmp_path / "data", "test", *make_images(15, 1, size=32))
    main(["active", "--data", str(tmp_path / "data"), "--strategy", "margin", "--via", "f", "--preset", "quick",
          "--arch", MODEL, "--initial", "10", "--query-size", "6", "--rounds", "1", "--until-train-accuracy", "0.9",
          "--max-epochs", "2", "--head-max-epochs", "3", "--dropout", "bald", "--no-augment",
          "--out", str(tmp_path / "run")])
    result = json.loads((tmp_path / "run" / "result.json").read_text())
    config = result["config"]
    assert (config["until_train_accuracy"], config["max_epochs"], config["head_max_epochs"]) == (0.9, 2, 3)
    assert config["dropout"] == "bald" and config["augment"] is False
    assert [r["training"]["f"]["epochs"] <= 2 and r["training"]["H"]["epochs"] <= 3 for r in result["history"]] == [
        True, True]
    head, _ = load_round(tmp_path / "run")
    assert head.model.drop_rate == 0.0 and not any(_dropouts(head.introspective_net))
    assert "| mean |" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["active", "--data", str(tmp_path / "data"), "--strategy", "margin", "--until-train-accuracy", "1.5",
              "--out", str(tmp_path / "bad")])
