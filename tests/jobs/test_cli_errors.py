"""Every CLI command and benchmark script with bad output places and bad numbers: a non-zero exit, one line on
stderr, no traceback, and no heavy work started (loading data, a model or f fails the test if reached)."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

from timm_introspect.cli import main
from timm_introspect.jobs.args import run_script

ROOT = Path(__file__).resolve().parents[2]
BENCHMARKS = ROOT / "benchmarks"
READ_ONLY = "/proc/timm-introspect-out"  # not writable even by root


class HeavyWork(BaseException):
    """Raised by anything heavy; a BaseException, so that no error handler turns it into a clean exit."""


@pytest.fixture(autouse=True)
def no_heavy_work(monkeypatch):
    import datasets
    import timm

    import timm_introspect.apps.explain.job as explain_job
    import timm_introspect.data.images as images
    import timm_introspect.io.backbones as backbones
    from timm_introspect.model.head import IntrospectiveHead

    def heavy(*args, **kwargs):
        raise HeavyWork(f"heavy work started: {args[:2]}")

    monkeypatch.setattr(datasets, "load_dataset", heavy)
    monkeypatch.setattr(images, "load_images", heavy)
    monkeypatch.setattr(backbones, "resolve_backbone", heavy)
    monkeypatch.setattr(IntrospectiveHead, "from_pretrained", heavy)
    monkeypatch.setattr(explain_job, "load_classifier", heavy)
    monkeypatch.setattr(timm, "create_model", heavy)


@pytest.fixture
def places(tmp_path):
    """Bad output places: an existing file, a read-only place, a saved introspective model, a backbone folder."""
    (tmp_path / "a-file").write_text("not a folder")
    model = tmp_path / "model"
    model.mkdir()
    (model / "introspection_config.json").write_text("{}")
    backbone = tmp_path / "backbone"
    backbone.mkdir()
    (backbone / "training.json").write_text("{}")
    (tmp_path / "image.png").write_bytes(b"")
    return {"file": str(tmp_path / "a-file"), "read-only": READ_ONLY, "model": str(model),
            "backbone": str(backbone), "image": str(tmp_path / "image.png"), "dir": str(tmp_path)}


#: command -> its arguments but --out; {image} is replaced
COMMANDS = {
    "train-backbone": ["--data", "some/data"],
    "fit": ["--backbone", "runs/f", "--data", "some/data"],
    "run": ["--data", "some/data"],
    "cifar10c": ["--data", "some/data"],
    "imagenetc": ["--data", "some/data"],
    "active": ["--strategy", "entropy", "--data", "some/data"],
    "explain": ["--backbone", "resnet18", "--images", "{image}"],
    "ood": ["--model", "runs/h", "--ood", "gaussian"],
    "predict": ["--model", "runs/h", "--images", "{image}"],
    "space": ["--model", "hf-hub:me/model"],
}
#: an --out of the wrong kind for each command
WRONG_KIND = {"train-backbone": "model", "fit": "backbone", "run": "model", "cifar10c": "model", "imagenetc": "model",
              "active": "model", "explain": "backbone", "ood": "model",
              "predict": "model", "space": "model"}

#: bad numbers and choices, refused before any work
BAD_ARGUMENTS = [
    ["train-backbone", "--out", "o", "--train-images", "0"],
    ["train-backbone", "--out", "o", "--epochs", "-1"],
    ["train-backbone", "--out", "o", "--holdout", "1.5"],
    ["fit", "--backbone", "b", "--out", "o", "--batch-size", "0"],
    ["fit", "--backbone", "b", "--out", "o", "--augmix", "-1"],
    ["evaluate", "--model", "m", "--test-images", "0"],
    ["evaluate", "--model", "hf-hub:a/b/c"],
    ["evaluate", "--backbone", "hf-hub:"],
    ["imagenetc", "--data", "d", "--out", "o", "--severities", "0"],
    ["imagenetc", "--data", "d", "--out", "o", "--severities", "6"],
    ["cifar10c", "--out", "o", "--test-images", "-5"],
    ["active", "--strategy", "bald", "--out", "o", "--mc-passes", "0"],
    ["active", "--strategy", "entropy", "--out", "o", "--rounds", "-1"],
    ["ood", "--model", "m", "--ood", "gaussian", "--k", "0"],
    ["explain", "--backbone", "resnet18", "--images", "x.png", "--out", "o", "--columns", "0"],
    ["predict", "--model", "m", "--images", "x.png", "--top-k", "0"],
    ["predict", "--model", "m", "--images", "x.png", "--batch-size", "-1"],
    ["predict", "--model", "hf-hub:a/b/c", "--images", "x.png"],
    ["predict", "--model", "m", "--images", "x.png", "--out", "results.txt"],
    ["predict", "--model", "m", "--images", "x.png", "--out", f"{READ_ONLY}/results.json"],
    ["demo", "--model", "m", "--port", "0"],
    ["demo", "--model", "m", "--port", "70000"],
    ["demo", "--model", "m", "--top-k", "0"],
    ["demo", "--model", "m", "--examples", "-1"],
    ["demo", "--model", "hf-hub:a/b/c"],
    ["space", "--model", "hf-hub:a/b/c", "--out", "o"],
]


def _one_line_error(exit_: pytest.ExceptionInfo, capsys) -> str:
    """The error of a failed ``main`` call, checked to be one line without a traceback."""
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if "warning:" not in line]
    code = exit_.value.code
    assert code not in (0, None)
    if isinstance(code, str):  # an error of a command: the message is the exit's (Python prints it)
        assert not lines, err
        message = code
    else:  # a usage error: argparse's exit 2, one line on stderr
        assert code == 2 and len(lines) == 1, err
        message = lines[0]
    assert "\n" not in message and "Traceback" not in message + err
    assert "heavy work" not in message
    return message


@pytest.mark.parametrize("command", list(COMMANDS))
@pytest.mark.parametrize("place", ["file", "read-only", "wrong kind"])
def test_a_bad_output_place_is_refused_before_any_work(command, place, places, capsys):
    out = places[WRONG_KIND[command] if place == "wrong kind" else place]
    argv = [command, *(a.format(**places) for a in COMMANDS[command]), "--out", out]
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    message = _one_line_error(exit_, capsys)
    assert message.startswith(f"timm-introspect {command}: error: --out ")


def test_evaluate_out_naming_a_folder_is_refused_before_evaluating(places, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["evaluate", "--model", places["model"], "--out", places["dir"]])
    assert "is a folder: name a file" in _one_line_error(exit_, capsys)


@pytest.mark.parametrize("argv", BAD_ARGUMENTS, ids=[" ".join(a) for a in BAD_ARGUMENTS])
def test_bad_numbers_are_one_line_before_any_work(argv, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    _one_line_error(exit_, capsys)


@pytest.mark.parametrize("argv, says", [
    (["active", "--strategy", "bald", "--mc-passes", "1"], "at least 2 Monte Carlo"),
    (["active", "--strategy", "entropy", "--arch", "no_such_net"], "unknown architecture 'no_such_net'"),
    (["run", "--net", "factorized"], "--scale 'standard'"),  # the cpu preset standardizes: refused at once
    (["fit", "--backbone", "b", "--net", "factorized", "--scale", "standard"], "--scale 'standard'"),
    (["space", "--model", "m"], "not a Hub model id"),  # a Space loads its model from the Hub
    (["space", "--model", "hf-hub:me/model", "--push", "no-owner"], "not a Space id"),
])
def test_arguments_refused_before_the_work(argv, says, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        main([*argv, "--out", str(tmp_path / "out")])
    assert says in _one_line_error(exit_, capsys)


@pytest.mark.parametrize("argv, says", [
    (["demo", "--model", "m", "--frost-dir", "/no/such/frost"], "is not a folder"),
    (["space", "--model", "hf-hub:me/model"], "space needs --out"),
])
def test_demo_and_space_arguments_refused_before_the_work(argv, says, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert says in _one_line_error(exit_, capsys)


def test_a_misspelt_builtin_ood_set_names_the_builtins(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["ood", "--model", "m", "--ood", "cifar-10-c"])
    assert "did you mean 'cifar10c'" in _one_line_error(exit_, capsys)


def test_a_fifo_is_not_read_by_explain(tmp_path, capsys):
    import os

    fifo = tmp_path / "pipe.png"
    os.mkfifo(fifo)
    with pytest.raises(SystemExit) as exit_:
        main(["explain", "--backbone", "resnet18", "--images", str(fifo), "--out", str(tmp_path / "maps")])
    assert "not a regular file" in _one_line_error(exit_, capsys)


# --- the benchmark scripts ---------------------------------------------------------------------------------

def _script(name: str):
    sys.path.insert(0, str(BENCHMARKS))  # explain_coverage imports timm_coverage
    try:
        spec = importlib.util.spec_from_file_location(f"bench_{name}", BENCHMARKS / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(BENCHMARKS))
    return module


#: script -> its arguments but the output place (--out, or the file flag it takes)
SCRIPTS = {
    "active_learning": ["--preset", "quick"],
    "cifar10c": ["--model", "m"],
    "explain": ["--backbone", "resnet18"],
    "fit_scale": [],
    "imagenetc_speed": [],
    "ood": ["--model", "m"],
}
FILE_OUT = {"explain_cost": "--out", "throughput": "--json", "timm_coverage": "--jsonl",
            "explain_coverage": "--jsonl"}

BAD_SCRIPT_ARGUMENTS = [
    ("explain_coverage", ["--limit", "0"]),
    ("explain_coverage", ["--models", "no_such_arch_*"]),
    ("timm_coverage", ["--models", "no_such_arch_*"]),
    ("timm_coverage", ["--img-size", "0"]),
    ("explain", ["--backbone", "b", "--out", "o", "--fractions", "0", "0.5", "0.2"]),
    ("explain", ["--backbone", "b", "--out", "o", "--test-images", "0"]),
    ("cifar10c", ["--model", "m", "--out", "o", "--severities", "0"]),
    ("active_learning", ["--out", "o", "--jobs", "0"]),
    ("throughput", ["--batch-size", "0"]),
    ("explain_cost", ["--batch", "-1"]),
    ("fit_scale", ["--out", "o", "--train-images", "0"]),
    ("imagenetc_speed", ["--out", "o", "--corruption-images", "0"]),
    ("ood", ["--model", "m", "--out", "o", "--k", "0"]),
]


def _run_script(name: str, argv: list[str], capsys) -> str:
    module = _script(name)
    try:
        code = run_script(lambda: module.main(argv), prog=f"{name}.py")
    except SystemExit as exit_:  # argparse's usage error
        code = exit_.code
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if "warning" not in line.lower()]
    assert code not in (0, None), err
    assert len(lines) == 1 and "Traceback" not in err, err
    assert "heavy work" not in err
    return lines[0]


@pytest.mark.parametrize("name", [*SCRIPTS, *FILE_OUT])
@pytest.mark.parametrize("place", ["file", "read-only", "wrong kind"])
def test_a_benchmark_refuses_a_bad_output_place_before_any_work(name, place, places, capsys):
    if name in FILE_OUT:  # a file output: a folder where it goes, or a file in a read-only place
        out = {"file": places["dir"], "read-only": f"{READ_ONLY}/x.json", "wrong kind": places["model"]}[place]
        argv = [FILE_OUT[name], out]
    else:
        out = places["model"] if place == "wrong kind" else places[place]
        argv = [*SCRIPTS[name], "--out", out]
    line = _run_script(name, argv, capsys)
    assert line.startswith(f"{name}.py: error: --out ") or "is a folder" in line, line


@pytest.mark.parametrize("name, argv", BAD_SCRIPT_ARGUMENTS,
                         ids=[f"{n} {' '.join(a)}" for n, a in BAD_SCRIPT_ARGUMENTS])
def test_a_benchmark_refuses_bad_numbers(name, argv, tmp_path, capsys):
    argv = [str(tmp_path / a) if a == "o" else a for a in argv]
    _run_script(name, argv, capsys)


def test_active_learning_does_not_write_into_the_committed_results(monkeypatch, tmp_path):
    module = _script("active_learning")
    args = module.parse_args(["--out", str(tmp_path / "runs")])
    assert args.results is None  # the results go to --out unless named


@pytest.mark.parametrize("argv", [["timm_coverage.py", "--models", "no_such_arch_*"],
                                  ["explain.py", "--backbone", "b", "--out", "o", "--fractions", "0.5", "0"]])
def test_from_a_shell_a_benchmark_error_is_one_stderr_line(argv, tmp_path):
    done = subprocess.run([sys.executable, str(BENCHMARKS / argv[0]), *argv[1:]], capture_output=True, text=True,
                          timeout=300, cwd=tmp_path)
    assert done.returncode != 0
    assert len(done.stderr.strip().splitlines()) == 1 and "Traceback" not in done.stderr, done.stderr
    assert not json.dumps(done.stdout).count("coverage: 0/0")
