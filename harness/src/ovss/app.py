"""``ovss app``: a web page on 127.0.0.1 that segments an uploaded image with each method.

The page takes an image, a comma-separated vocabulary and a method (or all of them) and shows,
per method, the coloured overlay with its legend and the time it took. Each method's worker is
started once, in the background when the page starts, and kept warm between requests; a method
that cannot start or fails shows one line in its panel while the others go on. With ``tiny``
every method runs its golden tiny fixture and the page says that the weights are untrained.
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gradio as gr
import numpy as np

from ovss.environments import discover_methods, get_method
from ovss.errors import OvssError
from ovss.render import overlay
from ovss.vocabulary import clean_vocabulary
from ovss.worker import Worker, model_settings
from ovss_common.downloads import DownloadError
from ovss_common.images import ImageError, read_image
from ovss_common.outputs import LabelMapError, read_label_map
from ovss_common.protocol import SegmentRequest
from ovss_common.quiet import QUIET_ENV

HOST = "127.0.0.1"
DEFAULT_PORT = 7860
ALL_METHODS = "all"
PIPELINE = "demo"
CLOSE_WAIT = 5.0
UNTRAINED_NOTE = (
    "**Untrained weights.** Every method runs its golden tiny test fixture: the overlays show "
    "that the pipeline works end to end, the labels themselves mean nothing."
)

#: What a panel shows when a request fails before or inside one method.
PANEL_ERRORS = (OvssError, DownloadError, ImageError, LabelMapError, OSError)


@dataclass
class AppSettings:
    """What ``ovss app`` is told: the methods on the page, the device, the port, tiny fixtures."""

    methods: list[str]
    device: str | None = None
    port: int = DEFAULT_PORT
    tiny: bool = False


@dataclass
class PanelContent:
    """What one method's panel shows: an overlay (or nothing) and one line of text."""

    overlay: np.ndarray | None
    message: str


def one_line(error: BaseException) -> str:
    """An error's message on one line."""
    return " ".join(line.strip() for line in str(error).splitlines() if line.strip())


def resolve_methods(names: list[str] | None) -> list[str]:
    """The methods for the page: ``names`` checked and deduplicated, or every one present."""
    if not names:
        found = sorted(discover_methods())
        if not found:
            raise OvssError("no method package in this checkout; nothing to serve")
        return found
    for name in names:
        get_method(name)
    return list(dict.fromkeys(names))


def parse_vocabulary(text: str) -> list[str]:
    """The page's comma-separated names, cleaned like ``--classes`` (OvssError when bad)."""
    names = text.split(",") if text.strip() else []
    return clean_vocabulary(names, "vocabulary")


def render(image: Path, reply: dict[str, Any]) -> np.ndarray:
    """The overlay of a ``segment`` reply, the image decoded as the worker decoded it."""
    sidecar = json.loads(Path(reply["sidecar"]).read_text(encoding="utf-8"))
    decoded = read_image(image, exif_transpose=sidecar["image"]["exif_transposed"])
    labels = read_label_map(reply["label_map"])
    return overlay(decoded.rgb, labels, reply["effective_vocabulary"])


class WarmMethod:
    """One method's worker: started once, kept for later requests, restarted when it died."""

    def __init__(self, method: str, device: str | None, untrained: bool) -> None:
        self.method = method
        self.device = device
        self.untrained = untrained
        self._lock = threading.Lock()
        self._worker: Worker | None = None

    def _ensure_started(self) -> float:
        """Start the worker unless it runs; returns the seconds that took (0 when it ran)."""
        if self._worker is not None:
            return 0.0
        begin = time.perf_counter()
        settings = model_settings(
            self.method, tiny=self.untrained, device=self.device, pipeline=PIPELINE
        )
        worker = Worker(get_method(self.method), settings.load_request())
        worker.start()
        self._worker = worker
        return time.perf_counter() - begin

    def warm_up(self) -> None:
        """Start the worker now; a failure is logged and retried by the next request."""
        with self._lock:
            try:
                seconds = self._ensure_started()
            except PANEL_ERRORS as error:
                print(f"ovss: {self.method} is unavailable: {one_line(error)}", file=sys.stderr)
                return
        print(f"ovss: {self.method} ready ({seconds:.1f} s)", file=sys.stderr)

    def segment(self, image: Path, vocabulary: list[str], folder: Path) -> PanelContent:
        """Segment ``image``; its outputs go under ``folder``. Never raises for a failure."""
        with self._lock:
            try:
                start_seconds = self._ensure_started()
            except PANEL_ERRORS as error:
                return PanelContent(None, f"{self.method} is unavailable: {one_line(error)}")
            assert self._worker is not None
            begin = time.perf_counter()
            try:
                reply = self._worker.segment(
                    SegmentRequest(
                        image=str(image),
                        vocabulary=vocabulary,
                        output_prefix=str(folder / self.method),
                    )
                )
                picture = render(image, reply)
            except PANEL_ERRORS as error:
                return PanelContent(None, f"{self.method} failed: {one_line(error)}")
        return PanelContent(
            picture, self._timing(reply["timing"], time.perf_counter() - begin, start_seconds)
        )

    def _timing(self, timing: dict[str, float], wall: float, start_seconds: float) -> str:
        parts = [
            f"model {timing['model']:.2f} s",
            f"worker total {timing['total']:.2f} s",
            f"end to end {wall:.2f} s",
        ]
        if start_seconds:
            parts.append(f"plus {start_seconds:.1f} s to start the worker")
        note = " (untrained tiny weights)" if self.untrained else ""
        return f"{self.method}{note}: " + ", ".join(parts)

    def close(self) -> None:
        """Shut the worker down; one still busy after a few seconds is left to see its input end
        when this process exits."""
        if not self._lock.acquire(timeout=CLOSE_WAIT):
            return
        try:
            if self._worker is not None:
                self._worker.close()
                self._worker = None
        finally:
            self._lock.release()


