"""What the commands share: argparse types, argument groups, old flag spellings, loading a split, printing metrics.

The vocabulary is one across commands: f (a trained timm classifier) is ``--backbone``, a saved introspective
model ``--model``, an architecture to train ``--arch``; subset sizes end in ``-images`` (``--train-images``,
``--test-images``, ``--pool-images``, ``--ood-images``, ``--fit-images``, ``--corruption-images``); every recipe is
a ``--preset``; every ``choices=`` comes from its registry. Old spellings are accepted for one release:
:func:`deprecated` stores them into the new flag and says so on stderr.
"""

from __future__ import annotations

import argparse
import math
import re
import sys
import typing
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = [
    "MIXED_PRECISION",
    "Deprecated",
    "OneLineParser",
    "as_flags",
    "backbone_args",
    "check_net_scale",
    "data_source",
    "data_args",
    "deprecated",
    "fraction",
    "load",
    "loss_arg",
    "loss_choices",
    "loss_name",
    "model_source",
    "net_args",
    "non_negative",
    "positive",
    "positive_float",
    "print_metrics",
    "run_script",
    "severity",
    "scale_choices",
    "schedule",
    "schedule_kinds",
    "train_args",
    "warn",
]

#: accelerate's mixed-precision modes the training jobs take.
MIXED_PRECISION = ("no", "fp16", "bf16")


def positive(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {value}")
    return value


def severity(text: str) -> int:
    value = int(text)
    if not 1 <= value <= 5:
        raise argparse.ArgumentTypeError(f"must be a severity 1..5, got {value}")
    return value


def non_negative(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {value}")
    return value


def positive_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text}")
    return value


def fraction(text: str) -> float:
    value = float(text)
    if not 0 <= value < 1:
        raise argparse.ArgumentTypeError(f"must be in [0, 1), got {text}")
    return value


#: parameters the library's errors name (``checkpoint=<file>``); on the command line they are flags
_FLAGS = ("checkpoint", "holdout", "train_images", "test_images", "batch_size", "scale", "loss", "net", "out",
          "image_column", "label_column", "classes", "severities", "mc_passes")
_FLAG_RE = re.compile(r"(?<![\w.-])(" + "|".join(_FLAGS) + r")=(\S?)")


def as_flags(text: str) -> str:
    """``checkpoint=<file>`` -> ``--checkpoint <file>``, for the parameters that are flags."""
    return _FLAG_RE.sub(lambda m: f"--{m.group(1).replace('_', '-')}" + (f" {m.group(2)}" if m.group(2) else ""), text)


class OneLineParser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose usage errors are one line on stderr, ``<prog>: error: <message>`` (exit 2);
    ``--help`` shows the usage. Its subcommands' parsers are of this class too."""

    def error(self, message: str) -> typing.NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (--help for the usage)\n")


def run_script(main: typing.Callable[[], typing.Any], prog: str | None = None) -> int:
    """Run a script's ``main()``: any error ends it with one line on stderr, ``<prog>: error: <message>``, exit 1
    (130 on Ctrl-C); ``TIMM_INTROSPECT_DEBUG=1`` re-raises it for the traceback."""
    import os

    prog = prog or os.path.basename(sys.argv[0])
    debug = os.environ.get("TIMM_INTROSPECT_DEBUG", "").strip().lower() not in ("", "0", "false", "no")
    try:
        result = main()
    except KeyboardInterrupt:
        if debug:
            raise
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
    except SystemExit:
        raise
    except Exception as err:
        if debug:
            raise
        from ..errors import IntrospectionError

        text = as_flags(" ".join(line.strip() for line in str(err).splitlines() if line.strip()))
        if not isinstance(err, IntrospectionError):
            text = f"{type(err).__name__}: {text}" if text else type(err).__name__
        print(f"{prog}: error: {text}", file=sys.stderr)
        return 1
    return result if isinstance(result, int) and not isinstance(result, bool) else 0


def warn(prog: str, message: str) -> None:
    """One line on stderr: ``<prog>: warning: <message>``."""
    print(f"{prog}: warning: {message}", file=sys.stderr)


class Deprecated(argparse.Action):
    """An old spelling of a flag: stores into the new flag's ``dest`` (values renamed by ``values``) and prints
    ``--old is deprecated, use --new`` on stderr. Hidden from ``--help``."""

    def __init__(self, option_strings: Sequence[str], dest: str, new: str = "", values: Mapping[str, Any] | None = None,
                 **kwargs: Any) -> None:
        self.new, self.renamed = new, dict(values or {})
        kwargs.setdefault("default", argparse.SUPPRESS)  # the new flag's default stands
        kwargs.setdefault("help", argparse.SUPPRESS)
        super().__init__(option_strings, dest, **kwargs)

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any,
                 option_string: str | None = None) -> None:
        if self.nargs == 0:
            values = self.const
        elif isinstance(values, str):
            values = self.renamed.get(values, values)
        warn(parser.prog, f"{option_string} is deprecated, use {self.new}")
        setattr(namespace, self.dest, values)


