"""Inference cost of teachers and students: parameters, FLOPs, latency and throughput, model-only and end to end.

The paper's Table 4 shows a k=30 student doing 10% of the teacher's FLOPs but taking 70% of its time: the
student still read and decoded every frame. Here the end-to-end path starts at the frame store on disk and
the student reads ONLY its k frames (``FrameStore.read_frames``), keeps them quantised (uint8) until the
model dequantises them on the device, and runs the model's dense path (no packing) when all k are real.

FLOPs
-----
``model_flops`` (``fewframes.models``: each family's analytic count plus the classifier's;
``hierarchical_flops`` for the hrnn family) is the analytic count; ``counted_flops`` runs the model under
``torch.utils.flop_counter.FlopCounterMode`` and measures the matrix products it executes. Both count
2 FLOPs per multiply-add of:

- every LSTM gate matmul: per executed step and layer, ``x_t @ W_ih^T`` (4H x input) and ``h @ W_hh^T``
  (4H x H);
- the VLAD families' linear layers and their aggregation matmul (docstrings in ``fewframes/models/``);
- the classifier's linear layer(s) (the mixture of experts: gates and experts).

The VLAD families run every slot of a padded batch (padding is masked, not skipped), so on a batch with
padding their counted FLOPs include the padding slots, which the per-video analytic figure does not.

Neither counts biases, sigmoid/tanh, the gates' elementwise products, dequantisation, L2 normalisation or
dropout (all O(H) per step against the O(H^2) matmuls). The paper's Table 4 figures (teacher 5.042
"GFLOPs") match multiply-adds, i.e. half of ours.

The counter: ``FlopCounterMode`` has no formula for LSTMs. On CPU, ``aten.lstm`` decomposes into one
``aten.mkldnn_rnn_layer`` per layer (padded input) or, for a ``PackedSequence``, into per-step
``aten.addmm`` calls that the stock counter already measures. We register a formula for
``mkldnn_rnn_layer`` (and ``_cudnn_rnn`` for CUDA) that reads the EXECUTED shapes: rows actually fed
(time steps x sequences, or packed rows) times the weight matrices' sizes. So the counter catches what the
analytic formula assumes (e.g. the padded last block of the dense path, blocks dropped on the packed path).

Timing
------
Latency: p50/p95 over repeated batch-1 calls. Throughput: videos/s at a large batch. Both after warm-up,
under ``torch.inference_mode``, with CUDA events and synchronisation on a GPU (``time.perf_counter`` on CPU).
Precision: ``fp32`` (default) or ``bf16`` (``torch.autocast`` on the device, as training runs on CUDA; it
also runs on CPU, which is how the code path is tested without a GPU). On CUDA, PyTorch's autocast wrapper
for cuDNN RNNs casts the LSTMs to float16 whatever the autocast dtype (see docs/method.md), so there ``bf16``
times float16 LSTMs and a bfloat16 classifier. FLOPs are counted in fp32: autocast changes the number
format, not the matrix products.
End to end = read from the store (+ frame selection for students) -> uint8 tensor -> device -> model ->
sigmoid scores back on the host.

Contract details chosen here (not fixed elsewhere): a student is recognised by a ``student_config``
attribute (``StudentConfig``) on the loaded model, or by the ``students`` argument; anything else reads
all of a video's frames (a teacher). Frame selection for benchmarking uses a fixed seed.
"""

from __future__ import annotations

import contextlib
import os
import platform
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from fewframes.config import FEATURE_DIM, ModelConfig, StudentConfig
from fewframes.errors import BenchmarkError
from fewframes.models import VideoClassifier, encoding_dim, model_flops, prepare_frames
from fewframes.models.base import classifier_flops
from fewframes.models.hierarchical import hierarchical_encoder_flops, lstm_flops

# ---------------------------------------------------------------------------------------------------------
# Parameters and FLOPs
# ---------------------------------------------------------------------------------------------------------


def count_parameters(model: nn.Module) -> int:
    """Number of parameters (a shared classifier counts once)."""
    return sum(p.numel() for p in model.parameters())