class Demo:
    """The page's state: one warm method per panel and a scratch folder for worker outputs."""

    def __init__(self, settings: AppSettings) -> None:
        self.settings = settings
        self.methods = {
            name: WarmMethod(name, settings.device, settings.tiny) for name in settings.methods
        }
        self._scratch = tempfile.TemporaryDirectory(prefix="ovss-app-")
        self._requests = itertools.count(1)

    def warm_up(self) -> None:
        """Start every worker in the background; requests wait for the one they need."""
        for method in self.methods.values():
            threading.Thread(target=method.warm_up, daemon=True).start()

    def _outputs(self, status: str, panels: dict[str, PanelContent]) -> tuple[Any, ...]:
        flat: list[Any] = [status]
        for name in self.methods:
            panel = panels.get(name, PanelContent(None, ""))
            flat += [panel.overlay, panel.message]
        return tuple(flat)

    def run(
        self, image: str | None, vocabulary_text: str, choice: str
    ) -> Iterator[tuple[Any, ...]]:
        """The page's handler: yields (status, overlay and text of every panel) as methods finish."""
        if not image:
            yield self._outputs("Upload an image first.", {})
            return
        try:
            vocabulary = parse_vocabulary(vocabulary_text or "")
        except OvssError as error:
            yield self._outputs(one_line(error), {})
            return
        chosen = list(self.methods) if choice == ALL_METHODS else [choice]
        if any(name not in self.methods for name in chosen):
            yield self._outputs(f"unknown method {choice!r}", {})
            return
        panels = {
            name: PanelContent(None, "not selected") for name in self.methods if name not in chosen
        }
        panels.update({name: PanelContent(None, "waiting…") for name in chosen})
        folder = Path(self._scratch.name) / str(next(self._requests))
        folder.mkdir()
        try:
            for position, name in enumerate(chosen, start=1):
                panels[name] = PanelContent(None, "running…")
                yield self._outputs(
                    f"Segmenting with {name} ({position} of {len(chosen)})…", panels
                )
                panels[name] = self.methods[name].segment(Path(image), vocabulary, folder)
        finally:
            shutil.rmtree(folder, ignore_errors=True)
        succeeded = sum(panels[name].overlay is not None for name in chosen)
        yield self._outputs(f"{succeeded} of {len(chosen)} methods segmented the image.", panels)

    def close(self) -> None:
        """Shut every worker down and remove the scratch folder."""
        for method in self.methods.values():
            method.close()
        self._scratch.cleanup()


def build_page(demo: Demo) -> gr.Blocks:
    """The gradio page of ``demo``; its handler is exposed as the API endpoint ``/segment``."""
    names = list(demo.methods)
    with gr.Blocks(title="OVSS demo", analytics_enabled=False) as page:
        gr.Markdown("# OVSS: open-vocabulary segmentation with " + ", ".join(names))
        if demo.settings.tiny:
            gr.Markdown(UNTRAINED_NOTE)
        with gr.Row():
            image = gr.Image(
                type="filepath", image_mode=None, sources=["upload", "clipboard"], label="Image"
            )
            with gr.Column():
                vocabulary = gr.Textbox(
                    label="Vocabulary",
                    info="comma-separated names",
                    placeholder="cat, sofa, wall, floor",
                )
                choice = gr.Radio([ALL_METHODS, *names], value=ALL_METHODS, label="Method")
                button = gr.Button("Segment", variant="primary")
                status = gr.Textbox(label="Status", interactive=False)
        outputs: list[gr.components.Component] = [status]
        with gr.Row():
            for name in names:
                with gr.Column():
                    outputs.append(gr.Image(label=name, format="png", interactive=False))
                    outputs.append(gr.Textbox(label=f"{name} timing", interactive=False))
        button.click(demo.run, [image, vocabulary, choice], outputs, api_name="segment")
    return page


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def serve(settings: AppSettings) -> None:
    """Serve the page on 127.0.0.1 until Ctrl-C or SIGTERM, then shut the workers down."""
    os.environ.update(QUIET_ENV)
    if not 1 <= settings.port <= 65535:
        raise OvssError(f"--port {settings.port}: expected 1 to 65535")
    demo = Demo(settings)
    try:
        page = build_page(demo)
        try:
            page.launch(
                server_name=HOST,
                server_port=settings.port,
                share=False,
                inbrowser=False,
                prevent_thread_lock=True,
                quiet=True,
                ssr_mode=False,
                mcp_server=False,
            )
        except OSError:
            raise OvssError(
                f"cannot serve on {HOST}:{settings.port} (is the port in use?); "
                "pick another with --port"
            ) from None
        untrained = " with untrained tiny weights" if settings.tiny else ""
        print(
            f"ovss: serving {', '.join(settings.methods)}{untrained} on "
            f"http://{HOST}:{settings.port}/ (Ctrl-C stops)",
            file=sys.stderr,
        )
        demo.warm_up()
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, _interrupt)
        page.block_thread()
    finally:
        demo.close()
