"""The Gradio page: upload or pick an image; f's, f+TS's and H's top classes side by side; the OOD score and what
it means; Grad-CAM and "why P, rather than Q?" for every Q; a corruption picker that re-scores the image.

>>> demo = build_demo("runs/main/introspective")     # doctest: +SKIP
>>> launch_demo(demo)                                # http://127.0.0.1:7860   # doctest: +SKIP

Bad input (a file that is no image, a decompression bomb, frost without its overlays) is answered in the page's
status box; the page never shows a stack trace (unexpected errors are logged on the server).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from ...errors import DataError, IntrospectionError
from ...model.head import IntrospectiveHead
from ..predict import Calibration
from .corruption import NONE, corruption_choices
from .inputs import MAX_UPLOAD, read_upload
from .render import label_values, map_gallery, ood_text, prediction_table, shown_image
from .requires import require_gradio
from .session import DemoSession

__all__ = ["build_demo", "launch_demo", "page_outputs"]

log = logging.getLogger(__name__)

#: the page's CSS: system fonts only (a demo must not need a font server)
CSS = ".status-box {min-height: 2.5em}"


def _name(session: DemoSession) -> str:
    """The model's name: its Hub repo's or folder's (``runs/main/introspective``: ``main/introspective``)."""
    if not session.source:
        return "an introspective model"
    source = str(session.source)
    if source.startswith(("hf-hub:", "hf_hub:")):
        return source.split(":", 1)[1].split("/")[-1]
    parts = Path(source).resolve().parts
    return "/".join(parts[-2:]) if parts[-1] in ("introspective", "h", "model") else parts[-1]


def _header(session: DemoSession, title: str | None) -> str:
    head, cal = session.head, session.calibration
    name = title or _name(session)
    arch = (getattr(head.model, "pretrained_cfg", None) or {}).get("architecture") or type(head.model).__name__
    lines = [f"## timm-introspect: {name}",
             f"f is `{arch}` ({head.num_classes} classes{f', trained on `{head.dataset}`' if head.dataset else ''}); "
             "H reads f's introspective features r_x (the gradient of f's classifier loss, from the same forward "
             "pass)."]
    if cal.temperature is not None:
        lines.append(f"f+TS is f with temperature T = {cal.temperature:.3f}, and the OOD threshold keeps "
                     f"{cal.keep:.0%} of the model's {cal.images or ''} held-out in-distribution images.")
    else:
        lines.append("This model records no usable held-out images: no f+TS and no OOD threshold.")
    return "\n\n".join(lines)


def page_outputs(session: DemoSession, path: str | None, corruption: str = NONE, severity: float = 3) -> tuple:
    """What the page shows for the file at ``path``: (image, f, f+TS, H, prediction table, OOD text, maps, status);
    an error's message goes to the status, never a stack trace."""
    empty = (None, None, None, None, "", "", [])
    if not path:
        return (*empty, "Upload an image, or pick one of the examples.")
    start = time.perf_counter()
    try:
        image = read_upload(path)
        result = session.score(image, corruption, int(severity))
    except DataError as err:
        return (*empty, f"**Cannot score this file:** {' '.join(str(err).split())}")
    except IntrospectionError as err:  # e.g. frost without its overlays
        return (*empty, f"**Not scored:** {' '.join(str(err).split())}")
    except Exception as err:  # never a stack trace in the page: the server's log has it
        log.exception("the demo failed on %s", path)
        return (*empty, f"**Something went wrong** ({type(err).__name__}); the server's log has the details.")
    pred = result.prediction
    what = f"{result.corruption} at severity {result.severity}" if result.corruption else "the clean image"
    status = f"Scored {what} in {time.perf_counter() - start:.2f} s."
    return (shown_image(result.pixels), label_values(pred.f), label_values(pred.f_ts), label_values(pred.h),
            prediction_table(result), ood_text(result), map_gallery(result), status)


