"""The demo's latency: from an uploaded file to every output (prediction, OOD score, all N maps) on this CPU.

* in process: :func:`~timm_introspect.apps.demo.app.page_outputs`, what the page's handler runs (read the upload,
  ``predict_images``, all N maps from the explain app, the overlays and texts), split into its parts; and one
  forward pass of f, and of the head (f, r_x and H), for scale;
* in the browser (Debian's chromium driven by Playwright, where both are installed): from handing the file to the
  page's upload box to the status saying it is scored with all N map images loaded, through Gradio's server
  (upload, queue, encoding the images, the page drawing them).

Median and 90th percentile over ``--images`` held-out images of the model (one per class first), after one
warm-up:

    OMP_NUM_THREADS=1 python benchmarks/demo_latency.py --model runs/after/introspective \\
        --out benchmarks/results/demo_latency.md
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import socket
import statistics
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch

from timm_introspect.apps.demo import DemoSession, build_demo, launch_demo, map_gallery, read_upload
from timm_introspect.apps.demo.app import page_outputs
from timm_introspect.apps.predict import predict_images
from timm_introspect.data.outputs import prepare_output_file, write_text
from timm_introspect.jobs.args import OneLineParser, positive, run_script

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


def _stats(seconds: list[float]) -> tuple[float, float]:
    """Median and 90th percentile, in seconds."""
    return statistics.median(seconds), float(np.percentile(seconds, 90))


def _cpu() -> str:
    try:
        names = [line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                 if line.startswith("model name")]
    except OSError:
        names = []
    return f"{names[0] if names else platform.processor() or platform.machine()}, {os.cpu_count()} CPUs"


@contextmanager
def _clock(times: list[float]):
    start = time.perf_counter()
    yield
    times.append(time.perf_counter() - start)


def in_process(session: DemoSession, paths: list[Path]) -> dict[str, list[float]]:
    """Seconds per image of the page's handler and of its parts."""
    t: dict[str, list[float]] = {k: [] for k in ("page", "read", "predict", "maps", "draw")}
    page_outputs(session, str(paths[0]))  # warm-up
    for path in paths:
        with _clock(t["page"]):
            page_outputs(session, str(path))
        with _clock(t["read"]):
            image = read_upload(path)
        with _clock(t["predict"]):
            predict_images(session.head, [image], session.top_k, session.calibration)
        x = session.transform(image)[None]
        with _clock(t["maps"]):
            session.explainer(x, contrast="all")
        scored = session.score(image)
        with _clock(t["draw"]):
            map_gallery(scored)
    return t


def against_forward(session: DemoSession, paths: list[Path], repeats: int = 5) -> dict[str, list[float]]:
    """Per image, the best of ``repeats`` interleaved runs (the least disturbed by other work on a shared CPU) of
    one forward pass of f, of the head (f, r_x, H) and of all N maps."""
    best: dict[str, list[float]] = {k: [] for k in ("f", "head", "maps")}
    for path in paths:
        x = session.transform(read_upload(path))[None]
        runs: dict[str, list[float]] = {k: [] for k in best}
        for _ in range(repeats):
            with torch.no_grad(), _clock(runs["f"]):
                session.head.model(x)
            with torch.no_grad(), _clock(runs["head"]):
                session.head(x)
            with _clock(runs["maps"]):
                session.explainer(x, contrast="all")
        for k in best:
            best[k].append(min(runs[k]))
    return best


