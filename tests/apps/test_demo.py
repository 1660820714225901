"""The demo: what it computes is exactly predict_images' (and the explain app's maps), uploads are read safely,
and in a real browser (Debian's chromium driven by Playwright; skipped where either is absent) the page shows the
Python API's numbers, answers bad input in the page, and a generated Space's app.py serves it from the Hub.

The README's screenshot is taken by the browser test with the main job's model:

    TIMM_INTROSPECT_DEMO_MODEL=/work/runs/after/introspective \
    TIMM_INTROSPECT_DEMO_SCREENSHOT=benchmarks/figures/demo.png python -m pytest -q tests/apps/test_demo.py -k page
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from helpers import CLASSES, make_images, write_parquet
from PIL import Image

from timm_introspect import DataError, IntrospectiveHead, InvalidArgumentError
from timm_introspect.apps.demo import DemoSession, corrupt_pixels, read_upload
from timm_introspect.apps.demo.space import SPACE_FILES, push_space, write_space
from timm_introspect.apps.predict import predict_images
from timm_introspect.cli import main
from timm_introspect.data.images import load_images
from timm_introspect.log import disable_progress_bars
from timm_introspect.training.loop import Schedule
from timm_introspect.training.pipeline import fit_head, holdout_record, train_backbone

CHROMIUM = os.environ.get("TIMM_INTROSPECT_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
MAIN_MODEL = os.environ.get("TIMM_INTROSPECT_DEMO_MODEL")  # e.g. the main job's model, for the README screenshot
SCREENSHOT = os.environ.get("TIMM_INTROSPECT_DEMO_SCREENSHOT")


def _browser_or_skip():
    """Playwright's sync API, or a skip saying what is missing (no browser is ever downloaded)."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("playwright is not installed (pip install playwright; the browser is Debian's chromium)")
    if not Path(CHROMIUM).is_file():
        pytest.skip(f"chromium is not installed at {CHROMIUM} (apt-get install -y chromium)")
    pytest.importorskip("gradio", reason="the demo needs Gradio: pip install 'timm-introspect[demo]'")
    return sync_playwright


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    """A tiny trained model (test_resnet at 32 px, 3 colour classes) whose f was trained without 20 % of its
    images: it records them, so the demo has f+TS, an OOD threshold and example images."""
    disable_progress_bars()
    root = tmp_path_factory.mktemp("demo")
    write_parquet(root / "data", "train", *make_images(60, 0, size=32))
    train = load_images(str(root / "data"), "train")
    f = train_backbone(train, root / "f", "test_resnet", cifar_stem=True, holdout=0.2, batch_size=16, seed=0,
                       schedule=Schedule(epochs=2, lr=0.05, kind="onecycle"))
    fit_head(f, train.split_holdout(0.2, 0)[0], root / "h", loss="mse-M", batch_size=16, seed=0,
             schedule=Schedule(epochs=3, lr=0.1, weight_decay=5e-3, kind="onecycle"),
             calibration=holdout_record(root / "f"))
    return root / "h"


@pytest.fixture(scope="module")
def session(model_dir) -> DemoSession:
    return DemoSession(str(model_dir), examples=6)


# --- what the page computes ---------------------------------------------------------------------------------

def test_a_score_is_predict_images_and_the_explain_apps_maps(session, model_dir):
    assert session.calibration.temperature is not None and session.calibration.ood_threshold is not None
    assert sorted(name for _, name in session.examples[:3]) == sorted(CLASSES)  # one per class first
    path = session.examples[1][0]
    image = read_upload(path)
    result = session.score(image)
    head = IntrospectiveHead.from_pretrained(str(model_dir)).eval()  # a separate load: the same numbers
    assert result.prediction.to_dict() == {**predict_images(head, [image])[0].to_dict(), "source": 0}
    assert result.prediction.to_dict() == {**predict_images(head, [str(path)])[0].to_dict(), "source": 0}
    maps = result.explanation.maps("contrastive")
    assert maps.shape == (1, 3, 32, 32) and result.explanation.plan.method == "closed-form"  # every Q at once
    assert result.explanation.contrast.tolist() == [[0, 1, 2]]

    fog = session.score(image, "fog", 5)
    pixels = corrupt_pixels(np.asarray(image), "fog", 5)
    assert np.array_equal(fog.pixels, pixels) and not np.array_equal(pixels, np.asarray(image))
    assert fog.prediction.to_dict() == {**predict_images(head, [Image.fromarray(pixels)])[0].to_dict(), "source": 0}
    assert (fog.corruption, fog.severity) == ("fog", 5)

    with pytest.raises(InvalidArgumentError, match="--frost-dir"):
        session.score(image, "frost", 1)
    with pytest.raises(InvalidArgumentError, match="severity"):
        session.score(image, "fog", 6)


