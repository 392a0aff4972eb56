"""Bring your own videos (issue 15): vocabularies, class counts, YouTube-8M releases, other feature widths.

Real parts throughout: TFRecords written in the official schema (``fewframes.data.yt8m``), ``fewframes data
ingest`` through the command line, real frame stores. Videos are short (4-8 frames) so that everything is fast.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from fewframes.cli import main
from fewframes.data.store import FrameStore
from fewframes.data.vocabulary import RELEASES, load_vocabulary, parse_vocabulary
from fewframes.data.yt8m import Video, write_tfrecord
from fewframes.errors import DataError

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