def in_browser(session: DemoSession, paths: list[Path]) -> list[float] | str:
    """Seconds per image from handing the file to the page to all outputs drawn; or why it was not measured."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        return "playwright is not installed"
    if not Path(CHROMIUM).is_file():
        return "chromium is not installed"
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    demo = build_demo(session)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    launch_demo(demo, host="127.0.0.1", port=port, prevent_thread_lock=True, quiet=True)
    drawn = ("n => document.querySelector('#status').innerText.includes('Scored') && "
             "[...document.querySelectorAll('#maps img')].filter(i => i.complete && i.naturalWidth > 0).length >= n")
    seconds = []
    try:
        with sync_playwright() as p, tempfile.TemporaryDirectory() as tmp:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
            page = browser.new_page(viewport={"width": 1280, "height": 1000})
            page.goto(f"http://127.0.0.1:{port}/")
            page.wait_for_selector("#upload input[type=file]", state="attached")
            for i, path in enumerate([paths[0], *paths]):  # the first: a warm-up
                upload = Path(tmp) / f"upload-{i}{path.suffix}"
                shutil.copy(path, upload)
                start = time.perf_counter()
                page.set_input_files("#upload input[type=file]", str(upload))
                page.wait_for_function(drawn, arg=session.head.num_classes, timeout=60_000)
                if i:
                    seconds.append(time.perf_counter() - start)
                page.locator("#upload button[aria-label='Clear']").click()
                page.wait_for_function("() => document.querySelector('#status').innerText.includes('Upload')")
            browser.close()
    finally:
        demo.close()
    return seconds


def report(model: str, session: DemoSession, times: dict[str, list[float]], best: dict[str, list[float]],
           browser: list[float] | str, command: str) -> str:
    n, classes = len(times["page"]), session.head.num_classes
    size = "x".join(map(str, session.transform(read_upload(session.examples[0][0])).shape))
    load = ", ".join(f"{v:.1f}" for v in os.getloadavg())
    lines = [f"# Demo latency: from an uploaded file to every output ({classes} maps)", "",
             f"Model: `{model}` (f {(session.head.model.pretrained_cfg or {}).get('architecture')}, input {size}). "
             f"Machine: {_cpu()}, torch threads {torch.get_num_threads()}, shared with other jobs (load average "
             f"{load} at the end). {n} held-out images, one warm-up first.", "", f"Command: `{command}`", "",
             "| step | median (ms) | p90 (ms) |", "| --- | ---: | ---: |"]
    names = {"page": "**the page's handler, all outputs** (read, predict, maps, overlays, texts)",
             "read": "read the upload", "predict": "predict_images (f, r_x, H, f+TS, OOD score)",
             "maps": f"all {classes} maps (Grad-CAM + every Q)", "draw": "draw the overlays"}
    for key, name in names.items():
        med, p90 = _stats(times[key])
        lines.append(f"| {name} | {med * 1e3:.1f} | {p90 * 1e3:.1f} |")
    if isinstance(browser, str):
        lines += ["", f"In the browser: not measured ({browser})."]
    else:
        med, p90 = _stats(browser)
        lines += ["", f"**In the browser** (chromium, headless; from handing the file to the upload box to the status "
                      f"and all {classes} map images drawn, through Gradio's server): median {med * 1e3:.0f} ms, p90 "
                      f"{p90 * 1e3:.0f} ms over {len(browser)} uploads."]
    f = statistics.median(best["f"])
    lines += ["", "Against one forward pass (per image the best of 5 interleaved runs, then the median over images):",
              "", "| | median (ms) | x one forward pass of f |", "| --- | ---: | ---: |"]
    for key, name in (("f", "one forward pass of f"), ("head", "the head: f, r_x and H"),
                      ("maps", f"all {classes} maps")):
        lines.append(f"| {name} | {statistics.median(best[key]) * 1e3:.2f} | {statistics.median(best[key]) / f:.2f} |")
    extra = (statistics.median(best["maps"]) - f) * 1e3
    lines += ["", f"For one {size} image the maps' arithmetic beyond the forward pass (the weights of every Q, the "
                  f"{classes} maps, their upsampling) is a fixed {extra:.1f} ms; the closed form needs no backward "
                  "pass, and on batches the maps cost about one forward pass (`benchmarks/explain_cost.py`)."]
    if not isinstance(browser, str):
        gradio = (statistics.median(browser) - statistics.median(times["page"])) * 1e3
        lines += ["", f"In the browser, about {gradio:.0f} ms of the median is Gradio's: the upload, the queue, "
                      "encoding the image and the maps as WebP, and the page fetching and drawing them."]
    total = _stats(times["page"] if isinstance(browser, str) else browser)[1]
    lines += ["", f"The {classes} maps cost {statistics.median(best['maps']) / f:.1f} forward passes of f (the closed "
                  "form: one forward pass, the weights from W). The goal, every output in under 1 s, is "
                  f"{'met' if total < 1 else 'not met'} (p90 {total * 1e3:.0f} ms "
                  f"{'in process' if isinstance(browser, str) else 'in the browser'})."]
    return "\n".join(lines) + "\n"


def main(argv=None) -> str:
    p = OneLineParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="folder or hf-hub:<repo> of an introspective model")
    p.add_argument("--images", type=positive, default=20, help="held-out images to time")
    p.add_argument("--no-browser", action="store_true", help="time in process only")
    p.add_argument("--out", default=None, help="Markdown file for the results")
    args = p.parse_args(argv)
    if args.out:
        prepare_output_file(args.out)  # before any work
    session = DemoSession(args.model, examples=args.images)
    if len(session.examples) < args.images:
        raise SystemExit(f"only {len(session.examples)} held-out images could be loaded ({session.examples_note})")
    paths = [path for path, _ in session.examples]
    times = in_process(session, paths)
    best = against_forward(session, paths)
    browser = "--no-browser" if args.no_browser else in_browser(session, paths)
    threads = f"OMP_NUM_THREADS={os.environ['OMP_NUM_THREADS']} " if os.environ.get("OMP_NUM_THREADS") else ""
    command = f"{threads}python benchmarks/demo_latency.py " + " ".join(argv if argv is not None else sys.argv[1:])
    text = report(args.model, session, times, best, browser, command)
    print(text)
    if args.out:
        write_text(args.out, text)
    return text


if __name__ == "__main__":
    sys.exit(run_script(main))
