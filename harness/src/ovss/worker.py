"""The harness side of the worker protocol: start, talk to, restart a method worker.

``WorkerProcess`` is one subprocess (``<venv python> -m <package>.worker``): requests go to
its stdin as JSON lines, replies come back on its stdout, its stderr is forwarded to ours
(and to a log file) with the last lines kept for error messages.

``Worker`` adds what an evaluation needs: it remembers the ``load`` request, restarts a
worker that died, replays ``load``, and retries the failed request once.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import os
import queue
import subprocess
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from ovss.environments import MethodPackage, ensure_environment
from ovss.errors import OvssError
from ovss.fixtures import tiny as tiny_fixture
from ovss_common import protocol
from ovss_common.protocol import LoadRequest, SegmentRequest
from ovss_common.quiet import QUIET_ENV

_EOF = object()


@dataclass
class ModelSettings:
    """Which method to run, the ``load`` request that builds its model, and a reply timeout.

    ``untrained`` marks runs on a golden tiny checkpoint (``--tiny``): recorded everywhere.
    """

    method: str
    load: LoadRequest = field(default_factory=LoadRequest)
    timeout: float | None = None
    untrained: bool = False

    def load_request(self) -> dict[str, Any]:
        return dataclasses.asdict(self.load)


def model_settings(
    method: str,
    *,
    tiny: bool = False,
    config: str | None = None,
    weights: str | None = None,
    timeout: float | None = None,
    **load: Any,
) -> ModelSettings:
    """The model of ``method``: ``config``/``weights`` (None: the method's official defaults),
    or with ``tiny`` its golden tiny fixture for ``load["pipeline"]``; ``load`` holds the
    other ``LoadRequest`` fields (device, dtype, threads, pipeline, options)."""
    if tiny:
        if config or weights:
            raise OvssError("--tiny picks the config and weights: drop --config/--weights")
        fixture = tiny_fixture(method, load.get("pipeline", "eval"))
        config, weights = str(fixture.config), str(fixture.weights)
    return ModelSettings(
        method=method,
        load=LoadRequest(config=config, weights=weights, **load),
        timeout=timeout,
        untrained=tiny,
    )


class WorkerFailure(OvssError):
    """A request answered with a structured error reply (the worker is still alive)."""

    def __init__(self, request_type: str, error: dict[str, Any]) -> None:
        self.request_type = request_type
        self.type = error.get("type", "internal")
        self.input = error.get("input")
        super().__init__(f"{request_type} failed ({self.type}): {error.get('message')}")


class WorkerDied(OvssError):
    """The worker process exited (or broke the protocol) before replying."""


class WorkerTimeout(WorkerDied):
    """The worker did not reply within its deadline and was stopped (not retried: the same
    request would take as long again)."""


def worker_environment() -> dict[str, str]:
    """Environment of a worker: no telemetry, unbuffered stderr."""
    env = dict(os.environ)
    env.pop("VIRTUAL_ENV", None)
    env.update({"PYTHONUNBUFFERED": "1", **QUIET_ENV})
    return env


class WorkerProcess:
    """One running worker subprocess speaking JSON lines."""

    def __init__(self, command: list[str], name: str, log_path: Path | None = None) -> None:
        self.name = name
        self._next_id = 0
        self._replies: queue.Queue[object] = queue.Queue()
        self._stderr_tail: collections.deque[str] = collections.deque(maxlen=20)
        self._log: IO[str] | None = None
        if log_path is not None:
            log_path.parent.mkdir(parents=True, exist_ok=True)
            self._log = log_path.open("a", encoding="utf-8")
        try:
            self._process = subprocess.Popen(
                command,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                encoding="utf-8",
                env=worker_environment(),
            )
        except OSError as exc:
            raise OvssError(f"cannot start the {name} worker ({command[0]}): {exc}") from None
        self._threads = [
            threading.Thread(target=self._read_replies, daemon=True),
            threading.Thread(target=self._forward_stderr, daemon=True),
        ]
        for thread in self._threads:
            thread.start()

    @property
    def pid(self) -> int:
        return self._process.pid

    def alive(self) -> bool:
        return self._process.poll() is None

    def _read_replies(self) -> None:
        assert self._process.stdout is not None
        for line in self._process.stdout:
            self._replies.put(line)
        self._replies.put(_EOF)

    def _forward_stderr(self) -> None:
        assert self._process.stderr is not None
        for line in self._process.stderr:
            self._stderr_tail.append(line.rstrip())
            if self._log is not None:
                self._log.write(line)
                self._log.flush()
            else:
                sys.stderr.write(f"[{self.name}] {line}")

    def _died(self, doing: str) -> WorkerDied:
        try:
            code = self._process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.kill()
            code = self._process.wait()
        self._threads[1].join(timeout=2)
        last = next((line for line in reversed(self._stderr_tail) if line.strip()), "")
        detail = f"; last log line: {last}" if last else ""
        return WorkerDied(f"the {self.name} worker died during {doing} (exit code {code}){detail}")

    def request(
        self, request_type: str, timeout: float | None = None, **fields: Any
    ) -> dict[str, Any]:
        """Send one request and wait for its reply; returns the reply's ``result``.

        Raises:
            WorkerFailure: the worker answered with a structured error.
            WorkerDied: the worker exited, timed out or wrote something that is not a reply.
        """
        self._next_id += 1
        request_id = self._next_id
        message = protocol.request(request_type, request_id, **fields)
        try:
            assert self._process.stdin is not None
            self._process.stdin.write(protocol.encode(message))
            self._process.stdin.flush()
        except (BrokenPipeError, OSError):
            raise self._died(request_type) from None
        try:
            line = self._replies.get(timeout=timeout)
        except queue.Empty:
            self.kill()
            raise WorkerTimeout(
                f"the {self.name} worker did not finish {request_type} within {timeout:g} s "
                "and was stopped (--timeout sets the deadline)"
            ) from None
        if line is _EOF:
            raise self._died(request_type)
        try:
            reply = protocol.decode(str(line))
        except protocol.WorkerError:
            self.kill()
            raise WorkerDied(
                f"the {self.name} worker wrote a non-protocol line: {line!r:.120}"
            ) from None
        if reply.get("id") != request_id:
            self.kill()
            raise WorkerDied(
                f"the {self.name} worker answered request {reply.get('id')}, not {request_id}"
            )
        if not reply.get("ok"):
            raise WorkerFailure(request_type, reply.get("error") or {})
        return reply.get("result") or {}

    def kill(self) -> None:
        if self.alive():
            self._process.kill()

    def close(self, timeout: float = 10.0) -> None:
        """Ask the worker to stop; kill it if it does not within ``timeout`` seconds."""
        if self.alive():
            with contextlib.suppress(OvssError):
                self.request("shutdown", timeout=timeout)
        try:
            self._process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            self._process.wait()
        for stream in (self._process.stdin, self._process.stdout, self._process.stderr):
            if stream is not None:
                stream.close()
        for thread in self._threads:
            thread.join(timeout=2)
        if self._log is not None:
            self._log.close()


class Worker:
    """A method worker that survives crashes: restart, replay ``load``, retry once.

    Every request has a deadline: ``timeout`` when given, else the method's
    (``[tool.ovss.method.deadlines]``): ``load`` for loading, and for an image a base plus a
    share per megapixel. A worker past its deadline is stopped; the request fails with
    ``WorkerTimeout`` and the next one starts a fresh worker.

    Use as a context manager; the process is shut down on exit.
    """

    def __init__(
        self,
        package: MethodPackage,
        load: dict[str, Any],
        log_path: Path | None = None,
        timeout: float | None = None,
    ) -> None:
        self.package = package
        self.load_fields = load
        self.log_path = log_path
        self.timeout = timeout
        self.load_info: dict[str, Any] = {}
        self.restarts = 0
        self._process: WorkerProcess | None = None

    def __enter__(self) -> Worker:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process else None

    def start(self) -> dict[str, Any]:
        """Start the process and load the model; returns the load reply."""
        python = ensure_environment(self.package)
        command = [str(python), "-m", self.package.worker_module]
        self._process = WorkerProcess(command, self.package.name, self.log_path)
        deadline = self.timeout or self.package.deadlines.load
        try:
            self.load_info = self._process.request("load", timeout=deadline, **self.load_fields)
        except OvssError:
            self._process.close()
            self._process = None
            raise
        return self.load_info

    def request(self, request_type: str, **fields: Any) -> dict[str, Any]:
        """Send a request; if the worker dies, restart it and retry once.

        Raises:
            WorkerFailure: a structured error (not retried: the same input fails again).
            WorkerDied: the worker died on the request and again on the retry.
        """
        for attempt in (1, 2):
            if self._process is None or not self._process.alive():
                if self._process is not None:
                    self._process.close(timeout=1)
                    self.restarts += 1
                self.start()
            assert self._process is not None
            try:
                return self._process.request(
                    request_type, timeout=self.deadline(request_type, fields), **fields
                )
            except WorkerTimeout:
                raise
            except WorkerDied as died:
                if attempt == 2:
                    raise
                print(f"ovss: {died}; restarting it and retrying once", file=sys.stderr)
        raise AssertionError("unreachable")

    def deadline(self, request_type: str, fields: dict[str, Any]) -> float:
        """Seconds the worker has for one request: ``timeout``, else the method's deadline
        for the request's image, else its load deadline."""
        if self.timeout:
            return self.timeout
        if fields.get("image"):
            return self.package.deadlines.for_image(fields["image"])
        return self.package.deadlines.load

    def segment(self, request: SegmentRequest) -> dict[str, Any]:
        """Segment one image (see ``request``); returns the reply's result (output paths,
        effective vocabulary, timing, memory)."""
        return self.request("segment", **request.fields())

    def close(self) -> None:
        if self._process is not None:
            self._process.close()
            self._process = None
