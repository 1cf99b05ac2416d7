"""One saved benchmark run → one MLflow run, logged off the event loop once the run is saved: params (model,
engine, suites, config), numeric summary metrics and the environment as an artifact. Optional: set
PANEL_MLFLOW_TRACKING_URI; mlflow-skinny is imported only here.

Tracking URIs: an MLflow server (http://host:5000) or a local folder (file:///path/mlruns, or a plain path).
MLflow 3 refuses a folder store unless MLFLOW_ALLOW_FILE_STORE is set, so it is set for folder URIs (the
folder store needs nothing beyond mlflow-skinny). sqlite:///… works too once sqlalchemy and alembic are
installed; they are not in requirements.txt.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from panel.bench.record import RunRecord
from panel.bench.scrub import scrub_secrets
from panel.errors import BadRequestError

log = logging.getLogger(__name__)

EXPERIMENT = "panel-benchmarks"
MAX_PARAM_CHARS = 500  # MLflow allows more; a long prompt says nothing as a param
BATCH = 100  # MLflow's log_batch takes at most 100 params and 1000 metrics at once
RUN_STATUS = {"done": "FINISHED", "cancelled": "KILLED"}  # the runner's status → MLflow's
UNSAFE_NAME = re.compile(r"[^A-Za-z0-9_\-. /]+")


def log_in_background(record: RunRecord, tracking_uri: str, note: Callable[[str], None]) -> None:
    """Log a saved run in a worker thread (a tracking server may be slow); `note` is told how it went."""

    def done(future: asyncio.Future[str]) -> None:
        try:
            note(f"logged to MLflow as run {future.result()}")
        except Exception as exc:  # MLflow trouble must not fail a run that is saved
            log.warning("MLflow logging of %s failed: %s", record.run_id, exc)
            note(f"MLflow logging failed: {exc}")

    future = asyncio.get_running_loop().run_in_executor(None, log_run_to_mlflow, record, tracking_uri)
    future.add_done_callback(done)


def log_run_to_mlflow(record: RunRecord, tracking_uri: str, experiment: str = EXPERIMENT) -> str:
    """Log one saved run and return the MLflow run id."""
    if _is_folder_store(tracking_uri):
        os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
    try:
        from mlflow.entities import Metric, Param
        from mlflow.tracking import MlflowClient
    except ImportError as exc:  # optional: the panel runs without it
        raise BadRequestError(f"MLflow logging needs mlflow-skinny: pip install -r requirements.txt ({exc})") from exc

    record = RunRecord.from_json(scrub_secrets(record.to_json()))
    client = MlflowClient(tracking_uri=tracking_uri)
    found = client.get_experiment_by_name(experiment)
    experiment_id = found.experiment_id if found else client.create_experiment(experiment)
    tags = {"panel.run_id": record.run_id, "panel.status": record.status, "panel.time": record.time}
    run = client.create_run(experiment_id, run_name=record.run_id, tags=_clean(tags))
    run_id = run.info.run_id
    now_ms = int(run.info.start_time or 0)
    try:
        params = [Param(k, v) for k, v in run_params(record).items()]
        metrics = [Metric(k, v, now_ms, 0) for k, v in run_metrics(record).items()]
        for i in range(0, max(len(params), len(metrics)), BATCH):
            client.log_batch(run_id, metrics=metrics[i : i + BATCH], params=params[i : i + BATCH])
        with tempfile.TemporaryDirectory(prefix="panel-mlflow-") as tmp:
            path = Path(tmp) / "environment.json"
            path.write_text(json.dumps(record.environment, indent=2, default=str), encoding="utf-8")
            client.log_artifact(run_id, str(path))
    except Exception:
        client.set_terminated(run_id, status="FAILED")
        raise
    client.set_terminated(run_id, status=RUN_STATUS.get(record.status or "done", "FAILED"))
    return str(run_id)


def run_params(record: RunRecord) -> dict[str, str]:
    """model, engine, suites and every config value (lists as JSON), names MLflow accepts, values cut short."""
    params: dict[str, Any] = {"model": record.model, "engine": record.engine, "suites": ",".join(record.suites)}
    for key, value in record.config.items():
        params[f"config.{key}"] = value if isinstance(value, str) else json.dumps(value, default=str)
    return {_name(k): str(v)[:MAX_PARAM_CHARS] for k, v in params.items() if v is not None}


def run_metrics(record: RunRecord) -> dict[str, float]:
    """The summary flattened to dotted names (single_stream.tokens_per_s), numbers only."""
    out: dict[str, float] = {}

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, dict):
            for key, inner in value.items():
                walk(f"{prefix}.{key}" if prefix else str(key), inner)
        elif isinstance(value, (int, float)) and not isinstance(value, bool) and value == value:
            out[_name(prefix)] = float(value)

    walk("", record.summary)
    return out


def _name(key: str) -> str:
    return UNSAFE_NAME.sub("_", key)[:250]


def _clean(tags: dict[str, Any]) -> dict[str, str]:
    return {k: str(v) for k, v in tags.items() if v is not None}


def _is_folder_store(uri: str) -> bool:
    return uri.startswith("file:") or "://" not in uri
