"""Where the CPU seconds of one ``fewframes run`` go: the run's own process, the warm step server's start,
the KFP executor processes (one per task), and each step's fork (issue 11).

    CPU_LOG=/tmp/cpu.jsonl FEWFRAMES_STEP_TIMES=/tmp/steps.jsonl PYTHONPATH=benchmarks/cpu_log \\
        OMP_NUM_THREADS=1 /usr/bin/time -v -o /tmp/run.time fewframes run --preset tiny --out /tmp/run
    python benchmarks/run_breakdown.py --cpu-log /tmp/cpu.jsonl --step-times /tmp/steps.jsonl \\
        --time-file /tmp/run.time --out benchmarks/results/run_breakdown_tiny.json

``--cpu-log``: one line per Python process (``benchmarks/cpu_log/sitecustomize.py``); ``--step-times``: one
line per step fork (the warm server's ``FEWFRAMES_STEP_TIMES``); ``--time-file``: ``/usr/bin/time -v`` of
the whole run (the total, including what is not Python: ``sh`` wrappers, ``mktemp``).
"""

from __future__ import annotations

import argparse
import collections
import json
import re
import shlex
import sys
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"


def kind(entry: dict[str, Any]) -> str:
    argv = entry["argv"]
    if "executor_main" in argv:
        return "kfp_executors"
    if entry["forked"] and "warm" in argv:
        return "step_forks"
    if "steps/warm.py" in argv or "steps.warm" in argv:
        return "warm_server_own"
    if "fewframes run" in argv or argv.endswith("fewframes") or " run " in argv:
        return "fewframes_run_own"
    return "other_python"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cpu-log", required=True)
    parser.add_argument("--step-times", help="the warm server's per-step log (absent: no step breakdown)")
    parser.add_argument("--time-file", required=True)
    parser.add_argument("--note", default="")
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)

    parts: dict[str, list[float]] = collections.defaultdict(list)
    for line in Path(args.cpu_log).read_text().splitlines():
        entry = json.loads(line)
        parts[kind(entry)].append(float(entry["self"]))
    steps: dict[str, list[float]] = collections.defaultdict(list)
    for line in (Path(args.step_times).read_text().splitlines() if args.step_times else []):
        entry = json.loads(line)
        steps[entry["step"]].append(float(entry["cpu_s"]))
    text = Path(args.time_file).read_text()
    total = sum(float(re.search(rf"{name} time \(seconds\): (\S+)", text).group(1)) for name in ("User", "System"))
    accounted = sum(sum(v) for v in parts.values())
    payload = {
        "command": "python " + " ".join(shlex.quote(a) for a in [sys.argv[0], *(argv if argv is not None else sys.argv[1:])]),
        "note": args.note,
        "total_cpu_s": round(total, 2),
        "parts_cpu_s": {name: {"processes": len(v), "cpu_s": round(sum(v), 2)} for name, v in sorted(parts.items())},
        "not_python_or_unlogged_cpu_s": round(total - accounted, 2),
        "steps_cpu_s": {name: {"runs": len(v), "cpu_s_total": round(sum(v), 3), "cpu_s_each": [round(x, 3) for x in v]}
                        for name, v in sorted(steps.items(), key=lambda item: -sum(item[1]))},
    }
    Path(args.out).write_text(json.dumps(payload, indent=2) + "\n")
    print(json.dumps({k: payload[k] for k in ("total_cpu_s", "parts_cpu_s", "not_python_or_unlogged_cpu_s")}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
