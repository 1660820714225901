"""``timm-introspect predict``: f's, f+TS's and H's top classes and the OOD score of image files.

    timm-introspect predict --model runs/main/introspective --images cat.png ship.jpg
    timm-introspect predict --model hf-hub:user/repo --images photos/ --top-k 5 --out results.csv
"""

from __future__ import annotations

import argparse
import csv
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ...errors import InvalidArgumentError
from ...jobs.args import model_source, positive

__all__ = ["format_table", "handle", "register", "write_predictions"]

SUFFIXES = (".json", ".csv")


def register(subparsers) -> None:
    p = subparsers.add_parser("predict", help="f's, f+TS's and H's top classes and an OOD score for image files")
    p.add_argument("--model", required=True, type=model_source,
                   help="folder or Hub repo (hf-hub:<repo>) of an introspective model")
    p.add_argument("--images", nargs="+", required=True, help="image files, or folders of them")
    p.add_argument("--top-k", type=positive, default=3, help="classes shown per model")
    p.add_argument("--batch-size", type=positive, default=64, help="images per introspective pass")
    p.add_argument("--out", default=None, help="results file: .json or .csv (default: a table on the terminal only)")
    p.set_defaults(handler=handle)


def _percent(p: float) -> str:
    return f"{100 * p:.1f}%"


def format_table(predictions: Sequence[Any]) -> str:
    """The predictions as a plain-text table: one row per image, the top classes of f, f+TS and H, the OOD score."""
    def top(pairs) -> str:
        return "-" if pairs is None else ", ".join(f"{c} {_percent(p)}" for c, p in pairs)

    def ood(p) -> str:
        if p.ood_threshold is None:
            return f"{p.ood_score:.3f}"
        return f"{p.ood_score:.3f} {'> ' if p.is_ood else '<= '}{p.ood_threshold:.3f}{' OOD' if p.is_ood else ''}"

    header = ["image", "f", "f+TS", "H", "OOD score (energy of H) vs threshold"]
    rows = [[str(p.source), top(p.f), top(p.f_ts), top(p.h), ood(p)] for p in predictions]
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in [header, *rows]]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def write_predictions(predictions: Sequence[Any], out: str | Path) -> Path:
    """``predictions`` to ``out``: JSON (a list of :meth:`ImagePrediction.to_dict`) or CSV (one
    :meth:`ImagePrediction.to_row` per line), by its suffix; written atomically, never through a link."""
    from ...data.outputs import atomic_open, write_json

    out = Path(out)
    if out.suffix.lower() == ".json":
        return write_json(out, [p.to_dict() for p in predictions])
    rows = [p.to_row() for p in predictions]
    fields = list(rows[0]) if rows else ["source"]
    with atomic_open(out, "w") as fh:
        writer = csv.DictWriter(fh, fieldnames=fields, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    return out


def handle(args: argparse.Namespace) -> list:
    from ...data.outputs import prepare_output_file
    from ...model.head import IntrospectiveHead
    from .images import expand_folders
    from .predict import predict_images

    if args.out is not None:  # a wrong suffix, a folder, a link or a read-only place: refused before any work
        if Path(args.out).suffix.lower() not in SUFFIXES:
            raise InvalidArgumentError(f"--out {args.out} must end in .json or .csv (the format is chosen by it)")
        args.out = prepare_output_file(args.out)
    images = expand_folders(args.images)
    head = IntrospectiveHead.from_pretrained(args.model)  # a folder, or hf-hub:<repo>
    predictions = predict_images(head, images, top_k=args.top_k, batch_size=args.batch_size)
    print(format_table(predictions))
    if args.out is not None:
        print(f"predictions written to {write_predictions(predictions, args.out)}")
    return predictions
