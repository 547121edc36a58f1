"""``ovss eval``: run a method over a dataset in one worker, resumably, and score it.

The run folder, its layout and the three steps (claim, predict, finish) are the engine's
(``ovss.engine``). Re-running the same command resumes: images with a confusion file are not
predicted again. A folder made by a run with another cache key is refused unless ``restart``
is set.
"""

from __future__ import annotations

import sys
import time
from typing import Any

from ovss.datasets import Sample
from ovss.engine import EvalSettings, Evaluation, Outcome


def run_evaluation(settings: EvalSettings) -> Outcome:
    """Run (or resume) an evaluation in one worker and finish its folder."""
    evaluation = Evaluation(settings)
    settings.out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    samples = evaluation.plan.samples
    position = {sample.stem: index for index, sample in enumerate(samples, start=1)}

    def done(sample: Sample) -> None:
        print(f"ovss: [{position[sample.stem]}/{len(samples)}] {sample.stem}", file=sys.stderr)

    def failed(sample: Sample, error: Exception) -> None:
        print(f"ovss: {sample.stem}: {error}", file=sys.stderr)

    with evaluation.worker(settings.out / "worker.log") as worker:
        record = evaluation.claim(worker.load_info)
        progress = evaluation.predict(worker, evaluation.pending(), record, done, failed)
    return evaluation.finish([progress], time.perf_counter() - started)


def run_eval(settings: EvalSettings) -> dict[str, Any]:
    """Run (or resume) an evaluation and write ``metrics.json``; returns the metrics."""
    return run_evaluation(settings).metrics