def deprecated(p: argparse.ArgumentParser | argparse._ArgumentGroup, old: str, new: str, dest: str | None = None,
               flag: bool = False, const: Any = None, **kwargs: Any) -> None:
    """Accept ``old`` for one release as ``new`` (``new`` may carry a value, e.g. ``"--preset quick"``).

    ``dest``: the new flag's (default: from ``new``); ``flag``: ``old`` takes no value and stores ``const``;
    ``kwargs``: ``type`` / ``choices`` / ``nargs`` of the new flag, and ``values`` (old value -> new value)."""
    dest = dest or new.split()[0].lstrip("-").replace("-", "_")
    if flag:
        kwargs.update(nargs=0, const=const)
    p.add_argument(old, dest=dest, action=Deprecated, new=new, **kwargs)


def schedule_kinds() -> list[str]:
    """The kinds of :class:`~timm_introspect.training.loop.Schedule` (its ``kind`` field's ``Literal``)."""
    from ..training.loop import Schedule

    return list(typing.get_args(typing.get_type_hints(Schedule)["kind"]))


def scale_choices() -> list[str]:
    """The feature scalings of :mod:`~timm_introspect.core.scaling`."""
    from ..core import scaling

    return list(scaling.list_scalings() if hasattr(scaling, "list_scalings") else scaling.SCALINGS)


def loss_choices() -> list[str]:
    """Every loss name of :data:`~timm_introspect.core.losses.LOSSES`, and each with the paper's target M."""
    from ..core import losses

    names = list(losses.list_losses() if hasattr(losses, "list_losses") else losses.LOSSES)
    return [*names, *(f"{name}-M" for name in names)]


def loss_name(text: str) -> str:
    """A loss spelled any way :func:`~timm_introspect.core.losses.parse_loss` reads it (``MSE-M``, ``smoothl1``)
    in the canonical spelling of :func:`loss_choices`; an unknown name is left for ``choices`` to refuse."""
    from ..core.losses import parse_loss
    from ..errors import IntrospectionError

    try:
        key, target = parse_loss(text)
    except IntrospectionError:
        return text
    return f"{key}-M" if target else key


def loss_arg(p: argparse.ArgumentParser, default: str = "mse-M") -> None:
    p.add_argument("--loss", type=loss_name, choices=loss_choices(), default=default, metavar="LOSS",
                   help="introspection loss: %(choices)s ('-M': the paper's target M; default %(default)s)")


def data_source(text: str) -> str:
    """``--data``: a local path as an absolute one (recorded so, it means the same from any working directory);
    anything else (a Hub id) as given."""
    from pathlib import Path

    path = Path(text).expanduser()
    return str(path.resolve()) if text and path.exists() else text


def model_source(text: str) -> str:
    """``--model`` / ``--backbone``: ``hf-hub:<owner>/<name>`` is checked to be a valid Hub repo id now (not found
    out as a Hub client error later); a folder or an architecture name is taken as given."""
    for prefix in ("hf-hub:", "hf_hub:"):
        if text.startswith(prefix):
            repo = text[len(prefix):]
            from huggingface_hub.utils import HFValidationError, validate_repo_id

            try:
                validate_repo_id(repo)
            except HFValidationError:
                raise argparse.ArgumentTypeError(
                    f"{text!r} is not a Hub model id: write hf-hub:<owner>/<name> (e.g. hf-hub:timm/resnet18.a1_in1k), "
                    "letters, digits, '-', '_' and '.' only") from None
    return text