def test_uploads_are_read_or_refused_by_name(tmp_path, session):
    (tmp_path / "notes.txt").write_text("not an image")
    with pytest.raises(DataError, match="'notes.txt' is not an image"):
        read_upload(tmp_path / "notes.txt")
    Image.new("1", (8000, 6000)).save(tmp_path / "bomb.png")  # 48 megapixels in a few kilobytes
    assert (tmp_path / "bomb.png").stat().st_size < 20_000
    with pytest.raises(DataError, match="decompression bomb"):
        read_upload(tmp_path / "bomb.png")
    make_images(1, 0, size=64)[0][0].save(tmp_path / "whole.png")
    (tmp_path / "cut.png").write_bytes((tmp_path / "whole.png").read_bytes()[:2000])
    with pytest.raises(DataError, match="'cut.png'"):
        read_upload(tmp_path / "cut.png")
    with pytest.raises(DataError, match="not a file"):
        read_upload(tmp_path)

    rgb = make_images(1, 3, size=40)[0][0]
    wide = Image.fromarray(np.asarray(rgb.convert("L"), np.uint16) * 257)  # 16-bit grayscale
    pictures = {"L": rgb.convert("L"), "RGBA": rgb.convert("RGBA"), "P": rgb.convert("P"), "I16": wide}
    for name, picture in pictures.items():
        path = tmp_path / f"{name}.png"
        picture.save(path)
        image = read_upload(path)
        assert image.mode == "RGB" and image.size == (40, 40)
        expected = predict_images(session.head, [str(path)], 3, session.calibration)[0]
        assert session.score(image).prediction.to_dict() == {**expected.to_dict(), "source": 0}


def test_a_model_that_does_not_exist_fails_in_one_line_before_a_server_starts(hub, capsys, tmp_path):
    pytest.importorskip("gradio")
    for model in ("hf-hub:tester/no-such-model", str(tmp_path / "no-such-folder")):
        with pytest.raises(SystemExit) as exit_:
            main(["demo", "--model", model, "--examples", "0"])
        message = exit_.value.code
        assert isinstance(message, str) and message.startswith("timm-introspect demo: error: ")
        assert "\n" not in message and "Traceback" not in message + capsys.readouterr().err
        assert "no-such" in message


# --- in the browser -----------------------------------------------------------------------------------------

def _wait_status(page, text: str) -> str:
    page.wait_for_function("t => (document.querySelector('#status') || {}).innerText?.includes(t)", arg=text,
                           timeout=30_000)
    return page.inner_text("#status")


def _shown_rows(page) -> list[list[str]]:
    """The prediction table as the page shows it: per rank, f's, f+TS's and H's 'class probability'."""
    lines = [line.split("\t") for line in page.inner_text("#table").splitlines() if line.strip()]
    return [cells[1:] for cells in lines[1:] if cells[0].strip().isdigit()]


def _expected_rows(prediction) -> list[list[str]]:
    return [[f"{name} {p:.4f}" for name, p in (prediction.f[r], prediction.f_ts[r], prediction.h[r])]
            for r in range(len(prediction.f))]


def _check_page_against_python(page, prediction) -> None:
    assert _shown_rows(page) == _expected_rows(prediction)
    ood = page.inner_text("#ood")
    assert f"OOD score {prediction.ood_score:.4f}" in ood and f"Threshold {prediction.ood_threshold:.4f}" in ood
    assert ("out of distribution" if prediction.is_ood else "in distribution") in ood
    assert page.inner_text("#h").splitlines()[1].strip() == prediction.h[0][0]  # the H label's top class


def _small_png(source: Path, target: Path) -> None:
    """The screenshot as a small PNG (256 colours) for the README."""
    Image.open(source).convert("RGB").quantize(256, method=Image.Quantize.MEDIANCUT).save(target, optimize=True)


