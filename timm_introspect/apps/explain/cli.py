"""``timm-introspect explain``: Grad-CAM and "why P, rather than Q?" maps for image files, one PNG grid each.

    timm-introspect explain --model runs/introspective --images cat.png --contrast all --out maps/
    timm-introspect explain --backbone hf-hub:timm/resnet18.a1_in1k --images cat.png --out maps/
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ...errors import InvalidArgumentError
from ...jobs.args import backbone_args, model_source, positive, warn
from .explainer import METHODS

__all__ = ["handle", "register"]


def register(subparsers) -> None:
    p = subparsers.add_parser("explain", help="Grad-CAM and 'why P, rather than Q?' maps for image files, one PNG "
                                              "each")
    backbone_args(p, required=False, note="; explains f")
    p.add_argument("--model", default=None, type=model_source,
                   help="folder or Hub repo (hf-hub:<repo>) of an introspective model: "
                                                 "explains its f")
    p.add_argument("--images", nargs="+", required=True, help="image files (PNG, JPEG)")
    p.add_argument("--contrast", nargs="*", default=None,
                   help="contrast classes Q: 'all', or class names / indices (default: each image's runner-up)")
    p.add_argument("--target-layer", default=None, help="module path to explain at (default: the final feature map)")
    p.add_argument("--method", choices=list(METHODS), default="auto")
    p.add_argument("--columns", type=positive, default=6, help="panels per row of the grid")
    p.add_argument("--out", required=True, help="folder for the PNG grids and explanations.json")
    p.set_defaults(handler=handle)


def _names_f(source: str, checkpoint: str | None) -> bool:
    """Whether ``--model source`` names f (the old meaning of ``explain --model``): a folder that is not an
    introspective model, a timm architecture, or anything with ``--checkpoint``."""
    from ...io.hub import INTROSPECTION_CONFIG

    if checkpoint is not None:
        return True
    if source.startswith(("hf-hub:", "hf_hub:")):
        return False  # either kind loads; telling them apart needs the Hub
    folder = Path(source)
    if folder.is_dir():
        return not (folder / INTROSPECTION_CONFIG).is_file()
    import timm

    return timm.is_model(source)


def handle(args: argparse.Namespace) -> list[Path]:
    from ...data.outputs import prepare_output
    from .job import explain_images

    if (args.model is None) == (args.backbone is None):
        raise InvalidArgumentError("explain needs either --backbone (f) or --model (an introspective model, whose f "
                                   "is explained)")
    args.out = prepare_output(args.out, "explain")  # before f is loaded
    if args.model is not None and _names_f(args.model, args.checkpoint):
        warn("timm-introspect explain", "--model for f is deprecated, use --backbone (--model is an introspective "
                                        "model)")
    written = explain_images(args.backbone or args.model, args.images, args.out, contrast=args.contrast,
                             target_layer=args.target_layer, method=args.method, columns=args.columns,
                             checkpoint=args.checkpoint)
    for path in written:
        print(path)
    return written
