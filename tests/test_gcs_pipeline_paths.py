"""The pipeline CLI's own outputs on gs:// (a real GCS emulator on 127.0.0.1): the compiled pipeline and the
comparison CSV are uploaded whole; a local run's folder must be local and says so in one line."""

from __future__ import annotations

import csv
import io
from typing import Iterator

import pytest
import yaml
from store_helpers import gcs_emulator

from fewframes import fsio
from fewframes.cli import main as fewframes_main
from fewframes.runs import write_rows_csv

BUCKET = "fewframes-pipeline-paths"


@pytest.fixture(scope="module")
def emulator() -> Iterator[str]:
    with gcs_emulator(BUCKET) as url:
        yield url


def test_compile_writes_the_ir_yaml_to_gcs(emulator: str, capsys: pytest.CaptureFixture[str]) -> None:
    target = f"gs://{BUCKET}/pipelines/distill.yaml"
    assert fewframes_main(["compile", "--pipeline", "distill", "--preset", "tiny", "--out", target]) == 0
    spec, *platform = yaml.safe_load_all(io.BytesIO(fsio.read_bytes(target)))  # + the GPU platform spec
    assert spec["pipelineInfo"]["name"] == "fewframes-distill"
    assert "exec-train-teacher" in spec["deploymentSpec"]["executors"]
    assert platform, "a cluster compile carries the kubernetes platform spec (node selector, toleration)"


def test_compile_to_a_missing_bucket_is_one_line(emulator: str, capsys: pytest.CaptureFixture[str]) -> None:
    code = fewframes_main(["compile", "--out", "gs://no-such-bucket/p.yaml"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "no-such-bucket" in err and "\n" not in err


def test_comparison_csv_on_gcs(emulator: str) -> None:
    rows = [{"model_key": "teacher", "gap": 0.5, "k": None}, {"model_key": "student-k10", "gap": 0.4, "k": 10}]
    target = f"gs://{BUCKET}/compare/runs.csv"
    write_rows_csv(rows, target, ("model_key", "k", "gap"))
    read = list(csv.DictReader(io.StringIO(fsio.read_bytes(target).decode())))
    assert read == [
        {"model_key": "teacher", "k": "", "gap": "0.5"},
        {"model_key": "student-k10", "k": "10", "gap": "0.4"},
    ]


def test_local_run_refuses_a_gcs_run_folder(tmp_path, monkeypatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(tmp_path)
    code = fewframes_main(["run", "--preset", "tiny", "--out", f"gs://{BUCKET}/runs/x"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "--out gs://" in err and "\n" not in err
    assert not (tmp_path / "gs:").exists()
