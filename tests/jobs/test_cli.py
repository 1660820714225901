"""The CLI (timm_introspect/cli.py and each command's module): one vocabulary, old spellings as deprecated
aliases, choices from the registries, and one line for any error (the traceback only with --debug)."""

from __future__ import annotations

import ast
import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

from timm_introspect.cli import build_parser, main

ROOT = Path(__file__).resolve().parents[2]


def _options(command: str) -> dict[str, object]:
    """option string -> argparse action, of one command's parser."""
    sub = next(a for a in build_parser()._actions if a.dest == "command")
    return {s: a for a in sub.choices[command]._actions for s in a.option_strings}


# --- one vocabulary, old spellings for one release ------------------------------------------------------

ALIASES = [  # (arguments with the old spelling, dest, expected value, the message)
    (["train-backbone", "--out", "o", "--model", "resnet18"], "arch", "resnet18", "--model is deprecated, use --arch"),
    (["train-backbone", "--out", "o", "--train-limit", "40"], "train_images", 40,
     "--train-limit is deprecated, use --train-images"),
    (["fit", "--backbone", "b", "--out", "o", "--train-limit", "5"], "train_images", 5,
     "--train-limit is deprecated, use --train-images"),
    (["evaluate", "--model", "m", "--limit", "7"], "test_images", 7, "--limit is deprecated, use --test-images"),
    (["cifar10c", "--out", "o", "--limit", "3"], "test_images", 3, "--limit is deprecated, use --test-images"),
    (["imagenetc", "--data", "d", "--out", "o", "--limit", "3"], "test_images", 3,
     "--limit is deprecated, use --test-images"),
    (["active", "--strategy", "entropy", "--out", "o", "--test", "9"], "test_images", 9,
     "--test is deprecated, use --test-images"),
    (["active", "--strategy", "entropy", "--out", "o", "--pool", "90"], "pool_images", 90,
     "--pool is deprecated, use --pool-images"),
    (["active", "--strategy", "entropy", "--out", "o", "--model", "resnet18"], "arch", "resnet18",
     "--model is deprecated, use --arch"),
    (["active", "--strategy", "entropy", "--out", "o", "--protocol", "paper"], "preset", "paper",
     "--protocol is deprecated, use --preset"),
    (["active", "--strategy", "entropy", "--out", "o", "--protocol", "smoke"], "preset", "quick",
     "the preset 'smoke' is deprecated, use 'quick'"),
    (["ood", "--model", "m", "--ood", "gaussian", "--id-images", "5"], "test_images", 5,
     "--id-images is deprecated, use --test-images"),
    (["ood", "--model", "m", "--ood", "gaussian", "--quick"], "preset", "quick",
     "--quick is deprecated, use --preset quick"),
]


@pytest.mark.parametrize("argv, dest, value, message", ALIASES, ids=[" ".join(a[0][:1] + a[0][-2:]) for a in ALIASES])
def test_an_old_spelling_sets_the_new_flag_and_says_so(argv, dest, value, message, capsys):
    args = build_parser().parse_args(argv)
    assert getattr(args, dest) == value
    err = capsys.readouterr().err
    assert f"timm-introspect {argv[0]}: warning: {message}" in err


@pytest.mark.parametrize("argv, dest, value", [
    (["train-backbone", "--out", "o", "--arch", "resnet18", "--train-images", "40"], "arch", "resnet18"),
    (["evaluate", "--model", "m", "--test-images", "7"], "test_images", 7),
    (["active", "--strategy", "entropy", "--out", "o", "--preset", "quick", "--pool-images", "9"], "preset", "quick"),
    (["ood", "--model", "m", "--ood", "gaussian", "--preset", "quick", "--test-images", "5"], "test_images", 5),
    (["explain", "--backbone", "resnet18", "--images", "x.png", "--out", "o"], "backbone", "resnet18"),
])
def test_the_new_spellings_warn_nothing(argv, dest, value, capsys):
    assert getattr(build_parser().parse_args(argv), dest) == value
    assert "deprecated" not in capsys.readouterr().err


def test_defaults_stand_when_no_alias_is_given():
    args = build_parser().parse_args(["active", "--strategy", "entropy", "--out", "o"])
    assert (args.preset, args.pool_images, args.test_images, args.arch) == ("cpu", None, None, None)
    args = build_parser().parse_args(["ood", "--model", "m", "--ood", "gaussian"])
    assert (args.preset, args.test_images) == ("full", None)