def encoding_size(config: ModelConfig) -> int:
    """Size of the video encoding E of ``config`` (its family's; see ``fewframes.models``)."""
    return encoding_dim(config)


def hierarchical_flops(config: ModelConfig, n_frames: int, *, padded: bool = True) -> int:
    """Analytic FLOPs to classify one video of ``n_frames`` frames with a hierarchical LSTM model.

    The lower LSTM runs over b = ceil(n/l) blocks of l = ``config.block_length`` frames; the upper LSTM over
    the b block encodings (H each); the classifier maps E (``encoding_size``) to ``num_classes`` logits.
    ``padded=True`` is what ``fewframes.models`` executes on both its paths: a short last block is
    zero-padded to l steps (the LSTM runs them; the state is read at the last real frame) and blocks of
    pure padding are dropped. ``padded=False`` counts a fully packed LSTM (only real frames executed).
    A student reads n = k frames; a teacher n = the video's length. ``model_flops`` is the same for any family.
    """
    if n_frames < 1:
        raise BenchmarkError(f"n_frames must be >= 1, got {n_frames}")
    return hierarchical_encoder_flops(config, n_frames, padded=padded) + classifier_flops(encoding_size(config), config)


def _weights_matmul_flops(rows: int, weights: Iterable[Any]) -> int:
    # Every 2-D weight (W_ih, W_hh, projections) multiplies each executed row once; biases are skipped.
    return 2 * rows * sum(int(np.prod(shape)) for shape in weights if shape is not None and len(shape) == 2)


def _mkldnn_rnn_layer_flops(input, weight0, weight1, *args: Any, out_shape: Any = None, **kwargs: Any) -> int:
    # aten::mkldnn_rnn_layer(input [T,B,in] or [B,T,in], w_ih, w_hh, b_ih, b_hh, hx, cx, reverse, batch_sizes, ...)
    rows = int(np.prod(input[:-1]))
    return _weights_matmul_flops(rows, [weight0, weight1])


def _cudnn_rnn_flops(input, weights, *args: Any, out_shape: Any = None, **kwargs: Any) -> int:
    # aten::_cudnn_rnn(input, weight[], ...): a packed input is 2-D [rows, in], a padded one 3-D.
    rows = int(np.prod(input[:-1]))
    return _weights_matmul_flops(rows, weights)


def _rnn_flop_formulas() -> dict[Any, Callable[..., int]]:
    formulas: dict[Any, Callable[..., int]] = {torch.ops.aten.mkldnn_rnn_layer: _mkldnn_rnn_layer_flops}
    if hasattr(torch.ops.aten, "_cudnn_rnn"):
        formulas[torch.ops.aten._cudnn_rnn] = _cudnn_rnn_flops
    return formulas


def counted_flops(model: nn.Module, frames: Tensor, mask: Tensor | None = None) -> int:
    """FLOPs the model EXECUTES on this batch, measured by ``FlopCounterMode`` (see the module docstring)."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False, custom_mapping=_rnn_flop_formulas())
    with torch.inference_mode(), counter:
        model(frames, mask)
    return int(counter.get_total_flops())


# ---------------------------------------------------------------------------------------------------------
# The machine
# ---------------------------------------------------------------------------------------------------------


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def describe_machine(device: str = "cpu") -> dict[str, Any]:
    """What the timings were measured on: CPU model, cores, memory, torch version, threads, GPU if any."""
    info: dict[str, Any] = {
        "cpu_model": _cpu_model(),
        "cpu_cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": np.__version__,
        "device": device,
        "cuda_available": torch.cuda.is_available(),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }
    try:
        pages, page_size = os.sysconf("SC_PHYS_PAGES"), os.sysconf("SC_PAGE_SIZE")
        info["memory_gib"] = round(pages * page_size / 2**30, 1)
    except (ValueError, OSError, AttributeError):
        info["memory_gib"] = None
    return info


# ---------------------------------------------------------------------------------------------------------
# Timing
# ---------------------------------------------------------------------------------------------------------


def resolve_device(device: str) -> torch.device:
    """``cpu`` or ``cuda`` (a clear error when CUDA is asked for and absent)."""
    if device not in ("cpu", "cuda") and not device.startswith("cuda:"):
        raise BenchmarkError(f"--device must be cpu or cuda, got {device!r}")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise BenchmarkError(f"--device {device}: CUDA is not available on this machine")
    return torch.device(device)


PRECISIONS = ("fp32", "bf16")


def precision_context(device: torch.device, precision: str) -> contextlib.AbstractContextManager[Any]:
    """Nothing for ``fp32``; ``torch.autocast`` to bfloat16 on ``device`` for ``bf16`` (cuDNN LSTMs: float16)."""
    check_precision(precision)
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16)


def check_precision(precision: str) -> str:
    """``precision`` if it is one of ``PRECISIONS`` (a one-line error naming ``--precision`` otherwise)."""
    if precision not in PRECISIONS:
        raise BenchmarkError(f"--precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    return precision


def time_call(fn: Callable[[], Any], device: torch.device) -> float:
    """Seconds one call of ``fn`` takes; on CUDA measured with events after synchronising."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        return start.elapsed_time(end) / 1000.0
    begin = time.perf_counter()
    fn()
    return time.perf_counter() - begin