def check_net_scale(net: str, scale: str) -> None:
    """Refuse, before any work, a feature scaling that H ``net`` cannot take (``standard`` needs materialized r_x;
    an H on its factors never sees it)."""
    from ..core.scaling import create_scaler
    from ..nets.registry import get_net_class

    if getattr(get_net_class(net), "takes_factors", False):
        create_scaler(scale, 1, {"classifier": (1, 1)})  # raises, worded with scale=, when it has no factored form


def data_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", type=data_source, default="uoft-cs/cifar10",
                   help="Hub dataset id or local folder (Parquet / images)")
    p.add_argument("--image-column", default=None)
    p.add_argument("--label-column", default=None)
    p.add_argument("--batch-size", type=positive, default=None)
    p.add_argument("--workers", type=non_negative, default=0, help="DataLoader worker processes")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--classes", nargs="+", default=None,
                   help="only these classes (indices or names), relabeled 0..k-1 (CIFAR-6/4: --classes 0 1 2 3 4 5)")


def train_args(p: argparse.ArgumentParser, presets: Sequence[str], default: str = "paper") -> None:
    p.add_argument("--preset", choices=list(presets), default=default, help="recipe (default: %(default)s)")
    p.add_argument("--train-split", default="train")
    p.add_argument("--train-images", type=positive, default=None, help="use a seeded subset of this many images")
    deprecated(p, "--train-limit", "--train-images", type=positive)
    p.add_argument("--epochs", type=positive, default=None)
    p.add_argument("--lr", type=positive_float, default=None)
    p.add_argument("--schedule", choices=schedule_kinds(), default=None, help="learning-rate schedule (default: the "
                                                                             "preset's)")
    p.add_argument("--mixed-precision", choices=MIXED_PRECISION, default="no")


def net_args(p: argparse.ArgumentParser) -> None:
    from ..nets.registry import list_nets

    p.add_argument("--net", choices=list_nets(), default="mlp",
                   help="H: the paper's MLP on r_x, or an H on r_x's factors (delta, h) that never materializes it")
    p.add_argument("--scale", choices=scale_choices(), default=None,
                   help="feature scaling before H: the paper's per-dimension [-1, 1] (maxabs), standardization, or "
                        "none (default: the preset's)")


def augmix_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--augmix", type=non_negative, default=0, metavar="N",
                   help="train H on its training images and N AugMix copies of each (timm's AugMix operations, none "
                        "a CIFAR-10-C corruption; default: %(default)s, none)")


def backbone_args(p: argparse.ArgumentParser, required: bool, note: str = "") -> None:
    p.add_argument("--backbone", required=required, type=model_source,
                   help="f: a folder in timm's layout (train-backbone, save_for_hf), hf-hub:<repo> (a timm model on "
                        "the Hub), or a timm architecture name with --checkpoint" + note)
    p.add_argument("--checkpoint", default=None, help="f's weights (.safetensors) for an architecture name --backbone")


def schedule(preset: Mapping[str, Any], kind: str, args: argparse.Namespace):
    """The preset's ``kind`` (``"backbone"`` / ``"head"``) schedule with ``--epochs``, ``--lr``, ``--schedule``."""
    from ..training.loop import Schedule

    values = dict(preset[kind])
    if getattr(args, "epochs", None) is not None:
        values["epochs"] = args.epochs
    if getattr(args, "lr", None) is not None:
        values["lr"] = args.lr
    if getattr(args, "schedule", None) is not None:
        values["kind"] = args.schedule
    return Schedule(**values)


def load(args: argparse.Namespace, split: str, limit: int | None):
    """``split`` of ``--data`` (a seeded subset of ``limit`` images), with the command's columns and classes."""
    from ..data.images import load_images

    return load_images(args.data, split, args.image_column, args.label_column, limit=limit, seed=args.seed,
                       classes=getattr(args, "classes", None))


def print_metrics(metrics: Mapping[str, Mapping[str, Any]]) -> None:
    for who, values in metrics.items():
        print(f"{who}: " + "  ".join(f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}" for k, v in values.items()))
