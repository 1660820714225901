"""``timm-introspect demo``: the model's web page on this machine; ``timm-introspect space``: a Hugging Face Space
for a pushed model (its files, and with ``--push`` the Space on the Hub).

    timm-introspect demo --model runs/main/introspective
    timm-introspect demo --model hf-hub:me/cifar10-introspective --frost-dir frost/ --port 7861
    timm-introspect space --model hf-hub:me/cifar10-introspective --out space/ --push me/cifar10-introspective-demo
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ...errors import InvalidArgumentError
from ...jobs.args import model_source, non_negative, positive

__all__ = ["register"]


def _port(text: str) -> int:
    value = positive(text)
    if value > 65535:
        raise argparse.ArgumentTypeError(f"a port is 1 to 65535, got {value}")
    return value


def register(subparsers) -> None:
    p = subparsers.add_parser("demo", help="a web page (Gradio) to try the model on images: predictions, the OOD "
                                           "score, the maps, corruptions")
    p.add_argument("--model", required=True, type=model_source,
                   help="folder or Hub repo (hf-hub:<repo>) of an introspective model")
    p.add_argument("--host", default="127.0.0.1", help="address to serve on (default: this machine only)")
    p.add_argument("--port", type=_port, default=None, help="port (default: 7860, or the next free one)")
    p.add_argument("--frost-dir", default=None, help="frost overlays (frost1.png ... frost5.jpg), for the frost "
                                                     "corruption")
    p.add_argument("--top-k", type=positive, default=3, help="classes shown per model")
    p.add_argument("--examples", type=non_negative, default=10,
                   help="example images from the model's held-out images (0: none)")
    p.set_defaults(handler=handle_demo)

    s = subparsers.add_parser("space", help="a Hugging Face Space (Gradio) for a model on the Hub: app.py, "
                                            "requirements.txt, README.md; --push creates it on the Hub")
    s.add_argument("--model", required=True, type=model_source, help="the model's Hub repo: hf-hub:<owner>/<name>")
    s.add_argument("--out", default=None, help="folder for the Space's files")
    s.add_argument("--push", default=None, metavar="SPACE_ID", help="create the Space <owner>/<name> on the Hub and "
                                                                    "upload its files")
    s.add_argument("--private", action="store_true", help="with --push: a private Space")
    s.add_argument("--title", default=None, help="the Space's title (default: '<model name> demo')")
    s.set_defaults(handler=handle_space)


def handle_demo(args: argparse.Namespace) -> None:
    from .app import build_demo, launch_demo

    if args.frost_dir is not None and not Path(args.frost_dir).is_dir():
        raise InvalidArgumentError(f"--frost-dir {args.frost_dir} is not a folder: pass the folder with frost1.png "
                                   "... frost5.jpg")
    import os

    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # a local demo tells no one it started
    demo = build_demo(args.model, frost_dir=args.frost_dir, top_k=args.top_k, examples=args.examples)
    launch_demo(demo, host=args.host, port=args.port)


def handle_space(args: argparse.Namespace) -> None:
    from .space import hub_model_id, push_space, space_id, write_space

    if args.out is None and args.push is None:
        raise InvalidArgumentError("space needs --out (a folder for the Space's files), --push (a Space id on the "
                                   "Hub), or both")
    hub_model_id(args.model)
    if args.push is not None:
        space_id(args.push)
    if args.out is not None:
        print(write_space(args.model, args.out, args.title))
    if args.push is not None:
        print(push_space(args.model, args.push, private=args.private or None, title=args.title))
