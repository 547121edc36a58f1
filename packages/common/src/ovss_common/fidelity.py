"""How far each golden case is from the original: recorded by the fidelity tests.

The fidelity tests compare our outputs with the golden fixtures. Each also calls
:func:`record` with the quantity it compares; when ``$OVSS_FIDELITY_REPORT`` names a file,
the largest absolute difference is appended to it as one JSON line
(``{"case", "quantity", "max_abs_diff"}``). ``ovss upgrade`` reads that file before and after
an upgrade to show how far every golden case moved. Without the variable nothing is written.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

ENV_VAR = "OVSS_FIDELITY_REPORT"


def record(case: str, quantity: str, ours: Any, golden: Any) -> float:
    """The largest ``|ours - golden|`` (float64), appended to ``$OVSS_FIDELITY_REPORT`` if set.

    ``ours`` may be a numpy array, a CPU torch tensor or anything ``np.asarray`` accepts.
    Arrays of different shapes record ``inf`` (the test itself reports the shape mismatch).
    """
    if hasattr(ours, "detach"):
        ours = ours.detach().cpu()
    ours = np.asarray(ours, dtype=np.float64)
    golden = np.asarray(golden, dtype=np.float64)
    if ours.shape != golden.shape:
        diff = float("inf")
    else:
        diff = float(np.abs(ours - golden).max()) if ours.size else 0.0
    target = os.environ.get(ENV_VAR)
    if target:
        line = {"case": case, "quantity": quantity, "max_abs_diff": diff}
        with Path(target).open("a", encoding="utf-8") as file:
            file.write(json.dumps(line) + "\n")
    return diff
