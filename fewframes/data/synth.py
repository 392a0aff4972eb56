"""A synthetic YouTube-8M: real-format frame-level TFRecords from a documented generative model.

The model is specified in ``docs/synthetic_data.md`` (the spec; this module implements it and must not
drift from it). In short: Zipf-like class popularity, classes grouped into co-occurring topics, 1-5 labels
per video; each video is an intro, a run of shots (each showing one of its labels or background) and an
outro; some labels are "brief" (one short shot); frames are latent class prototypes plus per-video,
per-shot and per-frame noise, projected to 1024-d rgb and 128-d audio and quantised as YouTube-8M.

Every video is generated from its own random stream ``SeedSequence([seed, 1, index])`` and the shared
"world" (prototypes, projections) from ``SeedSequence([seed, 0])``, so a video does not depend on the
shard count and the same seed gives byte-identical shards (same numpy version and platform).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from fewframes.config import AUDIO_DIM, MAX_FRAMES, PRESETS, RGB_DIM, DataConfig
from fewframes.data.yt8m import Video, quantize, write_tfrecord
from fewframes.errors import DataError

# Frame content codes besides class ids (>= 0).
BACKGROUND = -1
TITLE = -2  # intro / outro title-card frames
ALL_LABELS = -3  # redundant world: the frame shows every label of its video at once

# Worlds (docs/synthetic_data.md, "Worlds"): checks of the benchmark itself.
# standard: the spec; null: the frames are drawn from an independent label set, so labels carry no
# information a frame could show (every model should score the label-prior GAP); redundant: every frame
# shows every label of its video with no per-shot or per-frame noise, so any k frames carry what all
# frames carry (a teacher should tie the k-frame models).
WORLDS: tuple[str, ...] = ("standard", "null", "redundant")


@dataclass(frozen=True)
class GenerativeModel:
    """The fixed parameters of the generative model (docs/synthetic_data.md, section "Parameters").

    These are a spec, not tuning knobs: change them only together with the document.
    """

    min_frames: int = 120
    max_frames: int = MAX_FRAMES
    fixed_frames: int | None = None  # benchmarks: every video this long (overrides min/max)
    label_trials: int = 4  # labels per video = 1 + Binomial(label_trials, label_p): 1..5, mean 3
    label_p: float = 0.5
    zipf_exponent: float = 1.0  # class c drawn with weight (c + 1) ** -zipf_exponent
    classes_per_topic: int = 8
    same_topic_p: float = 0.75  # a further label comes from the first label's topic with this probability
    topic_share: float = 0.5  # rho: prototype = sqrt(rho) * topic + sqrt(1 - rho) * own direction
    brief_p: float = 0.3  # a non-first label is brief (one short shot) with this probability
    brief_shot: tuple[int, int] = (2, 6)  # frames, inclusive
    shot_length: tuple[int, int] = (6, 24)  # frames, inclusive
    background_p: float = 0.2  # a shot beyond the ones each label needs shows background
    first_label_weight: float = 2.0  # the first (main) label fills shots twice as often as another
    intro: tuple[int, int] = (0, 6)  # title-card frames at the start, inclusive
    outro: tuple[int, int] = (2, 12)  # title-card frames at the end, inclusive
    latent_dim: int = 64
    instance_noise: float = 0.5  # per video and label: this video's version of the class
    style_noise: float = 0.5  # per video: camera / lighting, added to every frame
    shot_noise: float = 1.0  # per shot, shared by the shot's frames
    frame_noise: float = 2.0  # per frame
    observation_noise: float = 0.1  # per feature dimension, after projection
    feature_std: float = 0.5  # target std of a feature before quantisation (range -2..2)
    world: str = "standard"  # one of WORLDS

    def __post_init__(self) -> None:
        if self.world not in WORLDS:
            raise DataError(f"world must be one of {', '.join(WORLDS)}, got {self.world!r}")


@dataclass(frozen=True)
class SynthPreset:
    """A named data size: the shared ``DataConfig`` plus, for benchmarks, a fixed video length."""

    data: DataConfig
    fixed_frames: int | None = None


# tiny/demo come from the shared presets; bench (benchmarks only) lives here.
SYNTH_PRESETS: dict[str, SynthPreset] = {
    "tiny": SynthPreset(PRESETS["tiny"].data),
    "demo": SynthPreset(PRESETS["demo"].data),
    "bench": SynthPreset(DataConfig(videos=1024, classes=100, seed=0), fixed_frames=MAX_FRAMES),
}


@dataclass
class SynthVideo:
    """A generated video and its ground truth: what each frame shows and which labels are brief."""

    video: Video
    frame_content: np.ndarray  # int16[n]: class id, BACKGROUND or TITLE
    shot_id: np.ndarray  # int32[n]: shot number, 0 (intro) upwards; a shot is a contiguous run
    brief_labels: np.ndarray  # int64[]: labels shown in a single short shot


class World:
    """What all videos of one seed share: class popularity, topics, prototypes and projections."""

    def __init__(self, num_classes: int, seed: int, model: GenerativeModel | None = None) -> None:
        if num_classes < 2:
            raise DataError(f"--classes must be >= 2, got {num_classes}")
        self.model = model or GenerativeModel()
        self.num_classes = num_classes
        self.seed = seed
        m = self.model
        shortest = m.fixed_frames or m.min_frames
        needed = m.intro[1] + m.outro[1] + m.shot_length[1] + m.brief_shot[1]
        if not needed <= shortest <= MAX_FRAMES or (m.fixed_frames is None and m.max_frames > MAX_FRAMES):
            raise DataError(f"synthetic video length must be in [{needed}, {MAX_FRAMES}] frames, got {shortest}")
        rng = np.random.default_rng(np.random.SeedSequence([seed, 0]))
        weights = (np.arange(num_classes) + 1.0) ** -m.zipf_exponent
        self.class_p = weights / weights.sum()
        self.num_topics = max(2, math.ceil(num_classes / m.classes_per_topic))
        # A seeded permutation so each topic mixes popular and rare classes.
        self.topic_of = (rng.permutation(num_classes) % self.num_topics).astype(np.int64)
        d = m.latent_dim
        self.topic_vectors = rng.standard_normal((self.num_topics, d))
        own = rng.standard_normal((num_classes, d))
        rho = m.topic_share
        self.prototypes = math.sqrt(rho) * self.topic_vectors[self.topic_of] + math.sqrt(1 - rho) * own
        self.title_prototype = rng.standard_normal(d)
        # Scale the projections so a feature's std is about feature_std (rarely clipped at +-2).
        latent_var = 1.0 + m.instance_noise**2 + m.style_noise**2 + m.shot_noise**2 + m.frame_noise**2
        signal_std = math.sqrt(max(m.feature_std**2 - m.observation_noise**2, 1e-6))
        scale = signal_std / math.sqrt(d * latent_var)
        self.rgb_projection = (rng.standard_normal((d, RGB_DIM)) * scale).astype(np.float32)
        self.audio_projection = (rng.standard_normal((d, AUDIO_DIM)) * scale).astype(np.float32)

    # -- labels ---------------------------------------------------------------------------------
    def sample_labels(self, rng: np.random.Generator) -> np.ndarray:
        """1..5 distinct labels: the first by popularity, the rest mostly from the first one's topic."""
        m = self.model
        count = min(1 + int(rng.binomial(m.label_trials, m.label_p)), self.num_classes)
        labels = [int(rng.choice(self.num_classes, p=self.class_p))]
        topic = self.topic_of[labels[0]]
        while len(labels) < count:
            available = np.ones(self.num_classes, dtype=bool)
            available[labels] = False
            if rng.random() < m.same_topic_p and np.any(available & (self.topic_of == topic)):
                available &= self.topic_of == topic
            p = np.where(available, self.class_p, 0.0)
            labels.append(int(rng.choice(self.num_classes, p=p / p.sum())))
        return np.asarray(labels, dtype=np.int64)

    # -- frame layout ---------------------------------------------------------------------------
    def layout(self, rng: np.random.Generator, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """What each frame shows: (content int16[n], shot id int32[n], brief labels int64[])."""
        m = self.model
        n = m.fixed_frames or int(rng.integers(m.min_frames, m.max_frames + 1))
        intro = int(rng.integers(m.intro[0], m.intro[1] + 1))
        outro = int(rng.integers(m.outro[0], m.outro[1] + 1))
        body = n - intro - outro
        is_brief = np.zeros(len(labels), dtype=bool)
        is_brief[1:] = rng.random(len(labels) - 1) < m.brief_p
        regular, brief = labels[~is_brief], labels[is_brief]
        # Tile the body with shots; the last one is cut at the body's end.
        lengths = rng.integers(m.shot_length[0], m.shot_length[1] + 1, size=body // m.shot_length[0] + 1)
        ends = np.cumsum(lengths)
        num_shots = int(np.searchsorted(ends, body, side="left")) + 1
        lengths = lengths[:num_shots].copy()
        lengths[-1] -= int(ends[num_shots - 1]) - body
        # Every regular label gets one shot at a random place; the other shots are background or a
        # regular label (the first, main label twice as likely as each other).
        shot_content = np.empty(num_shots, dtype=np.int64)
        order = rng.permutation(num_shots)
        shot_content[order[: len(regular)]] = regular
        rest = order[len(regular) :]
        label_weights = np.where(np.arange(len(regular)) == 0, m.first_label_weight, 1.0)
        label_pick = rng.choice(len(regular), size=len(rest), p=label_weights / label_weights.sum())
        shot_content[rest] = np.where(rng.random(len(rest)) < m.background_p, BACKGROUND, regular[label_pick])
        content = np.full(n, TITLE, dtype=np.int16)
        content[intro : intro + body] = np.repeat(shot_content, lengths)
        shot_id = np.zeros(n, dtype=np.int32)
        shot_id[intro : intro + body] = np.repeat(np.arange(1, num_shots + 1), lengths)
        shot_id[intro + body :] = num_shots + 1
        # Brief labels: one short shot each, cut into the body at a random place.
        next_shot = num_shots + 2
        for label in brief:
            length = int(rng.integers(m.brief_shot[0], m.brief_shot[1] + 1))
            start = intro + int(rng.integers(0, body - length + 1))
            content[start : start + length] = label
            shot_id[start : start + length] = next_shot
            next_shot += 1
        # A later shot may have covered an earlier brief one entirely: then that label is not brief but
        # absent; re-show it so every label stays visible (rare).
        for label in brief:
            if not np.any(content == label):
                start = intro + int(rng.integers(0, body - m.brief_shot[0] + 1))
                content[start : start + m.brief_shot[0]] = label
                shot_id[start : start + m.brief_shot[0]] = next_shot
                next_shot += 1
        # A shot interrupted by a brief one continues as a new shot: number the contiguous runs.
        shot_id = np.concatenate([[0], np.cumsum(np.diff(shot_id) != 0)]).astype(np.int32)
        return content, shot_id, brief

    # -- features -------------------------------------------------------------------------------
    def generate_range(self, start: int, stop: int) -> Iterator[SynthVideo]:
        """Videos ``start .. stop-1``, with one BLAS thread: the per-video products are small (threads
        only contend) and the bytes then do not depend on the machine's core count."""
        from threadpoolctl import threadpool_limits  # installed with scikit-learn

        with threadpool_limits(1, "blas"):
            for index in range(start, stop):
                yield self.generate(index)

    def generate(self, index: int) -> SynthVideo:
        """Video number ``index`` of this world (deterministic for (seed, index))."""
        if self.model.world == "redundant":
            return self._generate_redundant(index)
        m = self.model
        rng = np.random.default_rng(np.random.SeedSequence([self.seed, 1, index]))
        labels = self.sample_labels(rng)
        shown = labels
        if m.world == "null":
            # The frames show an independent draw of labels (its own stream), the video keeps its own:
            # frames have the standard world's statistics but say nothing about the video's labels.
            shown = self.sample_labels(np.random.default_rng(np.random.SeedSequence([self.seed, 2, index])))
        content, shot_id, brief = self.layout(rng, shown)
        n, d = content.shape[0], m.latent_dim
        # This video's version of each label, its background scene and its title card.
        instance = self.prototypes[shown] + m.instance_noise * rng.standard_normal((len(shown), d))
        background = rng.standard_normal(d)
        title = self.title_prototype + m.instance_noise * rng.standard_normal(d)
        rows = np.concatenate([instance, background[None], title[None]])
        # Row of ``rows`` per frame: the shown labels first, then background (-1 -> last but one), title (-2 -> last).
        row_lookup = np.empty(self.num_classes + 2, dtype=np.int64)
        row_lookup[shown] = np.arange(len(shown))
        row_lookup[BACKGROUND], row_lookup[TITLE] = len(shown), len(shown) + 1
        row_of = row_lookup[content]
        style = m.style_noise * rng.standard_normal(d)
        shots = m.shot_noise * rng.standard_normal((int(shot_id[-1]) + 1, d))
        latent = rows[row_of] + style + shots[shot_id] + m.frame_noise * rng.standard_normal((n, d))
        latent = latent.astype(np.float32)
        # Audio hears the topic (or the background / title), not the exact class.
        audio_rows = np.concatenate([self.topic_vectors[self.topic_of[shown]], background[None], title[None]])
        audio_latent = (audio_rows[row_of] + style + shots[shot_id]).astype(np.float32)
        audio_latent += (m.frame_noise * rng.standard_normal((n, d))).astype(np.float32)
        rgb = latent @ self.rgb_projection
        rgb += rng.standard_normal((n, RGB_DIM), dtype=np.float32) * np.float32(m.observation_noise)
        audio = audio_latent @ self.audio_projection
        audio += rng.standard_normal((n, AUDIO_DIM), dtype=np.float32) * np.float32(m.observation_noise)
        video = Video(
            id=video_id(self.seed, index),
            labels=np.sort(labels),
            rgb=quantize(rgb),
            audio=quantize(audio),
        )
        # Brief labels: the video's labels shown in a single short shot (in the null world only by chance).
        brief = np.intersect1d(brief, labels) if m.world == "null" else np.sort(brief)
        return SynthVideo(video=video, frame_content=content, shot_id=shot_id, brief_labels=brief)

    def _generate_redundant(self, index: int) -> SynthVideo:
        """Redundant world: every frame is the video's mixture of all its labels (the instances summed over
        sqrt(#labels), so its scale matches one label's) plus the per-video style, with no title cards,
        background, brief shots, per-shot or per-frame latent noise; frames differ only by the observation
        noise after projection. Any one frame carries (nearly) all a video's frames carry."""
        m = self.model
        rng = np.random.default_rng(np.random.SeedSequence([self.seed, 1, index]))
        labels = self.sample_labels(rng)
        n = m.fixed_frames or int(rng.integers(m.min_frames, m.max_frames + 1))
        d = m.latent_dim
        instance = self.prototypes[labels] + m.instance_noise * rng.standard_normal((len(labels), d))
        style = m.style_noise * rng.standard_normal(d)
        latent = (instance.sum(0) / math.sqrt(len(labels)) + style).astype(np.float32)
        audio_latent = (self.topic_vectors[self.topic_of[labels]].sum(0) / math.sqrt(len(labels)) + style).astype(np.float32)
        rgb = np.repeat((latent @ self.rgb_projection)[None], n, axis=0)
        rgb += rng.standard_normal((n, RGB_DIM), dtype=np.float32) * np.float32(m.observation_noise)
        audio = np.repeat((audio_latent @ self.audio_projection)[None], n, axis=0)
        audio += rng.standard_normal((n, AUDIO_DIM), dtype=np.float32) * np.float32(m.observation_noise)
        video = Video(id=video_id(self.seed, index), labels=np.sort(labels), rgb=quantize(rgb), audio=quantize(audio))
        return SynthVideo(
            video=video,
            frame_content=np.full(n, ALL_LABELS, dtype=np.int16),
            shot_id=np.zeros(n, dtype=np.int32),
            brief_labels=np.zeros(0, dtype=np.int64),
        )


def video_id(seed: int, index: int) -> str:
    """The id of synthetic video ``index`` of ``seed`` (unique across seeds)."""
    return f"synth-s{seed}-{index:06d}"


def shard_name(shard: int, num_shards: int) -> str:
    return f"synth-{shard:05d}-of-{num_shards:05d}.tfrecord"


def default_shards(videos: int) -> int:
    """About 500 videos (~100 MB) per shard, like the official shards' size order."""
    return max(1, round(videos / 500))


def generate_synthetic(
    out_dir: str | os.PathLike[str],
    data: DataConfig,
    *,
    shards: int | None = None,
    model: GenerativeModel | None = None,
    progress: bool = True,
    vocabulary: bool = False,
) -> dict[str, object]:
    """Write ``data.videos`` synthetic videos as TFRecord shards + ``manifest.json`` under ``out_dir``.

    Returns the manifest (sizes, parameters, label counts). Shards are written atomically; the manifest
    last, so its presence means a complete data set. ``vocabulary``: also write ``vocabulary.csv``, class
    names in YouTube-8M's vocabulary.csv layout (``synthetic class 7 (topic 2)``, with each class's video
    count as TrainVideoCount), to try ``data ingest --vocabulary`` with (the shards are the same either way).
    """
    from tqdm import tqdm

    if data.videos < 1:
        raise DataError(f"--videos must be >= 1, got {data.videos}")
    num_shards = shards or default_shards(data.videos)
    if not 1 <= num_shards <= data.videos:
        raise DataError(f"--shards must be between 1 and --videos ({data.videos}), got {num_shards}")
    world = World(data.classes, data.seed, model)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    bounds = np.linspace(0, data.videos, num_shards + 1).round().astype(int)
    label_counts = np.zeros(data.classes, dtype=np.int64)
    frames = 0
    brief = 0
    with tqdm(total=data.videos, desc="synth", unit="video", disable=not progress) as bar:
        for shard in range(num_shards):

            def videos(start: int = int(bounds[shard]), stop: int = int(bounds[shard + 1])):
                nonlocal frames, brief
                for item in world.generate_range(start, stop):
                    label_counts[item.video.labels] += 1
                    frames += item.video.num_frames
                    brief += len(item.brief_labels)
                    bar.update(1)
                    yield item.video

            write_tfrecord(out / shard_name(shard, num_shards), videos())
    manifest: dict[str, object] = {
        "format": "youtube-8m frame-level (tf.train.SequenceExample)",
        "generator": "fewframes.data.synth",
        "videos": data.videos,
        "classes": data.classes,
        "seed": data.seed,
        "shards": [shard_name(s, num_shards) for s in range(num_shards)],
        "frames": frames,
        "brief_labels": brief,
        "topics": world.num_topics,
        "label_counts": {str(c): int(n) for c, n in enumerate(label_counts)},
        "model": asdict(world.model),
    }
    if vocabulary:
        _write_vocabulary(out / "vocabulary.csv", world, label_counts)
        manifest["vocabulary"] = "vocabulary.csv"
    temp = out / ".manifest.json.tmp"
    temp.write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    temp.replace(out / "manifest.json")
    return manifest


def _write_vocabulary(path: Path, world: World, label_counts: np.ndarray) -> None:
    """Class names for the synthetic classes, in YouTube-8M's vocabulary.csv layout, written atomically."""
    header = "Index,TrainVideoCount,KnowledgeGraphId,Name,WikiUrl,Vertical1,Vertical2,Vertical3,WikiDescription"
    lines = [header] + [
        f"{c},{int(label_counts[c])},,synthetic class {c} (topic {int(world.topic_of[c])}),,Synthetic,,,"
        for c in range(world.num_classes)
    ]
    temp = path.with_name(f".{path.name}.tmp")
    temp.write_text("\n".join(lines) + "\n", encoding="utf-8")
    temp.replace(path)


__all__ = [
    "ALL_LABELS",
    "BACKGROUND",
    "GenerativeModel",
    "SYNTH_PRESETS",
    "SynthPreset",
    "SynthVideo",
    "TITLE",
    "WORLDS",
    "World",
    "default_shards",
    "generate_synthetic",
    "shard_name",
    "video_id",
]
