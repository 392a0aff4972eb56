"""CPU seconds of whole local pipeline runs, before and after a change, on one machine (issue 11).

    python benchmarks/run_cpu.py --run before=/path/to/old/checkout:tiny --run after=.:tiny \\
        [--measured before=demo:/tmp/before-demo.time:/tmp/before-demo] --out benchmarks/results/run_cpu.json

``--run LABEL=ROOT:PRESET`` runs ``ROOT/.venv/bin/fewframes run --preset PRESET`` (each checkout with its own
venv) in a fresh folder and measures the CPU seconds (user + system) of it and of every process it starts
(``resource.getrusage(RUSAGE_CHILDREN)``, what ``/usr/bin/time`` reports: load from other jobs on the
machine hardly moves it, unlike the wall time), wall time, peak RSS and the 1-minute load average before and
after. ``--measured LABEL=PRESET:TIME_FILE:RUN_DIR`` adds a run measured earlier with ``/usr/bin/time -v -o
TIME_FILE fewframes run --preset PRESET --out RUN_DIR``. Runs go one after another with ``OMP_NUM_THREADS=1``
(set it yourself for ``--measured`` runs). For each preset run under both ``before`` and ``after`` the JSON
has ``after / before`` CPU and whether every model's test-split GAP is the same in both runs.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"


def _children() -> tuple[float, int]:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime, usage.ru_maxrss


def test_gaps(run_dir: Path) -> dict[str, float]:
    """Each model's test-split GAP in a finished run (its evaluate steps' row.json)."""
    gaps = {}
    for row_file in sorted((run_dir / "kfp").glob("**/evaluation/row.json")):
        row = json.loads(row_file.read_text())
        gaps[row.get("model_key", str(row_file))] = round(float(row["gap"]), 6)
    return gaps


def run(root: Path, preset: str, out: Path) -> dict[str, Any]:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [str(root / ".venv" / "bin" / "fewframes"), "run", "--preset", preset, "--out", str(out)]
    load_before = os.getloadavg()[0]
    cpu0, _ = _children()
    wall0 = time.perf_counter()
    finished = subprocess.run(command, cwd=root, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    wall = time.perf_counter() - wall0
    cpu1, maxrss = _children()
    if finished.returncode != 0:
        raise SystemExit(f"run_cpu: {' '.join(command)} failed: {finished.stderr.strip().splitlines()[-1:]}")
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True).stdout.strip()
    return {"root": str(root), "commit": commit, "preset": preset, "cpu_s": round(cpu1 - cpu0, 2), "wall_s": round(wall, 1),
            "max_rss_mib_any_process": round(maxrss / 1024, 1), "load_1min_before": round(load_before, 2),
            "load_1min_after": round(os.getloadavg()[0], 2), "measured_by": "getrusage(RUSAGE_CHILDREN)",
            "test_gaps": test_gaps(out)}


def measured(preset: str, time_file: Path, run_dir: Path) -> dict[str, Any]:
    text = time_file.read_text()

    def field(name: str) -> str:
        found = re.search(rf"{re.escape(name)}: (.+)", text)
        if not found:
            raise SystemExit(f"run_cpu: {time_file}: no '{name}' (not /usr/bin/time -v output?)")
        return found.group(1).strip()

    clock = [float(x) for x in field("Elapsed (wall clock) time (h:mm:ss or m:ss)").split(":")]
    wall = sum(part * 60 ** i for i, part in enumerate(reversed(clock)))
    cpu = float(field("User time (seconds)")) + float(field("System time (seconds)"))
    return {"preset": preset, "cpu_s": round(cpu, 2), "wall_s": round(wall, 1),
            "max_rss_mib_any_process": round(int(field("Maximum resident set size (kbytes)")) / 1024, 1),
            "measured_by": f"/usr/bin/time -v ({time_file.name})", "exit_status": int(field("Exit status")),
            "test_gaps": test_gaps(run_dir)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", action="append", default=[], metavar="LABEL=ROOT:PRESET")
    parser.add_argument("--measured", action="append", default=[], metavar="LABEL=PRESET:TIME_FILE:RUN_DIR")
    parser.add_argument("--note", default="", help="what else ran on the machine meanwhile")
    parser.add_argument("--out", default=str(RESULTS / "run_cpu.json"))
    args = parser.parse_args(argv)
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from store_read import describe_machine

    runs: dict[str, dict[str, Any]] = {}
    for spec in args.measured:
        label, rest = spec.split("=", 1)
        preset, time_file, run_dir = rest.split(":", 2)
        runs[f"{label}-{preset}"] = {"label": label, **measured(preset, Path(time_file), Path(run_dir))}
    work = Path(tempfile.mkdtemp(prefix="fewframes-run-cpu-"))
    for spec in args.run:
        label, rest = spec.split("=", 1)
        root, preset = rest.rsplit(":", 1)
        result = run(Path(root).resolve(), preset, work / f"{label}-{preset}")
        runs[f"{label}-{preset}"] = {"label": label, **result}
        print(f"{label} {preset}: {result['cpu_s']} CPU-s, {result['wall_s']} s wall", flush=True)
    ratios = {}
    for key, after in runs.items():
        if after["label"] != "after" or f"before-{after['preset']}" not in runs:
            continue
        before = runs[f"before-{after['preset']}"]
        common = sorted(set(before["test_gaps"]) & set(after["test_gaps"]))
        ratios[after["preset"]] = {
            "after_over_before_cpu": round(after["cpu_s"] / before["cpu_s"], 3),
            "after_over_before_wall": round(after["wall_s"] / before["wall_s"], 3),
            "same_test_gaps": bool(common) and all(before["test_gaps"][m] == after["test_gaps"][m] for m in common),
            "models_compared": common,
            # Models that only the after run trained or evaluated (e.g. the grid's controls, added since):
            # their work is in the after run's CPU seconds, not in the before run's.
            "models_only_in_after": sorted(set(after["test_gaps"]) - set(before["test_gaps"])),
        }
    payload = {
        "command": "python " + " ".join(shlex.quote(a) for a in [sys.argv[0], *(argv if argv is not None else sys.argv[1:])]),
        "machine": describe_machine(),
        "note": args.note,
        "runs": runs,
        "ratios": ratios,
        "targets": {"tiny": "after/before CPU <= 0.5", "demo": "after/before CPU <= 0.6"},
    }
    from fewframes.cli.benchmark import write_json

    write_json(args.out, payload)
    print(json.dumps(ratios, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