def time_per_call(fn: Callable[[], Any], device: torch.device, min_seconds: float) -> float:
    """Seconds per call of ``fn``, calling it until ``min_seconds`` have passed (at least once).

    Short calls (a student's batch) are repeated so that timer resolution and scheduler noise do not
    dominate; long ones (a teacher's) run once.
    """
    calls, total = 0, 0.0
    while calls == 0 or total < min_seconds:
        total += time_call(fn, device)
        calls += 1
    return total / calls


def _percentile_ms(seconds: Sequence[float], q: float) -> float:
    return float(np.percentile(np.asarray(seconds) * 1000.0, q))


def _feature_dim(model: nn.Module) -> int:
    config = getattr(model, "config", None)
    return config.feature_dim if isinstance(config, ModelConfig) else FEATURE_DIM


class PlainLSTMClassifier(nn.Module):
    """The reference the hierarchical teacher must beat: one stacked ``nn.LSTM`` over all frames, then a linear.

    Same input handling (dequantise + L2-normalise), same hidden size, layers and encoding size as the
    ``ModelConfig`` it is built from; used only to benchmark the teacher's throughput against.
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        self.lstm = nn.LSTM(config.feature_dim, config.hidden_size, config.num_layers, batch_first=True)
        self.linear = nn.Linear(encoding_size(config), config.num_classes)

    def forward(self, frames: Tensor, mask: Tensor | None = None) -> Tensor:
        """frames uint8 [B, T, D] (all real) -> logits [B, C]."""
        _, (h_n, c_n) = self.lstm(prepare_frames(frames, self.config.parts))
        if self.config.encoding == "hidden":
            return self.linear(h_n[-1])
        state = torch.stack([c_n, h_n], dim=1).permute(2, 0, 1, 3).reshape(frames.shape[0], -1)
        return self.linear(state)


def compare_plain_lstm(
    teacher: nn.Module, n_frames: int, batch_size: int, device: str = "cpu", *, rounds: int = 5,
    min_seconds: float = 0.5, seed: int = 0, precision: str = "fp32",
) -> dict[str, Any]:
    """Model-only throughput of the hierarchical teacher vs a plain stacked ``nn.LSTM`` of the same sizes.

    Both get the same random uint8 frames [batch_size, n_frames, D]; timings interleave over ``rounds`` and
    the median round counts. The hierarchical model runs its n/l blocks as one batch of short sequences
    (l steps), the plain LSTM n sequential steps at batch ``batch_size``. ``precision``: see the module docstring.
    """
    torch_device = resolve_device(device)
    check_precision(precision)
    teacher = teacher.to(torch_device).eval()
    plain = PlainLSTMClassifier(teacher.config).to(torch_device).eval()
    generator = torch.Generator().manual_seed(seed)
    frames = torch.randint(0, 256, (batch_size, n_frames, teacher.config.feature_dim), dtype=torch.uint8,
                           generator=generator).to(torch_device)
    seconds: dict[str, list[float]] = {"hierarchical": [], "plain": []}
    with torch.inference_mode(), precision_context(torch_device, precision):
        teacher(frames)
        plain(frames)
        for _ in range(rounds):
            seconds["hierarchical"].append(time_per_call(lambda: teacher(frames), torch_device, min_seconds))
            seconds["plain"].append(time_per_call(lambda: plain(frames), torch_device, min_seconds))
    hierarchical = batch_size / float(np.median(seconds["hierarchical"]))
    plain_rate = batch_size / float(np.median(seconds["plain"]))
    return {
        "n_frames": n_frames,
        "batch_size": batch_size,
        "precision": precision,
        "hierarchical_videos_s": hierarchical,
        "plain_lstm_videos_s": plain_rate,
        "speedup": hierarchical / plain_rate,
        "gflops_per_video_hierarchical": hierarchical_flops(teacher.config, n_frames) / 1e9,
        "gflops_per_video_plain_lstm": (
            lstm_flops(n_frames, teacher.config.feature_dim, teacher.config.hidden_size, teacher.config.num_layers)
            + 2 * encoding_size(teacher.config) * teacher.config.num_classes
        ) / 1e9,
    }


# ---------------------------------------------------------------------------------------------------------
# End to end: frame store -> class scores
# ---------------------------------------------------------------------------------------------------------


def frame_positions(
    length: int, student: StudentConfig | None, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """(positions, mask) a model reads from a video of ``length`` frames: all for a teacher, k for a student."""
    if student is None or student.frame_selection == "all":
        return np.arange(length, dtype=np.int64), np.ones(length, dtype=bool)
    from fewframes.data.selection import select_frames

    positions, mask = select_frames(student.frame_selection, length, student.k, rng)
    return np.asarray(positions, dtype=np.int64), np.asarray(mask, dtype=bool)


def read_batch(
    store: Any, indices: Sequence[int], student: StudentConfig | None, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray | None]:
    """Read the frames a model needs for ``indices`` from ``store``: uint8 [B, T, D] and a mask or None.

    Only the selected frames' bytes are read. The mask is None when every slot holds a real frame, so the
    model takes its dense path (no packing): the usual case for a student on videos of >= k frames.
    """
    selections = [frame_positions(int(store.lengths[i]), student, rng) for i in indices]
    slots = max(len(positions) for positions, _ in selections)
    frames = np.zeros((len(indices), slots, store.feature_dim), dtype=np.uint8)
    mask = np.zeros((len(indices), slots), dtype=bool)
    for row, (index, (positions, real)) in enumerate(zip(indices, selections)):
        real_positions = positions[real]
        frames[row, : len(real_positions)] = store.read_frames(int(index), real_positions)
        mask[row, : len(real_positions)] = True
    return frames, (None if mask.all() else mask)


def classify_batch(
    model: nn.Module, frames: np.ndarray, mask: np.ndarray | None, device: torch.device
) -> np.ndarray:
    """uint8 frames (host) -> sigmoid class scores float32 [B, C] (host). Dequantisation happens on the device."""
    frames_t = torch.from_numpy(frames).to(device, non_blocking=True)
    mask_t = None if mask is None else torch.from_numpy(mask).to(device, non_blocking=True)
    logits = model(frames_t, mask_t).logits
    return torch.sigmoid(logits).float().cpu().numpy()


def e2e_run(
    model: nn.Module, store: Any, indices: Sequence[int], student: StudentConfig | None, device: torch.device,
    batch_size: int, seed: int = 0,
) -> tuple[float, int]:
    """Classify ``indices`` from the store in batches; returns (seconds, bytes read)."""
    rng = np.random.default_rng(seed)
    bytes_before = store.bytes_read

    def work() -> None:
        for start in range(0, len(indices), batch_size):
            frames, mask = read_batch(store, indices[start : start + batch_size], student, rng)
            classify_batch(model, frames, mask, device)

    with torch.inference_mode():
        seconds = time_call(work, device)
    return seconds, store.bytes_read - bytes_before


def e2e_latency(
    model: nn.Module, store: Any, indices: Sequence[int], student: StudentConfig | None, device: torch.device,
    *, warmup: int = 3, seed: int = 0,
) -> list[float]:
    """Seconds to classify each video alone (batch 1), store to scores."""
    rng = np.random.default_rng(seed)
    with torch.inference_mode():
        for index in indices[:warmup]:
            classify_batch(model, *read_batch(store, [index], student, rng), device)
        return [
            time_call(lambda i=index: classify_batch(model, *read_batch(store, [i], student, rng), device), device)
            for index in indices
        ]


# ---------------------------------------------------------------------------------------------------------
# The library call behind ``fewframes benchmark`` and the pipeline's benchmark component
# ---------------------------------------------------------------------------------------------------------


def resolve_model(model: VideoClassifier | str | os.PathLike[str]) -> VideoClassifier:
    """A model as given, or loaded from its saved file with ``fewframes.training.load_model``."""
    if isinstance(model, nn.Module):
        return model
    from fewframes import fsio

    path = os.fspath(model)  # a str, so gs:// survives (Path would fold its //)
    if not fsio.exists(path):
        raise BenchmarkError(f"model file {path} does not exist")
    from fewframes.training import load_model

    return load_model(path)


def student_config_of(model: nn.Module) -> StudentConfig | None:
    """The StudentConfig a loaded model carries (None for a teacher)."""
    student = getattr(model, "student_config", None)
    return student if isinstance(student, StudentConfig) else None


def open_store(store: Any) -> Any:
    """A ``FrameStore`` as given, or opened from its path."""
    if isinstance(store, (str, os.PathLike)):
        from fewframes.data.store import FrameStore

        return FrameStore.open(store)
    return store


@dataclass
class _Entry:
    """One model under benchmark and the timings gathered for it over the rounds."""

    name: str
    model: nn.Module
    student: StudentConfig | None
    frames: torch.Tensor  # model-only input: random uint8 [batch, typical frames, D] on the device
    row: dict[str, Any]
    batch_seconds: list[float] = field(default_factory=list)
    latency_seconds: list[float] = field(default_factory=list)
    e2e_seconds: list[float] = field(default_factory=list)
    e2e_latency_seconds: list[float] = field(default_factory=list)
    e2e_bytes: int = 0
    e2e_passes: int = 0


def benchmark_models(
    models: Mapping[str, VideoClassifier | str | os.PathLike[str]],
    store: Any,
    *,
    device: str = "cpu",
    batch_size: int = 64,
    n_videos: int = 128,
    rounds: int = 5,
    latency_videos: int = 8,
    min_seconds: float = 0.5,
    students: Mapping[str, StudentConfig] | None = None,
    seed: int = 0,
    progress: bool = True,
    precision: str = "fp32",
) -> list[dict[str, Any]]:
    """Benchmark each model side by side on the same videos of ``store`` (a ``FrameStore`` or its path).

    ``models``: name -> model or saved model path; ``students``: name -> StudentConfig for in-memory
    students that do not carry one. The measurements are interleaved: each of ``rounds`` rounds times every
    model once (a model-only batch, ``latency_videos`` batch-1 calls, one end-to-end pass over ``n_videos``
    videos and ``latency_videos`` end-to-end batch-1 calls), so a busy machine slows all models alike; the
    throughputs use the median round (``*_best`` the fastest). A round's batch or pass is repeated until
    it has run ``min_seconds``. ``precision``: ``fp32`` or ``bf16`` (autocast on the device, timings only).

    Returns one row per model: name, k (None = all frames), params, gflops_per_video (analytic, mean over
    the videos) and gflops_counted (FlopCounterMode on the first batch, per video), latency_ms_p50/p95 and
    throughput_videos_s (model alone, frames already on the device), e2e_latency_ms_p50/p95 and
    e2e_throughput_videos_s (store on disk to class scores), bytes_read_per_video, and the sizes used.
    """
    from tqdm.auto import tqdm

    if batch_size < 1:
        raise BenchmarkError(f"--batch must be >= 1, got {batch_size}")
    if rounds < 1:
        raise BenchmarkError(f"rounds must be >= 1, got {rounds}")
    if not models:
        raise BenchmarkError("--models: give at least one model")
    torch_device = resolve_device(device)
    check_precision(precision)
    frame_store = open_store(store)
    total = len(frame_store)
    if total == 0:
        raise BenchmarkError(f"frame store {store} holds no video")
    indices = list(range(min(n_videos, total)))
    latency_indices = indices[: max(1, min(latency_videos, len(indices)))]
    students = dict(students or {})
    lengths = [int(frame_store.lengths[i]) for i in indices]

    entries: list[_Entry] = []
    for name, source in models.items():
        model = resolve_model(source).to(torch_device).eval()
        student = students.get(name) or student_config_of(model)
        config: ModelConfig = model.config
        reads_k = student is not None and student.frame_selection != "all"
        frames_read = [min(n, student.k) if reads_k else n for n in lengths]
        typical = int(np.median(frames_read))

        # FLOPs: analytic over the benchmarked videos; counted on the first batch, on the path the model takes.
        first = indices[:batch_size]
        frames, mask = read_batch(frame_store, first, student, np.random.default_rng(seed))
        counted = counted_flops(
            model,
            torch.from_numpy(frames).to(torch_device),
            None if mask is None else torch.from_numpy(mask).to(torch_device),
        )
        generator = torch.Generator().manual_seed(seed)
        random_frames = torch.randint(0, 256, (batch_size, typical, config.feature_dim), dtype=torch.uint8,
                                      generator=generator).to(torch_device)
        row = {
            "name": name,
            "k": student.k if reads_k else None,
            "frame_selection": student.frame_selection if student else "all",
            "family": config.family,
            "block_length": config.block_length,
            "hidden_size": config.hidden_size,
            "num_layers": config.num_layers,
            "num_classes": config.num_classes,
            "params": count_parameters(model),
            "frames_per_video": float(np.mean(frames_read)),
            "gflops_per_video": float(np.mean([model_flops(config, n) for n in frames_read])) / 1e9,
            "gflops_counted": counted / len(first) / 1e9,
        }
        entries.append(_Entry(name, model, student, random_frames, row))

    def model_call(entry: _Entry, frames: torch.Tensor) -> Callable[[], Any]:
        return lambda: entry.model(frames)

    with torch.inference_mode(), precision_context(torch_device, precision):
        for entry in entries:  # warm-up: allocator, oneDNN/cuDNN plans, page cache for the store
            entry.model(entry.frames)
            entry.model(entry.frames[:1])
            e2e_run(entry.model, frame_store, indices[:batch_size], entry.student, torch_device, batch_size, seed)
        steps = rounds * len(entries)
        with tqdm(total=steps, desc="benchmark", unit="model-round", disable=not progress) as bar:
            for round_index in range(rounds):
                for entry in entries:
                    entry.batch_seconds.append(
                        time_per_call(model_call(entry, entry.frames), torch_device, min_seconds)
                    )
                    one = entry.frames[:1]
                    entry.latency_seconds += [time_call(model_call(entry, one), torch_device)
                                              for _ in latency_indices]
                    passes, seconds, read = 0, 0.0, 0
                    while passes == 0 or seconds < min_seconds:
                        pass_seconds, pass_bytes = e2e_run(entry.model, frame_store, indices, entry.student,
                                                           torch_device, batch_size, seed + round_index)
                        passes, seconds, read = passes + 1, seconds + pass_seconds, read + pass_bytes
                    entry.e2e_seconds.append(seconds / passes)
                    entry.e2e_passes += passes
                    entry.e2e_bytes += read
                    entry.e2e_latency_seconds += e2e_latency(entry.model, frame_store, latency_indices,
                                                             entry.student, torch_device, warmup=0,
                                                             seed=seed + round_index)
                    bar.update(1)

    rows = []
    for entry in entries:
        rows.append({
            **entry.row,
            "latency_ms_p50": _percentile_ms(entry.latency_seconds, 50),
            "latency_ms_p95": _percentile_ms(entry.latency_seconds, 95),
            "throughput_videos_s": batch_size / float(np.median(entry.batch_seconds)),
            "throughput_videos_s_best": batch_size / float(np.min(entry.batch_seconds)),
            "e2e_latency_ms_p50": _percentile_ms(entry.e2e_latency_seconds, 50),
            "e2e_latency_ms_p95": _percentile_ms(entry.e2e_latency_seconds, 95),
            "e2e_throughput_videos_s": len(indices) / float(np.median(entry.e2e_seconds)),
            "e2e_throughput_videos_s_best": len(indices) / float(np.min(entry.e2e_seconds)),
            "bytes_read_per_video": entry.e2e_bytes / (entry.e2e_passes * len(indices)),
            "batch_size": batch_size,
            "n_videos": len(indices),
            "rounds": rounds,
            "device": str(torch_device),
            "precision": precision,
        })
    return rows


def count_flops(model: nn.Module, n_frames: int) -> int:
    """Analytic FLOPs for one video of ``n_frames`` frames through ``model`` (its ``ModelConfig``, any family)."""
    return model_flops(model.config, n_frames)


# A benchmark row's field -> the metric name a model's MLflow run holds it under (the pipeline and
# ``fewframes benchmark --tracking-uri`` alike; ``model_figures``).
BENCHMARK_METRICS = {
    "params": "num_parameters",
    "gflops_per_video": "gflops",
    "latency_ms_p50": "latency_ms_p50",
    "latency_ms_p95": "latency_ms_p95",
    "throughput_videos_s": "throughput_videos_s",
    "e2e_latency_ms_p50": "e2e_latency_ms_p50",
    "e2e_throughput_videos_s": "e2e_throughput_videos_s",
}


def model_figures(bench: dict[str, Any]) -> dict[str, float]:
    """One benchmark row's figures under our metric names (``BENCHMARK_METRICS``), plus, where the teacher
    was benchmarked too (``add_ratios``), ``flops_ratio`` and ``speedup_e2e`` (store-to-scores throughput
    over the teacher's), the names the pipeline run's headline metrics use for the champion."""
    figures = {ours: float(bench[theirs]) for theirs, ours in BENCHMARK_METRICS.items() if bench.get(theirs) is not None}
    if bench.get("flops_ratio") is not None:
        figures["flops_ratio"] = float(bench["flops_ratio"])
    if bench.get("time_ratio_e2e"):
        figures["speedup_e2e"] = 1.0 / float(bench["time_ratio_e2e"])
    return figures


def add_ratios(rows: list[dict[str, Any]], reference: str | None = None) -> list[dict[str, Any]]:
    """Add each row's cost relative to the reference row (default: the first with k=None, i.e. the teacher).

    time ratios are reference throughput / row throughput (= time per video ratio).
    """
    ref = next((r for r in rows if r["name"] == reference), None) if reference else None
    ref = ref or next((r for r in rows if r["k"] is None), None)
    if ref is None:
        return rows
    for row in rows:
        row["flops_ratio"] = row["gflops_per_video"] / ref["gflops_per_video"]
        row["time_ratio_model"] = ref["throughput_videos_s"] / row["throughput_videos_s"]
        row["time_ratio_e2e"] = ref["e2e_throughput_videos_s"] / row["e2e_throughput_videos_s"]
        row["latency_ratio_e2e"] = row["e2e_latency_ms_p50"] / ref["e2e_latency_ms_p50"]
        row["bytes_ratio"] = (
            row["bytes_read_per_video"] / ref["bytes_read_per_video"] if ref["bytes_read_per_video"] else None
        )
    return rows


__all__ = [
    "BENCHMARK_METRICS",
    "PRECISIONS",
    "PlainLSTMClassifier",
    "add_ratios",
    "benchmark_models",
    "check_precision",
    "classify_batch",
    "compare_plain_lstm",
    "count_flops",
    "count_parameters",
    "counted_flops",
    "describe_machine",
    "e2e_latency",
    "e2e_run",
    "encoding_size",
    "frame_positions",
    "hierarchical_flops",
    "model_figures",
    "lstm_flops",
    "model_flops",
    "open_store",
    "precision_context",
    "read_batch",
    "resolve_device",
    "resolve_model",
    "student_config_of",
    "time_call",
    "time_per_call",
]
