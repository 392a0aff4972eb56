"""One configuration type per concept, shared by the library, the CLI and the KFP components.

Defaults are the paper's (Adam, lr 0.001 decayed by 0.95 per epoch, batch 256, dropout 0.5, 5 epochs,
2-layer LSTMs of 1024 cells, teacher blocks of 20 frames). Presets shrink them for CPUs and tests.
Every config round-trips through a plain dict (``to_dict``/``from_dict``) so it can travel as a KFP
parameter or an MLflow param without a second, hand-kept copy of the field list.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from typing import Any, Callable, Literal, TypeVar

# YouTube-8M frame-level feature sizes.
RGB_DIM = 1024
AUDIO_DIM = 128
FEATURE_DIM = RGB_DIM + AUDIO_DIM
MAX_FRAMES = 300

FrameSelection = Literal["uniform", "random", "first", "middle", "last", "first_middle_last", "all"]
FRAME_SELECTIONS: tuple[str, ...] = ("uniform", "random", "first", "middle", "last", "first_middle_last", "all")
# The k-frame selections: the paper's baselines (every selection but the teacher's "all").
BASELINE_SELECTIONS: tuple[str, ...] = tuple(s for s in FRAME_SELECTIONS if s != "all")

# Distillation loss variants of the paper: (a) L_rep two-stage, (b) L_rep + L_CE, (c) L_rep + L_pred + L_CE.
DistillLoss = Literal["rep", "rep_ce", "rep_pred_ce"]
DISTILL_LOSSES: tuple[str, ...] = ("rep", "rep_ce", "rep_pred_ce")
# Controls (not the paper's): "ce" is the warm-start control, serial only: the student starts from a copy of
# the teacher's trained classifier, exactly as a serial student does, and trains with L_CE alone (no teacher
# outputs), so distillation can be tested against the warm start (issue 10, docs/method.md).
CONTROL_LOSSES: tuple[str, ...] = ("ce",)
STUDENT_LOSSES: tuple[str, ...] = DISTILL_LOSSES + CONTROL_LOSSES
TrainingMode = Literal["serial", "parallel"]
TRAINING_MODES: tuple[str, ...] = ("serial", "parallel")
Matching = Literal["final", "intermediate"]
PredDistance = Literal["kl", "mse"]

_C = TypeVar("_C")


class ConfigError(ValueError):
    """A configuration value is invalid; the message names the field."""


class _DictMixin:
    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)  # type: ignore[arg-type]

    @classmethod
    def from_dict(cls: type[_C], values: dict[str, Any]) -> _C:
        names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
        unknown = sorted(set(values) - names)
        if unknown:
            raise ConfigError(f"{cls.__name__}: unknown field(s) {', '.join(unknown)}")
        return cls(**values)

    def replace(self: _C, **changes: Any) -> _C:
        return dataclasses.replace(self, **changes)  # type: ignore[type-var]


def feature_parts(feature_dim: int, audio_dim: int | None = None) -> tuple[int, ...]:
    """The parts of a frame vector that are normalised and (in the VLAD families) pooled separately.

    ``audio_dim`` None (YouTube-8M's widths, and every model file from before widths were configurable):
    (rgb, audio) = (1024, 128) for 1152, else the whole vector. ``audio_dim`` > 0: (feature_dim - audio_dim,
    audio_dim), e.g. (2048, 128) for another extractor's rgb; 0: the whole vector."""
    if audio_dim is None:
        return (RGB_DIM, AUDIO_DIM) if feature_dim == FEATURE_DIM else (feature_dim,)
    return (feature_dim - audio_dim, audio_dim) if audio_dim else (feature_dim,)


def data_widths(rgb_dim: int, audio_dim: int) -> dict[str, int]:
    """The ``ModelConfig`` fields for frames of ``rgb_dim`` + ``audio_dim`` bytes: none for YouTube-8M's own
    (1024 + 128: the defaults, so those configs stay as they were), else ``feature_dim`` and ``audio_dim``."""
    if (rgb_dim, audio_dim) == (RGB_DIM, AUDIO_DIM):
        return {}
    return {"feature_dim": rgb_dim + audio_dim, "audio_dim": audio_dim}


MODEL_CLASSIFIERS: tuple[str, ...] = ("linear", "moe")


@dataclass(frozen=True)
class ModelConfig(_DictMixin):
    """Sizes of a teacher/student model: its family's encoder and the classifier (teacher and student alike).

    ``family`` names an entry of ``fewframes.models.registry.MODEL_FAMILIES``: "hrnn" (the paper's
    hierarchical LSTM; the default, and what a model file without the field holds), "netvlad", "nextvlad".
    ``hidden_size`` is the LSTM cell size (hrnn) or the hidden projection after the pooling (VLAD families).
    """

    num_classes: int
    feature_dim: int = FEATURE_DIM  # bytes of one frame: rgb then audio (the frame store's feature_dim)
    hidden_size: int = 1024
    num_layers: int = 2  # hrnn only
    block_length: int = 20  # hrnn only. l: frames per lower-LSTM block (teacher 20; students student_block_length)
    dropout: float = 0.5
    # hrnn only. E, the video encoding: "state" = final (c, h) of every upper-LSTM layer concatenated (2*
    # num_layers*hidden_size; the authors' code, the paper's h in R^4096); "hidden" = the top layer's final h.
    encoding: str = "state"
    family: str = "hrnn"
    clusters: int = 64  # netvlad/nextvlad: K cluster centres for rgb (audio: K // 2, at least 1)
    expansion: int = 2  # nextvlad: lambda, the frame feature's expansion factor
    groups: int = 8  # nextvlad: G groups for rgb (audio: G // 2, at least 1); must divide expansion * part size
    classifier: str = "linear"  # "linear" | "moe" (the authors' mixture of experts)
    moe_experts: int = 2  # classifier="moe": experts per class (plus the dummy one)
    # The audio part's width at the end of the frame vector (the store's audio_dim); None: YouTube-8M's rule
    # (1024 + 128 when feature_dim is 1152, else one part). Another extractor's frames, e.g. 2048 + 128.
    audio_dim: int | None = None

    @property
    def parts(self) -> tuple[int, ...]:
        """The widths of the frame's separately normalised (and, in the VLAD families, pooled) parts."""
        return feature_parts(self.feature_dim, self.audio_dim)

    @property
    def widths(self) -> tuple[int, int]:
        """(rgb, audio) bytes of one frame as the model reads them ((feature_dim, 0) for a one-part vector)."""
        parts = self.parts
        return (parts[0], parts[1]) if len(parts) == 2 else (parts[0], 0)

    def __post_init__(self) -> None:
        for name in ("num_classes", "feature_dim", "hidden_size", "num_layers", "block_length", "clusters",
                     "expansion", "groups", "moe_experts"):
            if getattr(self, name) < 1:
                raise ConfigError(f"ModelConfig.{name} must be >= 1, got {getattr(self, name)}")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"ModelConfig.dropout must be in [0, 1), got {self.dropout}")
        if self.audio_dim is not None and not 0 <= self.audio_dim < self.feature_dim:
            raise ConfigError(
                f"ModelConfig.audio_dim must be in [0, feature_dim = {self.feature_dim}), got {self.audio_dim}"
            )
        if self.encoding not in ("state", "hidden"):
            raise ConfigError(f"ModelConfig.encoding must be state or hidden, got {self.encoding!r}")
        if self.classifier not in MODEL_CLASSIFIERS:
            raise ConfigError(
                f"ModelConfig.classifier must be one of {', '.join(MODEL_CLASSIFIERS)}, got {self.classifier!r}"
            )
        from fewframes.models.registry import MODEL_FAMILIES  # here: the models import this module

        if self.family not in MODEL_FAMILIES:
            raise ConfigError(f"ModelConfig.family must be one of {', '.join(MODEL_FAMILIES)}, got {self.family!r}")
        MODEL_FAMILIES[self.family].check(self)  # the family's own constraints, one-line ConfigErrors


