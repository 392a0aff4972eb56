"""Screenshots of what a person sees after a run: the MLflow runs page, a model's run page, a served prediction.

Taken for docs/screenshots/ (README "What you see"); to take them again on another run:

    .venv/bin/python docs/screenshots/take.py RUN_DIR [--out docs/screenshots]

RUN_DIR is a finished local run (``fewframes run``: its ``mlflow.db`` and ``run.json``). The script starts a
real ``mlflow server`` (what ``mlflow ui`` runs) on loopback on that store, takes the pages with headless
Chromium (``apt-get install chromium``), then serves the registered student with ``mlflow models serve -m
models:/fewframes-student@champion``, posts three of the store's videos, and renders the request and the
answer as a page (``served_prediction.html``, kept beside the PNG) to take too. Nothing in RUN_DIR changes
except what the MLflow server itself writes to its database.
"""

from __future__ import annotations

import argparse
import html
import json
import os
import subprocess
import sys
import urllib.request
from pathlib import Path

import numpy as np

# Wide: on a first visit the UI opens its assistant panel on the right (about 400 px), so the table needs room.
WINDOW = "2000,1100"
BUDGET_MS = "20000"  # virtual time the page's JavaScript gets before the screenshot


def screenshot(url: str, png: Path, window: str = WINDOW) -> None:
    """Headless Chromium (a fresh profile each time: what a first visit shows) takes ``url`` into ``png``."""
    import tempfile

    with tempfile.TemporaryDirectory(prefix="fewframes-chromium-") as profile:
        subprocess.run(
            ["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", f"--user-data-dir={profile}",
             f"--window-size={window}", f"--virtual-time-budget={BUDGET_MS}", f"--screenshot={png}", url],
            check=True, capture_output=True, timeout=180,
        )  # fmt: skip
    print(f"wrote {png}")


def post(url: str, payload: dict) -> dict:
    request = urllib.request.Request(url, json.dumps(payload).encode(), {"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=300) as response:
        return json.loads(response.read())


def prediction_page(command: str, request_summary: str, answer: dict) -> str:
    """The served prediction as a terminal-like page: the serve command, the request, the answer (one line
    per video, as the server sent it)."""
    rows = ",\n    ".join(json.dumps(row) for row in answer["predictions"])
    pretty = f'{{"predictions": [\n    {rows}\n]}}'
    return f"""<!doctype html><meta charset="utf-8"><title>served student</title>
<style>body{{background:#1e1e1e;color:#ddd;font:15px/1.45 monospace;margin:24px}}h2{{color:#8fd;font-size:16px}}
pre{{white-space:pre-wrap;margin:0 0 18px}}.cmd{{color:#fd8}}</style>
<h2>$ serve the registered student</h2><pre class="cmd">{html.escape(command)}</pre>
<h2>$ POST /invocations</h2><pre class="cmd">{html.escape(request_summary)}</pre>
<h2>answer (HTTP 200)</h2><pre>{html.escape(pretty)}</pre>"""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent)
    args = parser.parse_args()
    import mlflow

    from fewframes.data.store import FrameStore
    from fewframes.run_results import REGISTERED_STUDENT
    from fewframes.runs import local_tracking_uri
    from fewframes.serving import free_loopback_port, serve_model, start_loopback_server
    from fewframes.tracking import CHAMPION_ALIAS, models_view_url

    run_dir = args.run_dir.resolve()
    summary = json.loads((run_dir / "run.json").read_text())
    uri = local_tracking_uri(run_dir)
    client = mlflow.MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name(summary.get("experiment", "fewframes"))
    champion = client.get_model_version_by_alias(REGISTERED_STUDENT, CHAMPION_ALIAS)
    args.out.mkdir(parents=True, exist_ok=True)
    bin_path = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    env = dict(os.environ, PATH=bin_path, MLFLOW_TRACKING_URI=uri, OMP_NUM_THREADS="1",
               MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false")  # fmt: skip

    port = free_loopback_port()
    ui_command = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", uri, "--host", "127.0.0.1",
                  "--port", str(port), "--workers", "1"]  # fmt: skip
    with start_loopback_server(ui_command, port, "/health", args.out / "ui.log", env=env) as server:
        url = server.url
        experiment_page = f"{url}/#/experiments/{experiment.experiment_id}"
        # The models view fewframes saves on the experiment (the link `fewframes run` prints).
        screenshot(models_view_url(url, experiment.experiment_id), args.out / "mlflow_runs.png")
        screenshot(f"{experiment_page}/runs/{champion.run_id}?workflowType=machine_learning",
                   args.out / "mlflow_model_run.png")

    with serve_model(f"models:/{REGISTERED_STUDENT}@{CHAMPION_ALIAS}", args.out / "serve.log", env=env) as served:
        store = FrameStore.open(summary["store"])
        records = []
        for index in range(3):
            frames = store.read_frames(index, np.arange(int(store.lengths[index])))
            records.append({"video_id": store.video_ids[index], "rgb": frames[:, :1024].tolist(),
                            "audio": frames[:, 1024:].tolist()})  # fmt: skip
        answer = post(f"{served.url}/invocations", {"dataframe_records": records, "params": {"top_k": 5}})
    shapes = ", ".join(f"{r['video_id']}: rgb {len(r['rgb'])}x1024, audio {len(r['audio'])}x128" for r in records)
    command = (f"MLFLOW_TRACKING_URI={uri} \\\n  mlflow models serve -m models:/{REGISTERED_STUDENT}@{CHAMPION_ALIAS} "
               f"--env-manager local --port 5001   # version {champion.version}, run {champion.run_id[:8]}")
    request = (f"curl -s localhost:5001/invocations -H 'Content-Type: application/json' -d @videos.json\n"
               f"# videos.json: {{\"dataframe_records\": [3 videos of the store: {shapes}], \"params\": {{\"top_k\": 5}}}}")
    page = args.out / "served_prediction.html"
    page.write_text(prediction_page(command, request, answer))
    screenshot(page.as_uri(), args.out / "served_prediction.png", window="1600,900")
    for log in ("ui.log", "serve.log"):
        (args.out / log).unlink(missing_ok=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
