"""Gather the scratch runs' logs (experiments/proto.py JSON lines, experiments/pooled.py table lines) into
benchmarks/results/skyline_prototypes.json. Usage: python experiments/collect_prototypes.py LOGDIR"""
import json, os, platform, re, sys
from pathlib import Path

logdir = Path(sys.argv[1])
commands = {
    "mean2": "proto.py STORE --family mean --lr 0.03 --epochs 80 --patience 8",
    "mean3": "proto.py STORE --family mean --lr 0.003 --kw '{\"bn\": true}' --epochs 80 --patience 8",
    "mean_s1": "proto.py STORE --family mean --lr 0.003 --epochs 60 --patience 8 --kw '{\"bn\": true}' --seed 1",
    "hrnn_a": "proto.py STORE --family hrnn --lr 0.006 --epochs 25 --patience 4 --kw '{\"hidden\": 32}'",
    "nv_k1": "proto.py STORE --family lib --lr 0.01 --epochs 30 --patience 4 --kw '{\"fam\": \"netvlad\", \"clusters\": 1, \"hidden_size\": 64}'",
    "nv_k2": "proto.py STORE --family lib --lr 0.01 --epochs 30 --patience 4 --kw '{\"fam\": \"netvlad\", \"clusters\": 2, \"hidden_size\": 128}'",
    "nvlong_k8": "proto.py STORE --family lib --lr 0.01 --epochs 80 --patience 12 --kw '{\"fam\": \"netvlad\", \"clusters\": 8, \"hidden_size\": 64}'",
    "willow_a": "proto.py STORE --family willow --lr 0.003 --epochs 40 --patience 5 --kw '{\"K\": 8, \"hidden\": 64}' (stopped early by hand)",
    "pooled1": "pooled.py STORE CACHE bn,l2,l2s,vlad1,vlad1_din,bn_hidden,bn_vlad 0.003,0.01",
    "pooled2": "pooled.py STORE2000c50 CACHE bn,vlad1 0.003,0.01 (2,000 videos, 50 classes)",
    "pooled3": "pooled.py STORE CACHE vlad1w,vlad1 0.01,0.03 all,uniform30",
    "pooled4": "pooled.py STORE CACHE vlad1w_hbn,vlad1_hbn 0.003,0.01",
    "pooled5": "BS=8 pooled.py STORE CACHE vlad1,vlad1w 0.003,0.01 all,uniform30,uniform6",
}
out = {"what": "scratch prototypes of the skyline study (docs/method.md 'When the teacher is a skyline'); STORE = the "
               "report preset's data built by experiments/make_store.py STORE 1200 25 0 (validation 0.1, test 0.3)",
       "machine": {"platform": platform.platform(), "cpu_cores": os.cpu_count(),
                   "note": "2 cores shared with ~7 other jobs: seconds are wall time under load"},
       "runs": {}}
for name, command in commands.items():
    path = logdir / f"{name}.log"
    if not path.exists():
        continue
    runs, pairs, table = [], [], []
    for line in path.read_text().splitlines():
        if line.startswith("{"):
            runs.append(json.loads(line))
        elif re.match(r"^\s+\S+ - \S+: ", line):
            pairs.append(line.strip())
        elif not line.startswith("   ep") and line.strip() and not line.startswith("Traceback"):
            table.append(line.strip())
    out["runs"][name] = {"command": command, "runs": runs, "teacher_minus": pairs, "table": table}
target = Path("benchmarks/results/skyline_prototypes.json")
target.write_text(json.dumps(out, indent=1) + "\n")
print(target, {k: len(v["runs"]) + len(v["table"]) for k, v in out["runs"].items()})
