"""The demo: a Gradio page for an introspective model, and a Hugging Face Space that serves it.

>>> from timm_introspect.apps.demo import build_demo, launch_demo
>>> launch_demo(build_demo("runs/main/introspective"))          # doctest: +SKIP

Modules: :mod:`.session` (what is computed for an image, no web framework), :mod:`.inputs` (uploads read safely),
:mod:`.corruption` (the picker), :mod:`.render` (maps over the image, tables, the OOD verdict), :mod:`.app` (the
page; Gradio is imported only there, lazily), :mod:`.space` (a Space's files, and pushing them), :mod:`.cli`.
Gradio is the optional extra ``[demo]``.
"""

from .app import build_demo, launch_demo
from .corruption import NONE, corrupt_pixels, corruption_choices
from .inputs import MAX_PIXELS, MAX_UPLOAD, read_upload
from .render import map_gallery, ood_text, prediction_table
from .session import DemoResult, DemoSession, load_model

__all__ = ["MAX_PIXELS", "MAX_UPLOAD", "NONE", "DemoResult", "DemoSession", "build_demo", "corrupt_pixels",
           "corruption_choices", "launch_demo", "load_model", "map_gallery", "ood_text", "prediction_table",
           "read_upload"]
