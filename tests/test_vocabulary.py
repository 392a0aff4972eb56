"""Bring your own videos (issue 15): vocabularies, class counts, YouTube-8M releases, other feature widths.

Real parts throughout: TFRecords written in the official schema (``fewframes.data.yt8m``), ``fewframes data
ingest`` through the command line, real frame stores. Videos are short (4-8 frames) so that everything is fast.
"""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from fewframes.benchmark import counted_flops
from fewframes.cli import main
from fewframes.config import ModelConfig, data_widths
from fewframes.data.store import FrameStore
from fewframes.data.vocabulary import RELEASES, load_vocabulary, parse_vocabulary
from fewframes.data.yt8m import Video, write_tfrecord
from fewframes.errors import DataError
from fewframes.evaluation import evaluate
from fewframes.models import build_model, model_flops, prepare_frames

YT8M_HEADER = "Index,TrainVideoCount,KnowledgeGraphId,Name,WikiUrl,Vertical1,Vertical2,Vertical3,WikiDescription"


def write_videos(
    folder: Path, classes: int, *, videos: int = 60, rgb_dim: int = 1024, audio_dim: int = 128,
    id_key: str = "id", ids: str = "own", seed: int = 0, shards: int = 2,
) -> list[Video]:
    """``videos`` short videos whose labels cover 0..classes-1 (each class at least once), in ``shards`` shards.
    ``ids``: "own" (``clip-0001``...) or "official" (4 characters of [A-Za-z0-9_-], as YouTube-8M's)."""
    rng = np.random.default_rng(seed)
    alphabet = np.array(list("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-"))
    out = []
    for i in range(videos):
        labels = sorted({i % classes, int(rng.integers(0, classes))})
        n = int(rng.integers(4, 9))
        video_id = f"clip-{i:04d}" if ids == "own" else "".join(alphabet[[i // 64 % 64, i % 64, 7, 9]])
        out.append(Video(
            video_id, np.asarray(labels, dtype=np.int64), rng.integers(0, 256, (n, rgb_dim), dtype=np.uint8),
            rng.integers(0, 256, (n, audio_dim), dtype=np.uint8), id_key=id_key,
        ))  # fmt: skip
    folder.mkdir(parents=True, exist_ok=True)
    bounds = np.linspace(0, videos, shards + 1).astype(int)
    for shard in range(shards):
        write_tfrecord(folder / f"part-{shard}.tfrecord", out[bounds[shard] : bounds[shard + 1]])
    return out


def write_yt8m_vocabulary(path: Path, classes: int) -> dict[int, str]:
    """A vocabulary in YouTube-8M's vocabulary.csv layout (names with commas and quotes, as the real one has)."""
    names = {i: f'Class {i}, "the {i}th"' if i % 7 == 0 else f"Class {i}" for i in range(classes)}
    lines = [YT8M_HEADER]
    for i, name in names.items():
        quoted = '"' + name.replace('"', '""') + '"'
        lines.append(f"{i},{1000 - i},/m/0{i:04x},{quoted},https://en.wikipedia.org/wiki/C{i},Arts,,,\"A class, described.\"")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return names


def ingest_cli(capsys, *args: str) -> tuple[int, str, str]:
    code = main(["data", "ingest", "--quiet", *args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


# -- class counts -------------------------------------------------------------------------------------------


def test_without_a_vocabulary_the_classes_come_from_the_data_and_the_assumption_is_printed_once(tmp_path, capsys):
    write_videos(tmp_path / "tf", classes=50)
    code, out, _ = ingest_cli(capsys, "--src", str(tmp_path / "tf"), "--out", str(tmp_path / "store"))
    assert code == 0
    store = FrameStore.open(tmp_path / "store")
    assert store.num_classes == 50 and store.class_names is None
    assert store.class_source["from"] == "data"
    notes = [line for line in out.splitlines() if "assumed" in line]
    assert len(notes) == 1
    assert "classes: 50 assumed from the data (the largest label, 49, + 1" in notes[0]
    assert "--vocabulary FILE" in notes[0] and "--num-classes N" in notes[0]


def test_a_vocabulary_sets_the_classes_and_its_names_are_kept_with_the_store(tmp_path, capsys):
    write_videos(tmp_path / "tf", classes=50, videos=40)  # labels 0..39 seen; the vocabulary says 60
    names = write_yt8m_vocabulary(tmp_path / "vocabulary.csv", 60)
    code, out, _ = ingest_cli(capsys, "--src", str(tmp_path / "tf"), "--out", str(tmp_path / "store"),
                              "--vocabulary", str(tmp_path / "vocabulary.csv"), "--workers", "2")
    assert code == 0 and "assumed" not in out
    store = FrameStore.open(tmp_path / "store")
    assert store.num_classes == 60
    assert store.class_names == [names[i] for i in range(60)]
    assert store.class_source == {"from": "vocabulary", "file": str(tmp_path / "vocabulary.csv")}
    assert parse_vocabulary((tmp_path / "store" / "vocabulary.csv").read_text(), "kept").names == names


def test_a_label_outside_the_vocabulary_is_one_line_naming_the_record(tmp_path, capsys):
    write_videos(tmp_path / "tf", classes=50)
    (tmp_path / "gappy.csv").write_text("index,name\n" + "".join(f"{i},c{i}\n" for i in range(50) if i != 17))
    code, _, err = ingest_cli(capsys, "--src", str(tmp_path / "tf"), "--out", str(tmp_path / "store"),
                              "--vocabulary", str(tmp_path / "gappy.csv"))
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "part-0.tfrecord record 17 (video 'clip-0017'): label 17 is not in the vocabulary" in err
    assert not (tmp_path / "store").exists()

    (tmp_path / "small.csv").write_text("".join(f"{i},c{i}\n" for i in range(30)))  # no header: index,name rows
    code, _, err = ingest_cli(capsys, "--src", str(tmp_path / "tf"), "--out", str(tmp_path / "store"),
                              "--vocabulary", str(tmp_path / "small.csv"))
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "part-0.tfrecord record " in err and "out of range [0, 30) (the vocabulary" in err and "has 30 classes)" in err


def test_an_explicit_class_count_below_the_labels_is_one_line(tmp_path, capsys):
    write_videos(tmp_path / "tf", classes=50)
    code, _, err = ingest_cli(capsys, "--src", str(tmp_path / "tf"), "--out", str(tmp_path / "store"), "--num-classes", "40")
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "part-0.tfrecord record " in err and "out of range [0, 40)" in err
    code, _, _ = ingest_cli(capsys, "--src", str(tmp_path / "tf"), "--out", str(tmp_path / "store"), "--num-classes", "64")
    assert code == 0 and FrameStore.open(tmp_path / "store").num_classes == 64


@pytest.mark.parametrize("release", ["2017", "2018"])
def test_an_official_release_is_recognised_from_its_records(tmp_path, capsys, release):
    key = RELEASES[release].id_key
    write_videos(tmp_path / "tf", classes=50, id_key=key, ids="official")
    code, out, _ = ingest_cli(capsys, "--src", str(tmp_path / "tf"), "--out", str(tmp_path / "store"))
    assert code == 0
    store = FrameStore.open(tmp_path / "store")
    assert store.num_classes == RELEASES[release].num_classes == {"2017": 4716, "2018": 3862}[release]
    assert store.class_source["from"] == "release" and store.class_source["release"] == release
    note = next(line for line in out.splitlines() if line.startswith("classes: "))
    assert f"{RELEASES[release].name} vocabulary" in note and f"'{key}'" in note


def test_own_ids_under_the_2017_key_are_not_taken_for_the_release(tmp_path, capsys):
    write_videos(tmp_path / "tf", classes=50, id_key="video_id", ids="own")
    assert ingest_cli(capsys, "--src", str(tmp_path / "tf"), "--out", str(tmp_path / "store"))[0] == 0
    assert FrameStore.open(tmp_path / "store").num_classes == 50


# -- feature widths -----------------------------------------------------------------------------------------


def test_other_feature_widths_are_read_from_the_records(tmp_path, capsys):
    videos = write_videos(tmp_path / "tf", classes=5, videos=8, rgb_dim=2048, audio_dim=128)
    code, out, _ = ingest_cli(capsys, "--src", str(tmp_path / "tf"), "--out", str(tmp_path / "store"))
    assert code == 0 and "rgb 2048 + audio 128" in out
    store = FrameStore.open(tmp_path / "store")
    assert (store.rgb_dim, store.audio_dim, store.feature_dim) == (2048, 128, 2176)
    frames = store.read_frames(3, [0, 2])
    assert np.array_equal(frames, np.concatenate([videos[3].rgb[[0, 2]], videos[3].audio[[0, 2]]], axis=1))
    assert store.bytes_read == 2 * 2176

    code, _, err = ingest_cli(capsys, "--src", str(tmp_path / "tf"), "--out", str(tmp_path / "declared"), "--rgb-dim", "1024")
    assert code == 2 and "record 0" in err and "'rgb' frame 0 has 2048 bytes, expected 1024" in err


# -- vocabulary files ---------------------------------------------------------------------------------------


def test_vocabulary_files_in_both_layouts_and_their_faults(tmp_path):
    names = write_yt8m_vocabulary(tmp_path / "yt8m.csv", 12)
    vocabulary = load_vocabulary(tmp_path / "yt8m.csv")
    assert vocabulary.num_classes == 12 and vocabulary.names == names
    plain = parse_vocabulary("index,name\n3,Three\n0,Zero\n", "plain.csv")
    assert plain.num_classes == 4 and plain.name_list() == ["Zero", "", "", "Three"] and 1 not in plain
    assert parse_vocabulary("\ufeff0,a\n1,b\n", "bom.csv").names == {0: "a", 1: "b"}
    for text, message in [
        ("", "empty vocabulary file"),
        ("id,label\n0,a\n", "line 1: header"),
        ("index,name\n0,a\n0,b\n", "line 3: index 0 appears twice"),
        ("index,name\n-1,a\n", "line 2: index '-1' is not a whole number"),
        ("index,name\n0\n", "line 2: 1 column(s)"),
    ]:
        with pytest.raises(DataError, match=re.escape(message)):
            parse_vocabulary(text, "bad.csv")
    with pytest.raises(DataError, match=r"--vocabulary .*missing.csv"):
        load_vocabulary(tmp_path / "missing.csv")


@pytest.mark.parametrize("family", ["hrnn", "netvlad", "nextvlad"])
def test_other_widths_are_carried_through_every_family_and_its_flops(family):
    config = ModelConfig(num_classes=5, hidden_size=8, num_layers=1, block_length=5, clusters=4, groups=4,
                         family=family, **data_widths(2048, 128))
    assert config.parts == (2048, 128) and config.widths == (2048, 128) and config.feature_dim == 2176
    assert data_widths(1024, 128) == {}  # YouTube-8M's own: the defaults, configs as before
    model = build_model(config).eval()
    frames = torch.randint(0, 256, (2, 10, 2176), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert model(frames).logits.shape == (2, 5)
    assert counted_flops(model, frames) == 2 * model_flops(config, 10)
    youtube = config.replace(feature_dim=1152, audio_dim=None)
    assert model_flops(config, 10) > model_flops(youtube, 10)  # the wider rgb costs more, analytically too
    prepared = prepare_frames(frames, config.parts)  # rgb and audio each L2-normalised on their own
    for part in (prepared[..., :2048], prepared[..., 2048:]):
        assert torch.allclose(part.norm(dim=-1), torch.ones(2, 10), atol=1e-5)


@pytest.fixture(scope="module")
def wide_teacher(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict, dict[int, str]]:
    """A 6-class set of 2048 + 128-byte frames with a YouTube-8M-layout vocabulary, ingested through the command
    line, and a NetVLAD teacher trained on it by the training entry point given sizes only (no num_classes, no
    widths): (folder, the training summary, the names)."""
    from fewframes.data.split import write_split
    from fewframes.training.__main__ import build_parser, run

    folder = tmp_path_factory.mktemp("wide")
    write_videos(folder / "tf", classes=6, videos=48, rgb_dim=2048, shards=1)
    names = write_yt8m_vocabulary(folder / "vocabulary.csv", 6)
    assert main(["data", "ingest", "--quiet", "--src", str(folder / "tf"), "--out", str(folder / "store"),
                 "--vocabulary", str(folder / "vocabulary.csv")]) == 0
    write_split(folder / "store", validation_fraction=0.25, test_fraction=0.25)
    args = build_parser().parse_args([
        "teacher", "--store", str(folder / "store"), "--out", str(folder / "teacher"), "--no-progress",
        "--model-config", '{"hidden_size": 8, "family": "netvlad", "clusters": 4}',
        "--train-config", '{"epochs": 1, "batch_size": 8, "device": "cpu"}',
    ])  # fmt: skip
    return folder, run(args), names


def test_a_2048_wide_set_with_a_vocabulary_trains_evaluates_exports_and_predicts_with_names(wide_teacher, tmp_path, capsys):
    """The store's class count, widths and names drive everything downstream, and the names reach predict's output."""
    from fewframes.export import export_onnx, onnx_logits
    from fewframes.predict import NAMES_HEADER, names_path, read_predictions
    from fewframes.training import load_model

    folder, summary, names = wide_teacher
    store = folder / "store"
    assert summary["model_config"]["num_classes"] == 6 and summary["model_config"]["feature_dim"] == 2176
    model = load_model(summary["model_path"])
    assert model.config.parts == (2048, 128) and model.class_names == [names[i] for i in range(6)]

    result = evaluate(model, store, "test", progress=False, sample_encodings=0)
    assert result.num_classes == 6 and result.num_videos > 0 and 0.0 <= result.gap <= 1.0

    exported = export_onnx(summary["model_path"], tmp_path / "teacher.onnx", n_frames=8)
    frames = np.random.default_rng(0).integers(0, 256, (2, 8, 2176), dtype=np.uint8)
    with torch.no_grad():
        eager = model(torch.from_numpy(frames)).logits.numpy()
    assert exported.num_classes == 6
    assert np.abs(onnx_logits(tmp_path / "teacher.onnx", frames) - eager).max() <= exported.tolerance

    out = tmp_path / "predictions.csv"
    assert main(["predict", "--model", summary["model_path"], "--src", str(store), "--out", str(out), "--top-k", "3"]) == 0
    assert f"with class names: {names_path(out)}" in capsys.readouterr().out
    kaggle = read_predictions(out)  # the submission file is Kaggle's format, unchanged
    assert out.read_text().splitlines()[0] == "VideoId,LabelConfidencePairs" and len(kaggle) == 48
    with open(names_path(out), newline="", encoding="utf-8") as handle:
        rows = list(csv.reader(handle))
    assert tuple(rows[0]) == NAMES_HEADER and len(rows) == 1 + 48 * 3
    for video_id, rank, label, name, score in rows[1:]:
        assert name == names[int(label)]
        assert kaggle[video_id][int(rank) - 1] == (int(label), pytest.approx(float(score)))
    # From the TFRecords themselves (the model's widths): the same submission.
    assert main(["predict", "--model", summary["model_path"], "--src", str(folder / "tf"),
                 "--out", str(tmp_path / "from_tf.csv"), "--top-k", "3"]) == 0
    assert (tmp_path / "from_tf.csv").read_text() == out.read_text()


def test_the_served_model_answers_names_beside_labels_for_other_widths(tmp_path):
    """The pyfunc MLflow serves (saved and loaded by MLflow itself) reads 2048 + 128-byte frames and answers
    each label's name from the model file's class names."""
    mlflow = pytest.importorskip("mlflow")
    from fewframes.config import StudentConfig
    from fewframes.models import student_model_config
    from fewframes.serving import save_pyfunc, videos_frame
    from fewframes.training.results import save_model

    torch.manual_seed(0)
    student = StudentConfig(k=4)
    config = student_model_config(ModelConfig(num_classes=7, hidden_size=8, num_layers=1, **data_widths(2048, 128)), 4)
    names = [f"class {i}, named" for i in range(7)]
    save_model(build_model(config).eval(), tmp_path / "student.pt", config, student, role="student", class_names=names)
    served = mlflow.pyfunc.load_model(str(save_pyfunc(tmp_path / "student.pt", tmp_path / "pyfunc")))
    rng = np.random.default_rng(0)
    videos = [(f"v{i}", rng.integers(0, 256, (n, 2176), dtype=np.uint8)) for i, n in enumerate([9, 3, 20])]
    answer = served.predict(videos_frame(videos, rgb_dim=2048), params={"top_k": 3})
    assert list(answer["video_id"]) == ["v0", "v1", "v2"]
    for labels, row_names in zip(answer["labels"], answer["names"]):
        assert list(row_names) == [names[label] for label in labels] and len(labels) == 3


def test_the_report_names_the_classes_in_its_per_class_table_and_t_sne_legend(wide_teacher, tmp_path):
    """Real evaluations (the wide teacher on all frames and on 4 frames, as a stand-in student) written to their
    folders, then the report built from them: its per-class table and Figure 3 name the classes."""
    from fewframes.report import build_report
    from fewframes.training import load_model

    folder, summary, names = wide_teacher
    model = load_model(summary["model_path"])
    rows = []
    for role, strategy, k in (("teacher", "all", None), ("student", "uniform", 4)):
        out = tmp_path / role
        result = evaluate(model, folder / "store", "test", strategy=strategy, k=k, out_dir=out, progress=False)
        assert result.class_names == [names[i] for i in range(6)]
        rows.append({"role": role, "k": "" if k is None else k, "frame_selection": strategy, "loss": "rep_pred_ce" if k else "",
                     "mode": "serial" if k else "", "matching": "final" if k else "", "train_fraction": 1.0, "seed": 0,
                     "model_key": role, "gap": result.gap, "map": result.map, "control": "", "evaluation_dir": str(out)})
    report = build_report(rows, tmp_path / "report", resamples=50)
    table = next(t for t in report.summary["tables"] if t["title"].startswith("Per-class test AP"))
    assert table["header"][:3] == ["class", "name", "test videos"] and table["rows"]
    for row in table["rows"]:
        assert row[1] == names[int(row[0])]
    assert report.summary["tsne"] is not None
    assert report.summary["tsne"]["class_labels"] == [f"{c} {names[c]}" for c in report.summary["tsne"]["classes"]]
    assert names[int(table["rows"][0][0])] in report.markdown.read_text()


def test_the_mlflow_dataset_input_describes_the_classes(wide_teacher, tmp_path):
    """A training run's dataset input (a real MLflow store, SQLite) carries the labels with their names and a
    tag describing the classes."""
    mlflow = pytest.importorskip("mlflow")
    from fewframes.run_results import log_split
    from fewframes.tracking import Tracker

    folder, _, names = wide_teacher
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    with Tracker.start(uri, "vocabulary-test", "teacher") as tracker:
        log_split(tracker, str(folder / "store"), "train", "training")
    (dataset_input,) = mlflow.MlflowClient(uri).get_run(tracker.run_id).inputs.dataset_inputs
    tags = {tag.key: tag.value for tag in dataset_input.tags}
    assert tags["mlflow.data.context"] == "training"
    assert tags["fewframes.classes"] == (
        f"6 classes: names and count from the vocabulary {folder / 'vocabulary.csv'}; frames 2048 + 128 bytes"
    )
    columns = [column["name"] for column in json.loads(dataset_input.dataset.schema)["mlflow_colspec"]]
    assert columns == ["video_id", "num_frames", "labels", "label_names"]


def test_synth_writes_a_vocabulary_beside_the_same_shards(tmp_path):
    from fewframes.config import DataConfig
    from fewframes.data.synth import generate_synthetic

    data = DataConfig(videos=3, classes=9, seed=4)
    plain = generate_synthetic(tmp_path / "plain", data, progress=False)
    named = generate_synthetic(tmp_path / "named", data, progress=False, vocabulary=True)
    assert named["vocabulary"] == "vocabulary.csv" and "vocabulary" not in plain
    for shard in plain["shards"]:
        assert (tmp_path / "plain" / shard).read_bytes() == (tmp_path / "named" / shard).read_bytes()
    vocabulary = load_vocabulary(tmp_path / "named" / "vocabulary.csv")
    assert vocabulary.num_classes == 9 and vocabulary.name(7).startswith("synthetic class 7 (topic ")


def test_a_pipeline_run_checks_the_vocabulary_first_and_says_what_it_assumed(tmp_path):
    """``fewframes run``: a bad vocabulary parameter is one line before any step; a run whose classes were
    assumed ends by saying so (from its store's ``store.json``)."""
    from fewframes.cli.pipeline import _store_classes, check_arguments, run_summary_lines
    from fewframes.errors import PipelineError
    from fewframes.pipelines.dag import parameter_defaults

    arguments = parameter_defaults("distill", "tiny")
    with pytest.raises(PipelineError, match=r"--param vocabulary=.*missing\.csv: .*file not found"):
        check_arguments({**arguments, "vocabulary": str(tmp_path / "missing.csv")})
    (tmp_path / "v.csv").write_text("0,a\n1,b\n")
    with pytest.raises(PipelineError, match=r"--param num_classes=5: the vocabulary has 2 classes"):
        check_arguments({**arguments, "vocabulary": str(tmp_path / "v.csv"), "num_classes": 5})
    check_arguments({**arguments, "vocabulary": str(tmp_path / "v.csv")})

    write_videos(tmp_path / "tf", classes=7, videos=10)
    assert main(["data", "ingest", "--quiet", "--src", str(tmp_path / "tf"), "--out", str(tmp_path / "store")]) == 0
    summary = {"run_id": "r", "seconds": 1.0, "models": {}, "report": "report.md", "report_html": "report.html",
               "run_dir": str(tmp_path), "store": str(tmp_path / "store"), "tracking_uri": "", "experiment": "e",
               "parent_run_id": "", "pipeline_log": "log", "classes": _store_classes(str(tmp_path / "store"))}
    notes = [line for line in run_summary_lines(summary) if "assumed" in line]
    assert len(notes) == 1 and "classes: 7 assumed from the data" in notes[0]
