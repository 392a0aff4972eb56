"""The committed results on three world seeds (issue 10, point 6; plan: ``docs/results/world_seeds/PLAN.md``).

For each world seed's run folder (``fewframes run --pipeline paper --preset plateau`` on that world's data), the
report's own code (``fewframes.report.report_of_run``, the path of ``fewframes report --run``) builds the report
of the plan's reduced grid into ``OUT/worldS/``: the teacher (all data), Uniform-k and Random-k, Serial (c) with
final matching, and the warm-start and teacher-on-k controls. World seed 0 is the committed run
(``docs/results/``, a larger grid): its rows are filtered to the same grid, so every world's claims compare the
same models by the same rule (the same parts, so the same Bonferroni level). Then each claim's verdicts are
combined across worlds by the plan's rule, fixed before the runs: it holds *on the bundled benchmark* if it holds
on every world seed, does not hold if it does not hold on every world seed, and is *world-dependent* otherwise.

    python benchmarks/world_seeds.py --world 0=runs/paper-plateau2 --world 1=runs/world1 --world 2=runs/world2 \\
        --out docs/results/world_seeds

Writes ``OUT/worldS/`` (report.md, report.html, summary.json, figures) for each world and ``OUT/combined.json``
with ``OUT/README.md`` (the claims by world). About a minute of CPU a world (the paired bootstrap).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

# The plan's reduced grid, as the pipeline parameters that make it (worlds 1 and 2 ran with exactly these).
REDUCED_GRID = {
    "baselines": ["uniform", "random"],
    "losses": ["rep_pred_ce"],
    "modes": ["serial"],
    "intermediate_k": 0,
    "fraction_k": 0,
    "train_fractions": [],
}
COMBINED_VERDICTS = {"holds": "holds", "does not hold": "does not hold"}


def in_reduced_grid(row: dict[str, Any]) -> bool:
    """Whether an evaluated model (a report row) belongs to the plan's reduced grid."""
    if float(row.get("train_fraction") or 1.0) != 1.0:
        return False
    role = row.get("role")
    if role == "teacher":
        return True
    if role == "baseline":
        return row.get("frame_selection") in REDUCED_GRID["baselines"]
    if role == "control":
        return True  # warm start and teacher on k frames, at every k
    if role == "student":
        return (row.get("mode") in REDUCED_GRID["modes"] and row.get("loss") in REDUCED_GRID["losses"]
                and row.get("matching", "final") == "final")
    return False


def world_report(run_dir: Path, out: Path, world_seed: int) -> dict[str, Any]:
    from fewframes.cli.report import read_run_folder
    from fewframes.components.steps import ROW_FILE
    from fewframes.report import report_of_run, run_description

    run = read_run_folder(str(run_dir))  # the inputs `fewframes report --run` reads, then the plan's grid of them
    evaluation_dirs = [d for d in run.evaluation_dirs if in_reduced_grid(json.loads((Path(d) / ROW_FILE).read_text()))]
    arguments = {**run.summary.get("arguments", {}), **REDUCED_GRID}
    run_info = run_description(run.summary.get("pipeline", ""), run.summary.get("preset", ""),
                               run.summary.get("run_id", ""), arguments)
    notes = [f"World seed {world_seed}: the plan's reduced grid (docs/results/world_seeds/PLAN.md) from the run "
             f"folder {run_dir.name} ({len(evaluation_dirs)} evaluated models); built by "
             f"benchmarks/world_seeds.py with the report's own code."]
    report = report_of_run(evaluation_dirs, run.benchmark_dir, out / f"world{world_seed}", tracking_uri=run.tracking_uri,
                           run_info=run_info, tolerance=float(arguments.get("tolerance", 0.01)), notes=notes,
                           bounds=run.bounds)
    return report.summary


def combine(verdicts: list[str]) -> str:
    if all(v == verdicts[0] for v in verdicts) and verdicts[0] in COMBINED_VERDICTS:
        return COMBINED_VERDICTS[verdicts[0]]
    if all(v == verdicts[0] for v in verdicts) and verdicts[0] in ("inconclusive", "not measured"):
        return verdicts[0]  # the same everywhere: "world-dependent" is for verdicts that differ
    return "world-dependent"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--world", action="append", required=True, metavar="SEED=RUN_DIR")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    worlds: dict[int, Path] = {}
    for item in args.world:
        seed, _, path = item.partition("=")
        if not seed.isdigit() or not (Path(path) / "run.json").is_file():
            print(f"world_seeds: --world {item}: expected SEED=RUN_DIR of a finished run (with run.json)",
                  file=sys.stderr)
            return 2
        worlds[int(seed)] = Path(path)
    summaries = {seed: world_report(run_dir, args.out, seed) for seed, run_dir in sorted(worlds.items())}
    keys = [c["key"] for c in next(iter(summaries.values()))["claims"]]
    claims = []
    for key in keys:
        per_world = {}
        for seed, summary in summaries.items():
            claim = next(c for c in summary["claims"] if c["key"] == key)
            interval = claim.get("interval") or {}
            per_world[seed] = {"verdict": claim["verdict"], "estimate": claim.get("estimate"),
                               "low": interval.get("low"), "high": interval.get("high"), "part": interval.get("part"),
                               "evidence": claim.get("evidence")}
        claims.append({"key": key, "claim": next(iter(summaries.values()))["claims"][keys.index(key)]["claim"],
                       "combined": combine([w["verdict"] for w in per_world.values()]), "worlds": per_world})
    teacher = {seed: next((c for c in s["configurations"] if c["role"] == "teacher"), {}).get("gap") for seed, s in summaries.items()}
    combined = {"what": __doc__.split("\n\n")[0], "rule": "holds on the bundled benchmark if it holds on every world "
                "seed; does not hold if it does not hold on every world seed; world-dependent otherwise",
                "worlds": {str(s): str(p) for s, p in worlds.items()}, "teacher_gap": teacher, "claims": claims}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "combined.json").write_text(json.dumps(combined, indent=1, default=str) + "\n")
    lines = ["# The committed grid on three world seeds", "",
             "Plan and rule (written before the runs): `PLAN.md`. Each world's report: `worldS/report.md`. "
             "Made by `python benchmarks/world_seeds.py " + " ".join(f"--world {s}={p}" for s, p in worlds.items())
             + f" --out {args.out}`.", "",
             "| claim | " + " | ".join(f"world {s}" for s in summaries) + " | on the benchmark |",
             "|---|" + "---|" * len(summaries) + "---|"]
    for claim in claims:
        cells = []
        for world in claim["worlds"].values():
            if world["low"] is None:
                cells.append(world["verdict"])
            else:
                cells.append(f"{world['verdict']}: {world['estimate']:+.3f} [{world['low']:+.3f}, {world['high']:+.3f}] "
                             f"({world['part']})")
        lines.append(f"| `{claim['key']}` | " + " | ".join(cells) + f" | **{claim['combined']}** |")
    lines += ["", "Teacher test GAP by world (per teacher seed): "
              + "; ".join(f"world {s}: {', '.join(f'{g:.3f}' for g in (gaps or []))}" for s, gaps in teacher.items()), ""]
    (args.out / "README.md").write_text("\n".join(lines))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