def test_the_page_shows_what_predict_images_returns(session, tmp_path, monkeypatch):
    sync_playwright = _browser_or_skip()
    from timm_introspect.apps.demo import build_demo, launch_demo

    monkeypatch.setenv("GRADIO_ANALYTICS_ENABLED", "False")
    used = DemoSession(MAIN_MODEL, frost_dir=None) if MAIN_MODEL else session
    demo = build_demo(used)
    port = _free_port()
    launch_demo(demo, host="127.0.0.1", port=port, prevent_thread_lock=True, quiet=True)
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
            page = browser.new_page(viewport={"width": 1280, "height": 1000})
            page.goto(f"http://127.0.0.1:{port}/")
            page.wait_for_selector("#upload input[type=file]", state="attached")

            # a file that is no image: a message in the page, no stack trace
            (tmp_path / "notes.txt").write_text("not an image")
            page.set_input_files("#upload input[type=file]", str(tmp_path / "notes.txt"))
            assert "'notes.txt' is not an image" in _wait_status(page, "Cannot score")
            assert "Traceback" not in page.inner_text("body")
            page.locator("#upload button[aria-label='Clear']").click()
            _wait_status(page, "Upload an image")

            # an upload: the numbers shown are predict_images' for the same file
            example = used.examples[min(3, len(used.examples) - 1)][0]
            upload = tmp_path / "upload.png"
            shutil.copy(example, upload)
            page.set_input_files("#upload input[type=file]", str(upload))
            _wait_status(page, "Scored the clean image")
            _check_page_against_python(page, predict_images(used.head, [str(upload)], used.top_k, used.calibration)[0])
            page.wait_for_function("n => document.querySelectorAll('#maps img').length >= n",
                                   arg=used.head.num_classes, timeout=30_000)  # Grad-CAM + every Q but P
            page.locator("#upload button[aria-label='Clear']").click()
            _wait_status(page, "Upload an image")

            # an example from the gallery, then a corruption: re-scored, the same numbers as predict_images
            page.locator("#examples img").nth(0).click()
            _wait_status(page, "Scored the clean image")
            page.click("#corruption input")
            page.get_by_role("option", name="fog", exact=True).click()
            _wait_status(page, "Scored fog at severity 3")
            pixels = corrupt_pixels(np.asarray(read_upload(used.examples[0][0])), "fog", 3)
            _check_page_against_python(page, predict_images(used.head, [Image.fromarray(pixels)], used.top_k,
                                                            used.calibration)[0])
            page.wait_for_timeout(500)  # the maps' images decoded
            page.screenshot(path=str(tmp_path / "demo.png"), full_page=True)
            browser.close()
    finally:
        demo.close()
    assert (tmp_path / "demo.png").stat().st_size > 10_000
    if SCREENSHOT:
        _small_png(tmp_path / "demo.png", Path(SCREENSHOT))


# --- the Space ------------------------------------------------------------------------------------------------

def test_space_files_and_push(hub, model_dir, tmp_path):
    gradio = pytest.importorskip("gradio")
    from timm_introspect.version import __version__

    folder = write_space("hf-hub:tester/tiny", tmp_path / "space")
    assert sorted(p.name for p in folder.iterdir()) == sorted(SPACE_FILES)
    readme = (folder / "README.md").read_text(encoding="utf-8")
    front = readme.split("---")[1]
    assert "\nsdk: gradio\n" in front and f"\nsdk_version: {gradio.__version__}\n" in front
    assert "\napp_file: app.py\n" in front and "- tester/tiny" in front
    requirements = (folder / "requirements.txt").read_text(encoding="utf-8").splitlines()
    assert requirements == [f"timm-introspect[demo]=={__version__}"]
    assert 'build_demo("hf-hub:tester/tiny")' in (folder / "app.py").read_text()
    compile((folder / "app.py").read_text(), "app.py", "exec")

    url = push_space("hf-hub:tester/tiny", "tester/tiny-demo")
    assert url.endswith("/spaces/tester/tiny-demo")
    repo = hub.state.repos["spaces/tester/tiny-demo"]
    assert repo.sdk == "gradio" and {k: v.decode() for k, v in repo.files.items()} == {
        name: (folder / name).read_text(encoding="utf-8") for name in SPACE_FILES}
    assert "tester/tiny-demo" not in hub.state.repos  # a Space, not a model repo

    with pytest.raises(InvalidArgumentError, match="Hub model id"):
        write_space(str(model_dir), tmp_path / "other")  # a local folder: a Space loads from the Hub
    with pytest.raises(InvalidArgumentError, match="another output"):
        write_space("hf-hub:tester/tiny", model_dir)


def test_the_space_app_serves_the_page_from_the_hub(hub, model_dir, tmp_path):
    sync_playwright = _browser_or_skip()
    IntrospectiveHead.from_pretrained(str(model_dir)).push_to_hub("tester/tiny")
    folder = write_space("hf-hub:tester/tiny", tmp_path / "space")
    port = _free_port()
    env = {**os.environ, "HF_ENDPOINT": hub.endpoint, "HF_HUB_CACHE": str(tmp_path / "cache"), "HF_TOKEN": "hf_test",
           "GRADIO_SERVER_NAME": "127.0.0.1", "GRADIO_SERVER_PORT": str(port), "GRADIO_ANALYTICS_ENABLED": "False",
           "HF_HUB_DISABLE_TELEMETRY": "1", "OMP_NUM_THREADS": "1"}
    log = tmp_path / "space.log"
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, "app.py"], cwd=folder, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 120
        while True:
            assert proc.poll() is None, f"app.py exited ({proc.returncode}):\n{log.read_text()[-3000:]}"
            assert time.monotonic() < deadline, f"app.py did not serve within 120 s:\n{log.read_text()[-3000:]}"
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5) as response:
                    if response.status == 200:
                        break
            except OSError:
                time.sleep(0.5)
        assert any(m == "GET" and "introspection.safetensors" in p for m, p in hub.state.requests)  # from the Hub
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
            page = browser.new_page()
            page.goto(f"http://127.0.0.1:{port}/")
            page.wait_for_selector("#upload input[type=file]", state="attached")
            assert re.search(r"timm-introspect: tiny", page.inner_text("#header"))
            browser.close()
    finally:
        proc.terminate()
        proc.wait(timeout=30)
