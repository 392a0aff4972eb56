"""The KFP v2 pipelines of fewframes (importable as ``fewframes.pipelines``).

- ``distill`` (the default): ingest/split -> train-teacher -> students (k x loss x mode) and Uniform-k
  baselines in parallel -> evaluate each -> benchmark -> report.
- ``paper``: the paper's whole grid with the same components, more fan-out.

Both are built by ``fewframes.pipelines.dag.make_pipeline(name, preset, gpu)``; see that module.
"""

from __future__ import annotations

PIPELINE_NAMES: tuple[str, ...] = ("distill", "paper")