@dataclass(frozen=True)
class TrainConfig(_DictMixin):
    """Optimisation settings (the paper's set-up by default)."""

    epochs: int = 5
    batch_size: int = 256
    learning_rate: float = 1e-3
    lr_decay: float = 0.95  # exponential decay per epoch
    weight_decay: float = 1e-5  # the paper's "L2 penalty"
    seed: int = 0
    checkpoint_every_steps: int = 0  # 0: only at the end of each epoch
    num_workers: int = 0
    device: str = "auto"  # auto | cpu | cuda
    mixed_precision: bool = True  # bf16 autocast on CUDA only; ignored on CPU
    train_fraction: float = 1.0  # seeded subset of the training split (the paper's Table 3)
    # Early stopping (docs/method.md "Early stopping"): a stage ends after `patience` epochs in a row without a
    # validation GAP above the best so far + min_delta; `epochs` is the maximum. 0 = off (always `epochs`).
    patience: int = 0
    min_delta: float = 0.0
    # Serial students: the frozen teacher's E_T and logits computed once and cached beside the teacher file
    # (fewframes.training.teacher_cache) instead of a teacher forward on all frames every batch. Same losses
    # up to float rounding; False = the live teacher (L_rep^I always uses the live teacher).
    cache_teacher_outputs: bool = True

    def __post_init__(self) -> None:
        if self.epochs < 1:
            raise ConfigError(f"TrainConfig.epochs must be >= 1, got {self.epochs}")
        if self.batch_size < 1:
            raise ConfigError(f"TrainConfig.batch_size must be >= 1, got {self.batch_size}")
        if not 0.0 <= self.learning_rate < float("inf"):  # written so that NaN fails too; 0 freezes (a probe)
            raise ConfigError(f"TrainConfig.learning_rate must be >= 0 and finite, got {self.learning_rate}")
        if not 0.0 < self.lr_decay <= 1.0:
            raise ConfigError(f"TrainConfig.lr_decay must be in (0, 1], got {self.lr_decay}")
        if not self.weight_decay >= 0.0:
            raise ConfigError(f"TrainConfig.weight_decay must be >= 0, got {self.weight_decay}")
        if not 0.0 < self.train_fraction <= 1.0:
            raise ConfigError(f"TrainConfig.train_fraction must be in (0, 1], got {self.train_fraction}")
        if self.patience < 0:
            raise ConfigError(f"TrainConfig.patience must be >= 0 (0 = no early stopping), got {self.patience}")
        if not self.min_delta >= 0.0:  # written so that NaN fails too
            raise ConfigError(f"TrainConfig.min_delta must be >= 0, got {self.min_delta}")