def build_demo(model: IntrospectiveHead | str | Path | DemoSession, *, calibration: Calibration | None = None,
               frost_dir: str | Path | None = None, top_k: int = 3, examples: int = 10,
               title: str | None = None) -> Any:
    """The demo page of an introspective model, as a ``gradio.Blocks`` (start it with :func:`launch_demo`, or
    ``.launch()``).

    Args:
        model: an :class:`IntrospectiveHead`, a folder, ``hf-hub:<owner>/<name>``, or a :class:`DemoSession`.
        calibration: f's temperature and the OOD threshold (default: :func:`~timm_introspect.apps.predict
            .calibration_for`).
        frost_dir: the frost overlays, for the frost corruption.
        top_k: classes shown per model.
        examples: example images offered from the model's held-out images (none when they cannot be loaded).
        title: the page's title (default: the model's folder or repo name).

    Raises:
        MissingDependencyError: Gradio (or the corruptions' or maps' packages) is not installed.
        CheckpointError: the model cannot be loaded (a folder or Hub id that does not exist, ...).
    """
    gr = require_gradio()
    choices = corruption_choices()  # the [cifar10c] packages are there before the model is loaded
    session = model if isinstance(model, DemoSession) else DemoSession(model, calibration, frost_dir, top_k, examples)
    t_name = f"f+TS (T={session.calibration.temperature:.3f})" if session.calibration.temperature else "f+TS"
    with gr.Blocks(title=f"timm-introspect demo: {title or _name(session)}") as demo:
        gr.Markdown(_header(session, title), elem_id="header")
        with gr.Row():
            with gr.Column(scale=2, min_width=280):
                upload = gr.File(label="Upload an image (PNG, JPEG, ...)", file_count="single", type="filepath",
                                 elem_id="upload")
                if session.examples:
                    gallery = gr.Gallery([(str(p), c) for p, c in session.examples], label="Or pick an example ("
                                         f"{session.examples_note})", columns=5, height=240, allow_preview=False,
                                         fit_columns=False, object_fit="cover", elem_id="examples")
                    paths = [str(p) for p, _ in session.examples]
                    gallery.select(_picker(gr, paths), None, upload)
                else:
                    gr.Markdown(f"No example images ({session.examples_note}): upload one.", elem_id="no-examples")
                with gr.Row():
                    corruption = gr.Dropdown(choices, value=NONE, label="Corruption (CIFAR-10-C)", elem_id="corruption")
                    severity = gr.Slider(1, 5, value=3, step=1, label="Severity", elem_id="severity")
                status = gr.Markdown("Upload an image, or pick one of the examples.", elem_id="status",
                                     elem_classes="status-box")
            with gr.Column(scale=3):
                with gr.Row():
                    shown = gr.Image(label="What f and H see", type="numpy", interactive=False, height=220,
                                     elem_id="shown")
                    ood = gr.Markdown(elem_id="ood")
                with gr.Row():
                    f_label = gr.Label(num_top_classes=session.top_k, label="f (the classifier)", elem_id="f")
                    ts_label = gr.Label(num_top_classes=session.top_k, label=t_name, elem_id="f_ts")
                    h_label = gr.Label(num_top_classes=session.top_k, label="H (introspective)", elem_id="h")
                table = gr.Markdown(elem_id="table")
        maps = gr.Gallery(label="Why P? (Grad-CAM) and why P, rather than Q? for every Q (f's maps; jet, each scaled "
                                "to [0, 1])", columns=5, height="auto", allow_preview=True, fit_columns=False,
                          elem_id="maps")
        outputs = [shown, f_label, ts_label, h_label, table, ood, maps, status]

        def run(path: str | None, corruption_name: str, level: float) -> tuple:
            return page_outputs(session, path, corruption_name, level)

        inputs = [upload, corruption, severity]
        upload.change(run, inputs, outputs)
        corruption.change(run, inputs, outputs)
        severity.release(run, inputs, outputs)
    demo.session = session  # the scoring behind the page (tests and benchmarks read it)
    return demo


def _picker(gr, paths: list[str]):
    """The example gallery's select handler: the picked example's file, for the upload box."""

    def pick(evt) -> str:
        return paths[evt.index]

    pick.__annotations__["evt"] = gr.SelectData  # Gradio passes the selection to a parameter of this type
    return pick


def launch_demo(demo: Any, host: str | None = None, port: int | None = None, **kwargs: Any) -> Any:
    """Start ``demo`` (from :func:`build_demo`) with the demo's upload limit and system fonts; ``host`` and
    ``port`` default to Gradio's (``GRADIO_SERVER_NAME`` / ``GRADIO_SERVER_PORT``, as on a Space). Blocks until
    stopped unless ``prevent_thread_lock=True``."""
    gr = require_gradio()
    theme = gr.themes.Default(font=["ui-sans-serif", "system-ui", "sans-serif"],
                              font_mono=["ui-monospace", "monospace"])
    options = {"max_file_size": MAX_UPLOAD, "theme": theme, "css": CSS, "show_error": False, **kwargs}
    return demo.launch(server_name=host, server_port=port, **options)
