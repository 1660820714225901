"""``timm-introspect``: train f, fit H, evaluate, or all three in one run; generate corruptions; OOD, active
learning and explanations.

    timm-introspect run --data ../shared/data/cifar10 --preset quick --out runs/quick
    timm-introspect train-backbone --data uoft-cs/cifar10 --arch resnet18 --cifar-stem --out runs/f
    timm-introspect fit --backbone runs/f --data uoft-cs/cifar10 --loss mse-M --out runs/introspective
    timm-introspect fit --backbone hf-hub:timm/resnet18.a1_in1k --data imagenet-folder/ --net factorized --out runs/in1k
    timm-introspect evaluate --model runs/introspective --data uoft-cs/cifar10 --split test
    timm-introspect cifar10c --data uoft-cs/cifar10 --frost-dir frost/ --out CIFAR-10-C
    timm-introspect imagenetc --data imagenet-val/ --split validation --frost-dir frost/ --out ImageNet-C
    timm-introspect ood --model runs/introspective --ood ../shared/data/ood/dtd gaussian uniform cifar10c
    timm-introspect active --strategy badge --via H --preset cpu --out runs/active-badge-H
    timm-introspect explain --model runs/introspective --images cat.png --contrast all --out maps/
    timm-introspect demo --model runs/introspective
    timm-introspect space --model hf-hub:me/cifar10-introspective --out space/ --push me/cifar10-introspective-demo
    timm-introspect predict --model runs/introspective --images cat.png ship.jpg --out predictions.json

f (a trained timm classifier) is --backbone, a saved introspective model --model, an architecture to train
--arch; subset sizes are --*-images; recipes are --preset. Every command runs under ``accelerate launch`` /
``torchrun`` as well (several GPUs or processes). An error prints one line; --debug (or
TIMM_INTROSPECT_DEBUG=1) shows its traceback.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys

from .errors import IntrospectionError, MissingDependencyError

__all__ = ["COMMANDS", "build_parser", "main"]

#: Each command module (its ``register(subparsers)`` adds its commands, each with its handler) and the commands
#: it adds, named here so that a command whose optional extra is missing still parses and then says what to install.
COMMANDS: dict[str, tuple[str, ...]] = {
    "timm_introspect.jobs.train_backbone": ("train-backbone",),
    "timm_introspect.jobs.fit": ("fit",),
    "timm_introspect.jobs.evaluate": ("evaluate",),
    "timm_introspect.jobs.run": ("run",),
    "timm_introspect.jobs.corruptions": ("cifar10c", "imagenetc"),
    "timm_introspect.apps.active.cli": ("active",),
    "timm_introspect.apps.explain.cli": ("explain",),
    "timm_introspect.apps.ood.cli": ("ood",),
    "timm_introspect.apps.predict.cli": ("predict",),
    "timm_introspect.apps.demo.cli": ("demo", "space"),
}

DEBUG_ENV = "TIMM_INTROSPECT_DEBUG"


def _missing(subparsers, names: tuple[str, ...], err: MissingDependencyError) -> None:
    """Commands that cannot load (an optional extra is missing): they take any arguments and raise ``err``."""

    def handler(args: argparse.Namespace) -> None:
        raise err

    for name in names:
        p = subparsers.add_parser(name, help=f"(not installed: {err})", add_help=False)
        p.set_defaults(handler=handler, takes_any_arguments=True)


def build_parser() -> argparse.ArgumentParser:
    from .jobs.args import OneLineParser

    # usage errors are one line too (the commands' parsers are of the same class)
    parser = OneLineParser(prog="timm-introspect", description=__doc__,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--debug", action="store_true", default=False,
                        help=f"show the traceback of an error (also: {DEBUG_ENV}=1)")
    sub = parser.add_subparsers(dest="command", required=True)
    for module, names in COMMANDS.items():
        try:
            register = importlib.import_module(module).register
        except MissingDependencyError as err:
            _missing(sub, names, err)
            continue
        register(sub)
    for p in sub.choices.values():  # --debug after the command too
        if p.add_help:
            p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    return parser


def _as_flags(text: str) -> str:
    """``checkpoint=<file>`` -> ``--checkpoint <file>``, for the parameters that are flags."""
    from .jobs.args import as_flags

    return as_flags(text)


def _one_line(err: BaseException) -> str:
    text = _as_flags(" ".join(line.strip() for line in str(err).splitlines() if line.strip()))
    if isinstance(err, IntrospectionError):
        return text or type(err).__name__
    # not one of the package's errors (which say what to do): name its kind, and where the details are
    return f"{type(err).__name__}: {text}" if text else type(err).__name__


def _show_messages(prefix: str, debug: bool) -> None:
    """The library logs to ``logging`` (``timm_introspect.*``); on the command line its INFO messages go to
    stderr (DEBUG with ``--debug``), once per process."""
    logger = logging.getLogger("timm_introspect")
    if not any(getattr(h, "_timm_introspect_cli", False) for h in logger.handlers):
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter(f"{prefix}: %(message)s"))
        handler._timm_introspect_cli = True  # type: ignore[attr-defined]
        logger.addHandler(handler)
    logger.setLevel(logging.DEBUG if debug else logging.INFO)


def main(argv: list[str] | None = None) -> int:
    """Run one command. Any error ends it with one line on stderr, ``timm-introspect <command>: error: <message>``,
    and a non-zero exit (130 on Ctrl-C); ``--debug`` or ``TIMM_INTROSPECT_DEBUG=1`` re-raises it instead."""
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra and not getattr(args, "takes_any_arguments", False):
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    debug = args.debug or os.environ.get(DEBUG_ENV, "").strip().lower() not in ("", "0", "false", "no")
    prefix = f"{parser.prog} {args.command}"
    _show_messages(prefix, debug)
    try:
        args.handler(args)
    except KeyboardInterrupt:
        if debug:
            raise
        print(f"{prefix}: interrupted", file=sys.stderr)
        raise SystemExit(130) from None
    except SystemExit:
        raise
    except Exception as err:
        if debug:
            raise
        hint = "" if isinstance(err, IntrospectionError) else " (--debug shows the traceback)"
        raise SystemExit(f"{prefix}: error: {_one_line(err)}{hint}") from err
    return 0


if __name__ == "__main__":
    sys.exit(main())
