"""A minimal protocol client for the method packages' worker tests (the harness has the real
one, with restarts and timeouts, in its own environment)."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

from ovss_common.protocol import request


class WorkerClient:
    """Starts ``python -m <module>`` in this environment and exchanges one line per request."""

    def __init__(self, module: str) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", module],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        self.next_id = 0

    def ask(self, type: str, **fields: Any) -> dict[str, Any]:
        """Send one request and return its reply (which must carry the request's id)."""
        self.next_id += 1
        self.process.stdin.write(json.dumps(request(type, self.next_id, **fields)) + "\n")
        self.process.stdin.flush()
        reply = json.loads(self.process.stdout.readline())
        if reply.get("id") != self.next_id:
            raise AssertionError(f"reply {reply!r} does not answer request {self.next_id}")
        return reply

    def close(self) -> None:
        self.ask("shutdown")
        self.process.wait(timeout=60)


def error_of(reply: dict[str, Any]) -> dict[str, Any]:
    """The structured error of a failed reply; asserts it failed and its message is one line."""
    if reply.get("ok"):
        raise AssertionError(f"expected an error reply, got {reply!r}")
    error = reply["error"]
    if "\n" in error["message"]:
        raise AssertionError(f"error message spans lines: {error['message']!r}")
    return error
