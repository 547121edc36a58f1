"""The harness drives a real worker subprocess (the toy method in its own environment)."""

import numpy as np
import pytest
from PIL import Image

from ovss.worker import Worker, WorkerDied, WorkerFailure, WorkerProcess


@pytest.fixture
def image(tmp_path):
    path = tmp_path / "grad.png"
    Image.fromarray(np.tile(np.arange(0, 256, 32, dtype=np.uint8), (4, 1))).save(path)
    return path


def _segment(worker, image, out, **extra):
    return worker.request(
        "segment", image=str(image), vocabulary=["dark", "light"], output_prefix=str(out), **extra
    )


def test_worker_runs_in_its_own_environment(toy_package, image, tmp_path):
    process = WorkerProcess(
        [str(toy_package.python), "-c", "import sys; print(sys.prefix)"], "probe"
    )
    process.close()
    with Worker(toy_package, {"device": "cpu"}) as worker:
        assert worker.load_info["method"] == "toy"
        reply = _segment(worker, image, tmp_path / "out" / "grad")
        assert reply["label_map"].endswith("grad.png") and reply["height"] == 4
        assert worker.request("ping")["method"] == "toy"


def test_structured_error_keeps_the_worker_serving(toy_package, image, tmp_path):
    with Worker(toy_package, {}) as worker:
        pid = worker.pid
        with pytest.raises(WorkerFailure, match="bad_image") as info:
            _segment(worker, tmp_path / "missing.jpg", tmp_path / "x")
        assert info.value.input == str(tmp_path / "missing.jpg")
        _segment(worker, image, tmp_path / "ok")
        assert worker.pid == pid and worker.restarts == 0


def test_bad_checkpoint_on_load(toy_package, tmp_path):
    broken = tmp_path / "w.json"
    broken.write_text("{ not json")
    with pytest.raises(WorkerFailure, match="bad_checkpoint"):
        Worker(toy_package, {"weights": str(broken)}).start()


def test_killed_worker_is_restarted_and_the_request_retried(toy_package, image, tmp_path):
    options = {"crash_once_on": ["grad"], "state_dir": str(tmp_path / "state")}
    with Worker(toy_package, {"options": options}) as worker:
        first_pid = worker.pid
        reply = _segment(worker, image, tmp_path / "grad")
        assert worker.restarts == 1 and worker.pid != first_pid
        assert reply["label_map"].endswith("grad.png")


def test_worker_that_dies_twice_is_reported(toy_package, image, tmp_path):
    with Worker(toy_package, {"options": {"crash_on": ["grad"]}}) as worker:
        with pytest.raises(
            WorkerDied, match=r"died during segment \(exit code 3\).*crashing on grad"
        ):
            _segment(worker, image, tmp_path / "grad")
        other = tmp_path / "other.png"
        Image.open(image).save(other)
        assert _segment(worker, other, tmp_path / "other")["label_map"].endswith("other.png")


def test_external_kill_mid_request(toy_package, image, tmp_path):
    with Worker(toy_package, {}) as worker:
        worker._process.kill()  # the process dies before the request arrives
        reply = _segment(worker, image, tmp_path / "grad")
        assert reply["label_map"].endswith("grad.png") and worker.restarts == 1
