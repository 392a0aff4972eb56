"""A small stand-in for the Kubeflow Pipelines v2beta1 REST API, on 127.0.0.1, for the submit tests.

There is no KFP cluster here, so ``fewframes submit`` (a real ``kfp.Client``) talks to this server. It
answers the calls the client makes: healthz, experiments list (with a display_name filter)/create/get,
runs create/get. A created run moves PENDING -> RUNNING -> the configured final state over successive
``get`` calls, reporting one more task done each time, so ``--watch`` has something to follow. Every
request is recorded (``requests``) and created runs keep their body (pipeline spec, parameters).

The run's ``run_details.task_details`` are built with kfp's own ``kfp_server_api`` model classes and sent as
the API server would serialise them. As a real server fills them from the Argo workflow's nodes, they hold
the workflow's machinery too (the workflow's root node, ``root-driver``, each task's ``-driver`` node), and a
pipeline task is reported under its task key (``start-tracking``), the Argo node's display name.
"""

from __future__ import annotations

import json
import threading
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlparse

API = "/apis/v2beta1"
NOW = "2026-01-01T00:00:00Z"
TASK_KEYS = ("start-tracking", "ingest-split", "plan-teachers", "train-teacher")


class KfpStandin:
    """Run with ``with KfpStandin() as server: server.url``."""

    def __init__(self, final_state: str = "SUCCEEDED", polls_to_finish: int = 3,
                 task_keys: tuple[str, ...] = TASK_KEYS) -> None:
        self.final_state = final_state
        self.polls_to_finish = polls_to_finish
        self.task_keys = task_keys  # the pipeline tasks the run reports, in order (keys of the distill DAG)
        self.tasks = len(task_keys)
        self.experiments: dict[str, dict[str, Any]] = {}
        self.runs: dict[str, dict[str, Any]] = {}
        self.polls: dict[str, int] = {}
        self.requests: list[tuple[str, str]] = []
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def __enter__(self) -> KfpStandin:
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()

    # -- API ----------------------------------------------------------------------------------------

    def _route(self, method: str, path: str, query: dict[str, list[str]], body: Any) -> tuple[int, Any]:
        with self._lock:
            self.requests.append((method, path))
            if method == "GET" and path == f"{API}/healthz":
                return 200, {"commit_sha": "standin", "tag_name": "2.4.0", "multi_user": False}
            if path == f"{API}/experiments":
                if method == "GET":
                    return 200, self._list_experiments(query)
                if method == "POST":
                    return 200, self._create_experiment(body)
            if method == "GET" and path.startswith(f"{API}/experiments/"):
                found = self.experiments.get(path.rsplit("/", 1)[1])
                return (200, found) if found else (404, _error("experiment not found"))
            if method == "POST" and path == f"{API}/runs":
                return 200, self._create_run(body)
            if method == "GET" and path.startswith(f"{API}/runs/"):
                run_id = path.rsplit("/", 1)[1]
                if run_id not in self.runs:
                    return 404, _error("run not found")
                return 200, self._advance(run_id)
        return 404, _error(f"the stand-in does not implement {method} {path}")

    def _list_experiments(self, query: dict[str, list[str]]) -> dict[str, Any]:
        experiments = list(self.experiments.values())
        if "filter" in query:
            predicates = json.loads(query["filter"][0]).get("predicates", [])
            for predicate in predicates:
                if predicate.get("key") == "display_name":
                    wanted = predicate.get("string_value", predicate.get("stringValue"))
                    experiments = [e for e in experiments if e["display_name"] == wanted]
        return {"experiments": experiments, "total_size": len(experiments)} if experiments else {}

    def _create_experiment(self, body: dict[str, Any]) -> dict[str, Any]:
        experiment_id = str(uuid.uuid4())
        experiment = {
            "experiment_id": experiment_id,
            "display_name": body["display_name"],
            "description": body.get("description") or "",
            "created_at": NOW,
            "namespace": body.get("namespace") or "",
            "storage_state": "AVAILABLE",
        }
        self.experiments[experiment_id] = experiment
        return experiment

    def _create_run(self, body: dict[str, Any]) -> dict[str, Any]:
        run_id = str(uuid.uuid4())
        run = {
            "run_id": run_id,
            "display_name": body.get("display_name", ""),
            "experiment_id": body.get("experiment_id", ""),
            "pipeline_spec": body.get("pipeline_spec"),
            "runtime_config": body.get("runtime_config", {}),
            "service_account": body.get("service_account", ""),
            "created_at": NOW,
            "state": "PENDING",
            "storage_state": "AVAILABLE",
        }
        self.runs[run_id] = run
        self.polls[run_id] = 0
        return run

    def _advance(self, run_id: str) -> dict[str, Any]:
        self.polls[run_id] += 1
        polls = self.polls[run_id]
        run = self.runs[run_id]
        if polls >= self.polls_to_finish:
            run["state"] = self.final_state
            done = self.tasks
        else:
            run["state"] = "RUNNING"
            done = min(self.tasks, polls)
        run["run_details"] = _run_details(run_id, run["display_name"], self.task_keys, done, run["state"])
        return run

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        standin = self

        class Handler(BaseHTTPRequestHandler):
            def _serve(self, method: str) -> None:
                parsed = urlparse(self.path)
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                body = json.loads(raw) if raw else {}
                status, payload = standin._route(method, parsed.path, parse_qs(parsed.query), body)
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:  # noqa: N802 - http.server's naming
                self._serve("GET")

            def do_POST(self) -> None:  # noqa: N802
                self._serve("POST")

            def log_message(self, *args: Any) -> None:
                pass

        return Handler


def _error(message: str) -> dict[str, Any]:
    return {"error": message, "code": 5, "message": message}


def _run_details(run_id: str, workflow: str, keys: tuple[str, ...], done: int, state: str) -> dict[str, Any]:
    """``V2beta1RunDetails`` as JSON: tasks ``keys[:done]`` SUCCEEDED, the next one RUNNING (none once the run has
    ended), each after its ``-driver`` node, under the workflow's root node and ``root-driver``."""
    from kfp_server_api import ApiClient
    from kfp_server_api.models import V2beta1PipelineTaskDetail, V2beta1RunDetails, V2beta1RuntimeState

    ended = state not in (V2beta1RuntimeState.PENDING, V2beta1RuntimeState.RUNNING)

    def task(name: str, task_state: str) -> V2beta1PipelineTaskDetail:
        return V2beta1PipelineTaskDetail(run_id=run_id, display_name=name, state=task_state, create_time=NOW)

    details = [task(workflow or "workflow", state), task("root-driver", V2beta1RuntimeState.SUCCEEDED)]
    for index, key in enumerate(keys[: done + (0 if ended else 1)]):
        details.append(task(f"{key}-driver", V2beta1RuntimeState.SUCCEEDED))
        details.append(task(key, V2beta1RuntimeState.SUCCEEDED if index < done else V2beta1RuntimeState.RUNNING))
    return ApiClient().sanitize_for_serialization(V2beta1RunDetails(task_details=details))
