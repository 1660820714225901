"""A Hugging Face Space for a pushed introspective model: ``app.py`` (loads the model by its Hub id and serves
:func:`~timm_introspect.apps.demo.build_demo`), ``requirements.txt`` and a README with the Gradio SDK's front matter.

>>> write_space("hf-hub:me/cifar10-introspective", "space/")                  # doctest: +SKIP
>>> push_space("me/cifar10-introspective", "me/cifar10-introspective-demo")  # doctest: +SKIP
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from ...data.outputs import atomic_open, output_kind, prepare_output
from ...errors import InvalidArgumentError
from ...version import __version__
from .requires import require_gradio

__all__ = ["SPACE_FILES", "hub_model_id", "push_space", "space_files", "space_id", "write_space"]

#: the files of a Space
SPACE_FILES = ("app.py", "requirements.txt", "README.md")

_APP = '''"""The demo of the introspective model {repo} (timm-introspect): f's, f+TS's and H's top classes, the OOD
score, "why P, rather than Q?" maps for every Q, and a corruption picker."""

from timm_introspect.apps.demo import build_demo, launch_demo

demo = build_demo("hf-hub:{repo}")

if __name__ == "__main__":
    launch_demo(demo)
'''

_README = """---
title: {title}
emoji: 🔍
colorFrom: indigo
colorTo: gray
sdk: gradio
sdk_version: {gradio}
app_file: app.py
pinned: false
models:
- {repo}
tags:
- timm-introspect
- introspective-learning
- image-classification
---

# {name}: introspective learning demo

The demo of [{repo}](https://huggingface.co/{repo}), a timm classifier f with an introspective network H
([timm-introspect](https://pypi.org/project/timm-introspect/) {version}). Upload an image or pick an example to
see, side by side, f's, temperature-scaled f's and H's top classes; an out-of-distribution score against the
threshold that keeps 95 % of the model's own held-out images; Grad-CAM and "why P, rather than Q?" maps for every
class Q; and a corruption picker (CIFAR-10-C's 19 corruptions, severity 1 to 5) that re-scores the image.

Run it locally: `pip install 'timm-introspect[demo]' && timm-introspect demo --model hf-hub:{repo}`
"""


def hub_model_id(model: str) -> str:
    """``hf-hub:<owner>/<name>`` or ``<owner>/<name>`` as ``<owner>/<name>``, checked; a local folder is refused
    (a Space loads its model from the Hub)."""
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    repo = str(model)
    for prefix in ("hf-hub:", "hf_hub:"):
        if repo.startswith(prefix):
            repo = repo[len(prefix):]
    if Path(str(model)).exists() or repo.count("/") != 1:
        raise InvalidArgumentError(f"{model!r} is not a Hub model id: a Space loads its model from the Hub; push the "
                                   "model (push_to_hub) and pass hf-hub:<owner>/<name>")
    try:
        validate_repo_id(repo)
    except HFValidationError as err:
        raise InvalidArgumentError(f"{model!r} is not a valid Hub model id ('<owner>/<name>': letters, digits, '-', "
                                   "'_' and '.')") from err
    return repo


def space_id(text: str) -> str:
    """A Space id ``<owner>/<name>``, checked."""
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        if str(text).count("/") != 1:
            raise HFValidationError("owner/name")
        validate_repo_id(str(text))
    except HFValidationError as err:
        raise InvalidArgumentError(f"{text!r} is not a Space id: write <owner>/<name> (letters, digits, '-', '_' and "
                                   "'.')") from err
    return str(text)


def space_files(model: str, title: str | None = None) -> dict[str, str]:
    """The Space's files for the Hub model ``model``, by name: ``app.py``, ``requirements.txt`` (``timm-introspect``
    with its ``[demo]`` extra, pinned to this version) and ``README.md`` (the Gradio SDK at the installed version,
    which the Space installs)."""
    repo = hub_model_id(model)
    gradio = require_gradio().__version__
    name = repo.split("/", 1)[1]
    title = title or f"{name} demo"
    return {
        "app.py": _APP.format(repo=repo),
        # Gradio itself comes from the README's sdk_version
        "requirements.txt": f"timm-introspect[demo]=={__version__}\n",
        "README.md": _README.format(title=title.replace("\n", " "), gradio=gradio, repo=repo, name=name,
                                    version=__version__),
    }


def write_space(model: str, out_dir: str | Path, title: str | None = None) -> Path:
    """Write the Space of the Hub model ``model`` to ``out_dir`` (created; a folder holding another output of this
    package is refused) and return it."""
    files = space_files(model, title)  # the id and Gradio checked before anything is written
    folder = Path(out_dir)
    found = output_kind(folder)
    if found is not None:
        raise InvalidArgumentError(f"out={out_dir} holds another output of timm-introspect ({found}): write the Space "
                                   "to a folder of its own")
    folder = prepare_output(folder, "benchmark")
    for name, text in files.items():
        with atomic_open(folder / name, "wb") as fh:  # UTF-8 whatever the locale (the README has an emoji)
            fh.write(text.encode("utf-8"))
    return folder


def push_space(model: str, space: str, token: str | bool | None = None, private: bool | None = None,
               title: str | None = None) -> str:
    """Create the Space ``space`` (``<owner>/<name>``) on the Hub (Gradio SDK; kept if it exists) and upload its
    files for the Hub model ``model``; returns the Space's URL."""
    from huggingface_hub import HfApi

    files = space_files(model, title)
    api = HfApi(token=token)
    url = api.create_repo(space_id(space), repo_type="space", space_sdk="gradio", exist_ok=True, private=private)
    with tempfile.TemporaryDirectory(prefix="timm-introspect-space-") as tmp:
        for name, text in files.items():
            (Path(tmp) / name).write_text(text, encoding="utf-8")
        api.upload_folder(repo_id=url.repo_id, folder_path=tmp, repo_type="space",
                          commit_message=f"Demo of {hub_model_id(model)} (timm-introspect {__version__})")
    return str(url)