@dataclass(frozen=True)
class StudentConfig(_DictMixin):
    """What a student (or a from-scratch k-frame baseline) reads and how it is distilled."""

    k: int
    frame_selection: str = "uniform"
    loss: str = "rep_pred_ce"  # one of DISTILL_LOSSES, or a control of CONTROL_LOSSES (serial); ignored for baselines
    mode: str = "serial"  # one of TRAINING_MODES
    matching: str = "final"  # final | intermediate (L_rep vs L_rep^I)
    pred_distance: str = "kl"  # kl | mse
    rep_weight: float = 1.0
    pred_weight: float = 1.0
    ce_weight: float = 1.0
    block_length: int | None = None  # None: the rule in fewframes.models.student_block_length(k)
    # loss="rep", serial: epochs of stage 1 (L_rep alone) out of TrainConfig.epochs; the rest fine-tune with
    # L_CE. None: half of the epochs (rounded down, at least 1).
    rep_stage_epochs: int | None = None

    def __post_init__(self) -> None:
        if self.k < 1:
            raise ConfigError(f"StudentConfig.k must be >= 1, got {self.k}")
        if self.frame_selection not in FRAME_SELECTIONS:
            raise ConfigError(
                f"StudentConfig.frame_selection must be one of {', '.join(FRAME_SELECTIONS)}, got {self.frame_selection!r}"
            )
        if self.loss not in STUDENT_LOSSES:
            raise ConfigError(f"StudentConfig.loss must be one of {', '.join(STUDENT_LOSSES)}, got {self.loss!r}")
        if self.mode not in TRAINING_MODES:
            raise ConfigError(f"StudentConfig.mode must be one of {', '.join(TRAINING_MODES)}, got {self.mode!r}")
        if self.loss in CONTROL_LOSSES and self.mode != "serial":
            raise ConfigError(
                f"StudentConfig.loss={self.loss!r} (the warm-start control) needs mode='serial', got {self.mode!r}"
            )
        if self.matching not in ("final", "intermediate"):
            raise ConfigError(f"StudentConfig.matching must be final or intermediate, got {self.matching!r}")
        if self.pred_distance not in ("kl", "mse"):
            raise ConfigError(f"StudentConfig.pred_distance must be kl or mse, got {self.pred_distance!r}")

    def rep_stages(self, epochs: int) -> tuple[int, int]:
        """loss="rep", serial: the epochs of stage 1 (L_rep alone) and of stage 2 (L_CE) out of ``epochs``
        (TrainConfig.epochs); ConfigError when stage 2 would get none."""
        stage1 = self.rep_stage_epochs or max(1, epochs // 2)
        if epochs - stage1 < 1:
            raise ConfigError(
                f"StudentConfig.loss='rep' trains in two stages: TrainConfig.epochs ({epochs}) must exceed "
                f"StudentConfig.rep_stage_epochs ({stage1})"
            )
        return stage1, epochs - stage1


@dataclass(frozen=True)
class DataConfig(_DictMixin):
    """The bundled synthetic data set and the split."""

    videos: int = 2000
    classes: int = 100
    seed: int = 0
    validation_fraction: float = 0.1
    test_fraction: float = 0.2


@dataclass(frozen=True)
class Preset(_DictMixin):
    """A named bundle of sizes: data, model and training. ``fewframes run --preset NAME``."""

    name: str
    data: DataConfig
    hidden_size: int
    num_layers: int
    teacher_block_length: int
    train: TrainConfig
    ks: tuple[int, ...] = (10, 30)
    losses: tuple[str, ...] = ("rep_pred_ce",)
    family: str = "hrnn"  # the model family of the preset's models (ModelConfig.family)
    clusters: int = ModelConfig.clusters  # netvlad/nextvlad: ModelConfig.clusters

    def model_config(
        self, num_classes: int | None = None, block_length: int | None = None, family: str | None = None
    ) -> ModelConfig:
        return ModelConfig(
            num_classes=num_classes or self.data.classes,
            hidden_size=self.hidden_size,
            num_layers=self.num_layers,
            block_length=block_length or self.teacher_block_length,
            family=family or self.family,
            clusters=self.clusters,
        )


PRESETS: dict[str, Preset] = {
    # Unit tests and the pipeline smoke test: seconds per step.
    "tiny": Preset(
        name="tiny",
        data=DataConfig(videos=160, classes=12, seed=0),
        hidden_size=16,
        num_layers=2,
        teacher_block_length=20,
        train=TrainConfig(epochs=2, batch_size=32, seed=0),
        ks=(6, 30),
        losses=("rep_pred_ce",),
    ),
    # The README's main job on a 2-core laptop: about ten minutes for the whole DAG.
    # lr 6e-3, not the paper's 1e-3: 5 epochs are only 110 Adam steps here, and at 1e-3 the teacher ended
    # at the label prior (train L_CE 10.01 vs 10.07) and below Uniform-30 (test GAP .352 vs .389); at 6e-3
    # both train (.621 vs .626). Same run time. docs/method.md "When the teacher is a skyline".
    "demo": Preset(
        name="demo",
        data=DataConfig(videos=2000, classes=50, seed=0),
        hidden_size=64,
        num_layers=2,
        teacher_block_length=20,
        train=TrainConfig(epochs=5, batch_size=64, learning_rate=6e-3, seed=0),
        ks=(10, 30),
        losses=("rep", "rep_ce", "rep_pred_ce"),
    ),
    # The committed run of the paper's full grid (docs/results/): about an hour of a shared 2-core CPU.
    # A higher learning rate than the paper's so 3 epochs get near convergence (measured: teacher val GAP
    # .40/.59/.64 at 6e-3 vs .29/.38/.47 at 1e-3); a larger test split (360 videos) for steadier GAPs.
    "report": Preset(
        name="report",
        data=DataConfig(videos=1200, classes=25, seed=0, validation_fraction=0.1, test_fraction=0.3),
        hidden_size=32,
        num_layers=2,
        teacher_block_length=20,
        train=TrainConfig(epochs=3, batch_size=32, learning_rate=6e-3, seed=0),
        ks=(6, 10, 15, 20, 30),
        losses=DISTILL_LOSSES,
    ),
    # The committed run (docs/results/) with every model trained to its plateau: the skyline study
    # (benchmarks/skyline_study.py, docs/method.md "When the teacher is a skyline") found NetVLAD with 8
    # clusters the family whose all-frames teacher beats every Uniform-k at these sizes (the hierarchical
    # LSTM's does not). NetVLAD learns slowly here (L2-normalised VLAD into a linear projection): lr 1e-2,
    # up to 150 epochs, patience 20 (patience 10 stopped Random-15 in the early flat stretch at 0.638; with
    # 20 it reached 0.734; several models were still improving at epoch 100). About 1.6 CPU-s a teacher
    # epoch, ~0.2 a k-frame epoch on this machine (docs/plateau_preset.md).
    "plateau": Preset(
        name="plateau",
        data=DataConfig(videos=1200, classes=25, seed=0, validation_fraction=0.1, test_fraction=0.3),
        hidden_size=64,
        num_layers=2,
        teacher_block_length=20,
        train=TrainConfig(epochs=150, batch_size=32, learning_rate=1e-2, patience=20, seed=0),
        ks=(6, 10, 15, 20, 30),
        losses=DISTILL_LOSSES,
        family="netvlad",
        clusters=8,
    ),
    # The paper's sizes (GPU node pools).
    "paper": Preset(
        name="paper",
        data=DataConfig(videos=20000, classes=3862, seed=0),
        hidden_size=1024,
        num_layers=2,
        teacher_block_length=20,
        train=TrainConfig(),
        ks=(6, 10, 15, 20, 30),
        losses=DISTILL_LOSSES,
    ),
}


_N = TypeVar("_N", int, float)


def env_number(
    name: str,
    default: _N,
    error: Callable[[str], Exception],
    *,
    kind: Callable[[str], _N] = int,  # type: ignore[assignment]
    what: str = "a whole number",
    positive: bool = False,
) -> _N:
    """A numeric setting from environment variable ``name`` (``default`` when unset or blank), >= 0 (or > 0
    with ``positive``); anything else raises ``error`` with one line naming the variable."""
    text = os.environ.get(name, "").strip()
    if not text:
        return default
    try:
        value = kind(text)
    except ValueError:
        raise error(f"${name}: expected {what}, got {text!r}") from None
    if not (value > 0 if positive else value >= 0):  # written so that NaN fails too
        raise error(f"${name}: must be {'> 0' if positive else '>= 0'}, got {text}")
    return value


def get_preset(name: str) -> Preset:
    try:
        return PRESETS[name]
    except KeyError:
        raise ConfigError(f"--preset must be one of {', '.join(PRESETS)}, got {name!r}") from None


__all__ = [
    "AUDIO_DIM",
    "BASELINE_SELECTIONS",
    "CONTROL_LOSSES",
    "DISTILL_LOSSES",
    "FEATURE_DIM",
    "FRAME_SELECTIONS",
    "MAX_FRAMES",
    "MODEL_CLASSIFIERS",
    "RGB_DIM",
    "STUDENT_LOSSES",
    "TRAINING_MODES",
    "ConfigError",
    "DataConfig",
    "ModelConfig",
    "PRESETS",
    "Preset",
    "StudentConfig",
    "TrainConfig",
    "data_widths",
    "env_number",
    "feature_parts",
    "get_preset",
]