def test_deprecated_spellings_are_hidden_from_help(capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args(["active", "--help"])
    shown = capsys.readouterr().out
    assert "--pool-images" in shown and "--protocol" not in shown and "--pool " not in shown


# --- choices from the registries ---------------------------------------------------------------------------

def test_choices_come_from_the_registries():
    import typing

    from timm_introspect.apps.active.strategies import list_strategies
    from timm_introspect.apps.explain.explainer import METHODS
    from timm_introspect.core.losses import list_losses
    from timm_introspect.core.scaling import SCALINGS
    from timm_introspect.nets.registry import list_nets
    from timm_introspect.training.loop import Schedule
    from timm_introspect.training.recipes import ACTIVE_PRESETS, OOD_PRESETS, PRESETS

    kinds = list(typing.get_args(typing.get_type_hints(Schedule)["kind"]))
    assert "linear" in kinds
    for command in ("fit", "run"):
        options = _options(command)
        assert list(options["--net"].choices) == list_nets()
        assert list(options["--scale"].choices) == list(SCALINGS)
        losses = list_losses()  # the built-ins and any registered since (here: by other tests in this process)
        assert set(losses) | {f"{name}-M" for name in losses} == set(options["--loss"].choices)
        assert list(options["--preset"].choices) == list(PRESETS)
    for command in ("fit", "train-backbone"):
        assert list(_options(command)["--schedule"].choices) == kinds
    active = _options("active")
    assert list(active["--strategy"].choices) == list_strategies()
    assert list(active["--scale"].choices) == list(SCALINGS)
    assert list(active["--preset"].choices) == list(ACTIVE_PRESETS)
    assert list(_options("explain")["--method"].choices) == list(METHODS)
    pytest.importorskip("pytorch_ood")
    from timm_introspect.apps.ood import CONDITIONS

    ood = _options("ood")
    assert list(ood["--conditions"].choices) == list(CONDITIONS)
    assert list(ood["--preset"].choices) == list(OOD_PRESETS)


def test_a_loss_is_read_in_any_spelling_and_an_unknown_one_refused(capsys):
    args = build_parser().parse_args(["fit", "--backbone", "b", "--out", "o", "--loss", "MSE-M"])
    assert args.loss == "mse-M"
    with pytest.raises(SystemExit):
        build_parser().parse_args(["fit", "--backbone", "b", "--out", "o", "--loss", "msee"])
    assert "invalid choice: 'msee'" in capsys.readouterr().err


def test_a_linear_schedule_can_be_asked_for():
    assert build_parser().parse_args(["fit", "--backbone", "b", "--out", "o", "--schedule", "linear"]).schedule == \
        "linear"


# --- one line for any error ----------------------------------------------------------------------------------

def _raise(error: BaseException):
    def handler(args):
        raise error

    return handler


def test_any_error_is_one_line_without_a_traceback(monkeypatch, capsys):
    import timm_introspect.jobs.fit as fit

    monkeypatch.setattr(fit, "handle", _raise(RuntimeError("something broke\nin two lines")))
    with pytest.raises(SystemExit) as exit_:
        main(["fit", "--backbone", "b", "--out", "o"])
    message = str(exit_.value.code)
    assert message == "timm-introspect fit: error: RuntimeError: something broke in two lines (--debug shows the " \
                      "traceback)"
    assert "Traceback" not in capsys.readouterr().err


def test_a_package_error_is_its_message_alone(monkeypatch):
    import timm_introspect.jobs.evaluate as evaluate
    from timm_introspect import DataError

    monkeypatch.setattr(evaluate, "handle", _raise(DataError("no labels: pass --label-column")))
    with pytest.raises(SystemExit, match=r"^timm-introspect evaluate: error: no labels: pass --label-column$"):
        main(["evaluate", "--model", "m"])


@pytest.mark.parametrize("how", ["before", "after", "env"])
def test_debug_shows_the_traceback(monkeypatch, how):
    import timm_introspect.jobs.fit as fit

    monkeypatch.setattr(fit, "handle", _raise(RuntimeError("boom")))
    argv = ["fit", "--backbone", "b", "--out", "o"]
    if how == "env":
        monkeypatch.setenv("TIMM_INTROSPECT_DEBUG", "1")
    argv = ["--debug", *argv] if how == "before" else [*argv, "--debug"] if how == "after" else argv
    with pytest.raises(RuntimeError, match="boom"):  # re-raised: Python prints the whole traceback
        main(argv)


def test_ctrl_c_is_one_line_and_exit_130(monkeypatch, capsys):
    import timm_introspect.jobs.run as run

    monkeypatch.setattr(run, "handle", _raise(KeyboardInterrupt()))
    with pytest.raises(SystemExit) as exit_:
        main(["run", "--out", "o"])
    assert exit_.value.code == 130
    assert capsys.readouterr().err.strip().splitlines() == ["timm-introspect run: interrupted"]


def test_from_a_shell_an_error_is_one_stderr_line_and_debug_the_traceback(tmp_path):
    code = ("import sys, timm_introspect.jobs.fit as fit\n"
            "def boom(args):\n    raise ValueError('bad value')\n"
            "fit.handle = boom\n"
            "from timm_introspect.cli import main\n"
            "sys.exit(main(sys.argv[1:]))\n")
    argv = [sys.executable, "-c", code, "fit", "--backbone", "b", "--out", str(tmp_path / "o")]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=300)
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [
        "timm-introspect fit: error: ValueError: bad value (--debug shows the traceback)"]
    done = subprocess.run([*argv[:3], "--debug", *argv[3:]], capture_output=True, text=True, timeout=300)
    assert done.returncode == 1 and "Traceback (most recent call last)" in done.stderr
    assert "ValueError: bad value" in done.stderr


