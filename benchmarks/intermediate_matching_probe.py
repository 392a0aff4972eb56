"""How much L_rep^I (intermediate matching) does in each model family: its value and the gradient it sends into
the student, at the student's initialisation and after a few distillation steps, beside L_rep's.

A trained teacher (``train_teacher``, a few epochs on a tiny synthetic store) and a serial student initialised
by ``train_student`` itself (one epoch at learning rate 0: its fresh encoder and a copy of the teacher's
classifier); batches of training videos, the teacher on every frame, the student on k uniformly spaced
frames; the losses are the product's own (``fewframes.losses``). Reported per family, size, seed and step:

- ``rep`` / ``rep_intermediate``: L_rep (on E) and L_rep^I (sum over the k frames and the per-frame vector);
- ``rep_intermediate_rel``: L_rep^I divided by the teacher's own sum of squares at those frames (1 = as far
  from the teacher as a zero vector);
- ``rep_intermediate_vs_constant``: L_rep^I over that of a constant student outputting the teacher's mean
  per-frame vector (1: the student matches no better than a constant; near-uniform soft assignments make the
  first ratio small even for a student that has learned nothing);
- ``grad_rep`` / ``grad_rep_intermediate``: the norm of each loss's gradient over the student's parameters;
- ``grad_rep_intermediate_share``: that of L_rep^I over the norm of the whole loss's gradient (rep_pred_ce,
  intermediate matching): how much of the update L_rep^I decides;
- ``assignment_max``: the mean over frames and groups of the largest soft-assignment probability (1: one-hot,
  saturated softmax; 1/K: uniform); NaN for ``hrnn`` (LSTM outputs, not assignments);
- ``student_intermediate_sq``: the student's own sum of squares per frame.

Steps: Adam at the training config's learning rate on rep_pred_ce with intermediate matching (what the
pipeline's intermediate students train on), and, as a control, with final matching only (does L_rep^I fall
without being optimised?).

    OMP_NUM_THREADS=1 python benchmarks/intermediate_matching_probe.py --out benchmarks/results/intermediate_matching_probe.json

Sizes: the ``tiny`` preset's (hidden 16, K 64, G 8, lambda 2; what the pipeline's tiny runs use) and the
``plateau`` preset's cluster count (K 8, hidden 64), 8 classes, 160 videos of 100-140 frames.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from fewframes.benchmark import describe_machine  # noqa: E402
from fewframes.config import ModelConfig, StudentConfig, TrainConfig  # noqa: E402
from fewframes.data.selection import uniform_positions  # noqa: E402
from fewframes.data.split import load_split  # noqa: E402
from fewframes.data.store import FrameStore  # noqa: E402
from fewframes.losses import distillation_loss, intermediate_rep_loss, rep_loss  # noqa: E402
from fewframes.models import build_model, student_model_config  # noqa: E402
from fewframes.training import load_model, train_student, train_teacher  # noqa: E402
from training_helpers import TINY_CLASSES, build_tiny_store  # noqa: E402

K_FRAMES = 6
BATCH = 32
STEPS = (0, 5, 20, 50)
SIZES = {"tiny": dict(hidden_size=16, clusters=64), "plateau": dict(hidden_size=64, clusters=8)}


def batch_tensors(store: FrameStore, indices: np.ndarray) -> tuple[torch.Tensor, ...]:
    """Teacher frames [B, T, D] (right padded) + mask, student frames [B, k, D] + mask + positions, labels."""
    videos = [store.read_video(int(i)) for i in indices]
    lengths = np.array([len(v) for v in videos])
    slots = int(lengths.max())
    teacher = np.zeros((len(videos), slots, videos[0].shape[1]), dtype=np.uint8)
    for row, video in enumerate(videos):
        teacher[row, : len(video)] = video
    teacher_mask = np.arange(slots)[None, :] < lengths[:, None]
    positions, student_mask = uniform_positions(lengths, K_FRAMES)
    student = np.stack([teacher[row, np.clip(positions[row], 0, None)] for row in range(len(videos))])
    labels = store.labels_multi_hot(indices)
    return (torch.from_numpy(teacher), torch.from_numpy(teacher_mask), torch.from_numpy(student),
            torch.from_numpy(student_mask), torch.from_numpy(positions), torch.from_numpy(labels).float())


def measure(student, teacher, batch, config: StudentConfig) -> dict[str, float]:
    t_frames, t_mask, s_frames, s_mask, positions, labels = batch
    with torch.no_grad():
        t_out = teacher(t_frames, t_mask, return_intermediate=True)
    s_out = student(s_frames, s_mask, return_intermediate=True)
    params = [p for p in student.parameters() if p.requires_grad]

    def grad_norm(loss: torch.Tensor) -> float:
        grads = torch.autograd.grad(loss, params, retain_graph=True, allow_unused=True)
        return float(torch.sqrt(sum((g.float() ** 2).sum() for g in grads if g is not None)))

    rep = rep_loss(s_out.encoding, t_out.encoding)
    rep_i = intermediate_rep_loss(s_out.intermediate, t_out.intermediate, positions, None, s_mask)
    zero = torch.zeros_like(s_out.intermediate)
    teacher_sq = intermediate_rep_loss(zero, t_out.intermediate, positions, None, s_mask)
    # A constant student that outputs the teacher's mean per-frame vector (over the batch's real frames).
    teacher_mean = t_out.intermediate[t_mask].float().mean(0)
    constant = intermediate_rep_loss(zero + teacher_mean, t_out.intermediate, positions, None, s_mask)
    total, _ = distillation_loss("rep_pred_ce", s_out, t_out, labels, config, student_positions=positions,
                                 student_mask=s_mask)
    grad_total = grad_norm(total)
    grad_rep_i = grad_norm(rep_i)
    return {
        "rep": float(rep.detach()), "rep_intermediate": float(rep_i.detach()),
        "rep_intermediate_rel": float(rep_i.detach() / teacher_sq),
        "rep_intermediate_vs_constant": float(rep_i.detach() / constant),
        "grad_rep": grad_norm(rep), "grad_rep_intermediate": grad_rep_i, "grad_total": grad_total,
        "grad_rep_intermediate_share": grad_rep_i / grad_total,
        "student_intermediate_sq": float((s_out.intermediate.detach().float() ** 2).sum(-1)[s_mask].mean()),
        "teacher_intermediate_sq": float(teacher_sq / (s_mask.sum() / s_mask.shape[0])),
    }


def assignment_max(model, batch, family: str) -> float:
    """Mean largest cluster probability per frame and group (the assignment before any attention weight)."""
    if family == "hrnn":
        return float("nan")  # LSTM outputs, not assignments
    t_frames, t_mask, s_frames, s_mask, *_ = batch
    with torch.no_grad():
        inter = model(s_frames, s_mask, return_intermediate=True).intermediate[s_mask]  # [N, width]
    if family == "netvlad":
        k_rgb = model.config.clusters
        groups = [inter[:, :k_rgb], inter[:, k_rgb:]]
    else:
        groups = []
        start = 0
        for _, clusters, g in model.encoder.parts:
            block = inter[:, start : start + g * clusters].reshape(-1, g, clusters)
            start += g * clusters
            # undo the attention weight: each group's assignments sum to its attention
            groups.append((block / block.sum(-1, keepdim=True).clamp_min(1e-12)).reshape(-1, clusters))
    return float(torch.cat([g.max(-1).values for g in groups]).mean())


def probe(store_path: Path, family: str, size: str, seed: int, epochs: int, steps: list[int]) -> dict:
    store = FrameStore.open(store_path)
    train_config = TrainConfig(epochs=epochs, batch_size=BATCH, seed=seed, learning_rate=5e-3)
    model_config = ModelConfig(num_classes=TINY_CLASSES, family=family, **SIZES[size])
    result = train_teacher(store_path, model_config, train_config, out_dir=store_path.parent / f"teacher-{family}-{size}-{seed}",
                           progress=False)
    teacher = result.model.eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    train = np.asarray(load_split(store, "train", seed=seed))
    rng = np.random.default_rng(seed)
    out: dict = {"family": family, "size": size, "seed": seed, "teacher_epochs": epochs,
                 "teacher_best_val_gap": result.best_val_gap}
    # The student exactly as train_student initialises it: one epoch at learning rate 0 leaves its initial
    # weights (a fresh encoder, the teacher's classifier copied in) in student.pt.
    frozen = TrainConfig(epochs=1, batch_size=BATCH, seed=seed, learning_rate=0.0)
    initial = train_student(store_path, result.model_path, StudentConfig(k=K_FRAMES, loss="rep_ce"), frozen,
                            out_dir=store_path.parent / f"student-{family}-{size}-{seed}", progress=False).model_path
    initial_state = load_model(initial).state_dict()
    for matching in ("intermediate", "final"):
        config = StudentConfig(k=K_FRAMES, loss="rep_pred_ce", matching=matching)
        student = build_model(student_model_config(teacher.config, K_FRAMES))
        student.load_state_dict(initial_state)
        student.train()
        optimizer = torch.optim.Adam(student.parameters(), lr=train_config.learning_rate)
        probe_batch = batch_tensors(store, train[:BATCH])
        rows, step = [], 0
        for target in steps:
            while step < target:
                batch = batch_tensors(store, rng.choice(train, BATCH, replace=False))
                t_frames, t_mask, s_frames, s_mask, positions, labels = batch
                with torch.no_grad():
                    t_out = teacher(t_frames, t_mask, return_intermediate=matching == "intermediate")
                s_out = student(s_frames, s_mask, return_intermediate=matching == "intermediate")
                loss, _ = distillation_loss("rep_pred_ce", s_out, t_out, labels, config, student_positions=positions,
                                            student_mask=s_mask)
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                step += 1
            student.eval()  # no dropout in the measurement
            row = {"step": step, **measure(student, teacher, probe_batch, StudentConfig(k=K_FRAMES, matching="intermediate")),
                   "assignment_max": assignment_max(student, probe_batch, family)}
            student.train()
            rows.append(row)
        out[f"trained_with_{matching}"] = rows
    out["teacher_assignment_max"] = assignment_max(teacher, batch_tensors(store, train[:BATCH]), family)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default="benchmarks/results/intermediate_matching_probe.json")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--steps", type=int, nargs="+", default=list(STEPS), help="measure after these steps")
    parser.add_argument("--families", nargs="+", default=["hrnn", "netvlad", "nextvlad"])
    parser.add_argument("--sizes", nargs="+", default=list(SIZES), choices=list(SIZES))
    args = parser.parse_args()
    torch.set_num_threads(1)
    started, load_start = time.time(), os.getloadavg()[0]
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        store = build_tiny_store(Path(tmp) / "store")
        for size in args.sizes:
            for family in args.families:
                for seed in args.seeds:
                    results.append(probe(store, family, size, seed, args.epochs, args.steps))
                    r = results[-1]
                    rows = r["trained_with_intermediate"]
                    first, last = rows[0], rows[-1]
                    print(f"{size:8s} {family:9s} seed {seed}: L_rep^I {first['rep_intermediate']:.4g} -> "
                          f"{last['rep_intermediate']:.4g} (rel {first['rep_intermediate_rel']:.3g} -> "
                          f"{last['rep_intermediate_rel']:.3g}; vs constant {first['rep_intermediate_vs_constant']:.3g} -> "
                          f"{last['rep_intermediate_vs_constant']:.3g}), grad share {first['grad_rep_intermediate_share']:.3g}"
                          f" -> {last['grad_rep_intermediate_share']:.3g}, L_rep {first['rep']:.3g}, "
                          f"assign max {first['assignment_max']:.3f}", flush=True)
    payload = {
        "command": "OMP_NUM_THREADS=1 python benchmarks/intermediate_matching_probe.py " + " ".join(sys.argv[1:]),
        "machine": {**describe_machine("cpu"), "load_average_1min_start_end": [load_start, os.getloadavg()[0]]},
        "seconds": round(time.time() - started, 1), "k": K_FRAMES, "batch": BATCH, "steps": args.steps,
        "results": results,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(payload, indent=1) + "\n")


if __name__ == "__main__":
    main()