# --- handlers call the library with the new names -----------------------------------------------------------

def test_active_passes_the_preset_and_sizes(monkeypatch, capsys):
    import timm_introspect.apps.active.job as job

    calls = {}
    monkeypatch.setattr(job, "run_active", lambda *a, **k: calls.update(args=a, kwargs=k) or {"history": []})
    main(["active", "--strategy", "badge", "--via", "H", "--protocol", "smoke", "--pool", "100",
          "--test-images", "20", "--arch", "resnet10s_cifar", "--out", "o"])
    kwargs = calls["kwargs"]
    assert (kwargs["protocol"], kwargs["pool"], kwargs["test"], kwargs["model"]) == ("quick", 100, 20,
                                                                                     "resnet10s_cifar")
    assert calls["args"] == ("uoft-cs/cifar10", "o", "badge", "H")


def test_ood_sizes_from_the_preset_and_flags(monkeypatch, capsys):
    pytest.importorskip("pytorch_ood")
    import timm_introspect.apps.ood.job as job
    from timm_introspect.training.recipes import OOD_PRESETS

    calls = []
    monkeypatch.setattr(job, "run_ood", lambda *a, **k: calls.append(k) or {"table": "T"})
    main(["ood", "--model", "m", "--ood", "gaussian", "--quick"])
    main(["ood", "--model", "m", "--ood", "gaussian", "--preset", "quick", "--test-images", "100"])
    main(["ood", "--model", "m", "--ood", "gaussian"])
    sizes = [{k: c[k] for k in ("id_images", "ood_images", "fit_images")} for c in calls]
    assert sizes == [OOD_PRESETS["quick"], dict(OOD_PRESETS["quick"], id_images=100), OOD_PRESETS["full"]]
    assert [c["quick"] for c in calls] == [True, False, False]
    from timm_introspect.apps.ood import DETECTORS, list_detectors

    assert calls[0]["detectors"] == list(DETECTORS)  # the benchmark's by default
    main(["ood", "--model", "m", "--ood", "gaussian", "--detectors", "msp_h", "knn_rx"])
    assert calls[-1]["detectors"] == ["msp_h", "knn_rx"] and set(DETECTORS) <= set(list_detectors())
    with pytest.raises(SystemExit):
        main(["ood", "--model", "m", "--ood", "gaussian", "--detectors", "no_such_detector"])


def test_explain_takes_f_as_backbone_and_an_old_model_f_with_a_warning(monkeypatch, tmp_path, capsys):
    import timm_introspect.apps.explain.job as job
    from timm_introspect.apps.explain.cli import _names_f
    from timm_introspect.io.hub import INTROSPECTION_CONFIG

    f, h = tmp_path / "f", tmp_path / "h"
    f.mkdir()
    h.mkdir()
    (h / INTROSPECTION_CONFIG).write_text("{}")
    assert _names_f(str(f), None) and _names_f("resnet18", None) and _names_f("anything", "w.safetensors")
    assert not _names_f(str(h), None) and not _names_f("hf-hub:user/repo", None)
    sources = []
    monkeypatch.setattr(job, "explain_images", lambda source, *a, **k: sources.append(source) or [])
    out = ["--images", "x.png", "--out", str(tmp_path / "maps")]
    main(["explain", "--backbone", str(f), *out])
    main(["explain", "--model", str(h), *out])
    assert "deprecated" not in capsys.readouterr().err
    main(["explain", "--model", str(f), *out])
    assert "--model for f is deprecated, use --backbone" in capsys.readouterr().err
    assert sources == [str(f), str(h), str(f)]
    with pytest.raises(SystemExit, match="either --backbone"):
        main(["explain", "--backbone", str(f), "--model", str(h), *out])


# --- benchmarks ----------------------------------------------------------------------------------------------

def test_benchmarks_import_no_cli_code():
    for script in sorted((ROOT / "benchmarks").glob("*.py")):
        for node in ast.walk(ast.parse(script.read_text())):
            names = [node.module or ""] if isinstance(node, ast.ImportFrom) else \
                [a.name for a in node.names] if isinstance(node, ast.Import) else []
            for name in names:
                assert not (name == "timm_introspect.cli" or name.endswith((".cli", "_cli"))), (script.name, name)


def test_benchmark_ood_takes_the_new_and_old_spellings(capsys):
    pytest.importorskip("pytorch_ood")
    spec = importlib.util.spec_from_file_location("benchmark_ood", ROOT / "benchmarks" / "ood.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    args = module.parse_args(["--model", "m", "--out", "o", "--quick", "--id-images", "5"])
    assert (args.preset, args.test_images) == ("quick", 5)
    err = capsys.readouterr().err
    assert "--quick is deprecated, use --preset quick" in err and "--id-images is deprecated" in err
