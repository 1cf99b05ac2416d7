"""Results across machines: a bundle exported here and imported into another benchmarks folder keeps its runs and
rows, tags them with the source machine (charts label it), skips runs already present, never carries secrets and
refuses bad zips; the same over /v1/bench/export and /v1/bench/import; one run logged to MLflow and read back."""

from __future__ import annotations

import dataclasses
import io
import json
import zipfile
from pathlib import Path
from typing import Any

import bcrypt
import pytest
from fastapi.testclient import TestClient

from panel.access.auth import build_auth
from panel.api import bench_share as share_api
from panel.app import create_app
from panel.bench import bundle, share
from panel.bench.mlflow_log import log_run_to_mlflow
from panel.bench.record import RunRecord
from panel.bench.scrub import is_secret_key
from panel.bench.share import export_bundle, import_bundle
from panel.bench.store import ResultStore
from panel.bench.views import results_view
from panel.errors import BadRequestError, PayloadTooLargeError
from panel.settings import Settings
from tests.bench.test_bench_store import MODEL, row, save

FOLDER = "Tiny-1B.Q4_0.gguf"
SECRETS = ("sk-SECRET-api-123", "tok-AUTH-456", "sk-FLAG-789", "pw-URL-000", "hf_ROW_SECRET")


def save_full(store: ResultStore, run_id: str, time: str, engine: str = "llamacpp") -> dict[str, Any]:
    """A run as the runner saves it: config, summary, environment (host, GPU) and rows, with secrets inside."""
    record: dict[str, Any] = {
        "run_id": run_id,
        "time": time,
        "model": FOLDER,
        "engine": engine,
        "status": "done",
        "suites": ["single_stream", "parallel"],
        "config": {"lengths": [64, 1024], "concurrencies": [4, 64], "timeout_s": 600.0, "api_key": SECRETS[0]},
        "summary": {"single_stream": {"tokens_per_s_by_length": {"64": 50.0, "1024": 68.25}, "noisy": False}},
        "environment": {
            "engine_version": "version: 7000 (abc)",
            "load_options": {"ctx_size": 4096, "args": ["-c", "4096", "--api-key", SECRETS[2]]},
            "host": {"hostname": "box-a", "cpu": "Grace", "cpu_count": 20},
            "gpus": [{"name": "NVIDIA GB10"}],
            "model": {"size_bytes": 2_000_000_000},
            "target": {"url": f"http://ann:{SECRETS[3]}@gpu-a:8000/v1"},
        },
        "headers": {"Authorization": f"Bearer {SECRETS[1]}", "Accept": "text/event-stream"},
    }
    singles = [
        row(run_id, time, engine, output_tokens_requested=n, tokens_per_s=t, hf_token=SECRETS[4])
        for n, t in ((64, 50.0), (1024, 68.25))
    ]
    parallel = [row(run_id, time, engine, concurrency=n, total_tokens_per_s=t) for n, t in ((4, 200.0), (64, 1600.0))]
    store.save_run(MODEL, RunRecord.from_json(record), {"single_stream": singles, "parallel": parallel})
    return record


@pytest.fixture
def machine_a(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> ResultStore:
    monkeypatch.setattr(share.platform, "node", lambda: "box-a")
    store = ResultStore(tmp_path / "a" / "benchmarks")
    save_full(store, "r1", "2026-01-01T00:00:00")
    save_full(store, "r2", "2026-01-02T00:00:00")
    return store


def members(bundle: Path) -> dict[str, bytes]:
    with zipfile.ZipFile(bundle) as zf:
        return {name: zf.read(name) for name in zf.namelist()}


def test_export_then_import_on_a_second_machine(machine_a: ResultStore, tmp_path: Path) -> None:
    bundle = export_bundle(machine_a, MODEL, None, tmp_path / "out")
    got = members(bundle)
    assert set(got) == {"manifest.json", "report.html", "runs/r1.json", "runs/r2.json"} | {
        "tables/single_stream.csv",
        "tables/parallel.csv",
    }
    manifest = json.loads(got["manifest.json"])
    assert (manifest["format"], manifest["version"], manifest["model"]) == ("panel-bench-bundle", 1, FOLDER)
    assert manifest["run_ids"] == ["r1", "r2"] and manifest["panel_version"]
    assert manifest["machine"]["hostname"] == "box-a" and manifest["machine"]["gpus"] == ["NVIDIA GB10"]

    second = ResultStore(tmp_path / "b" / "benchmarks")
    save(second, "local1", "2026-01-03T00:00:00")  # measured on the second machine itself
    result = import_bundle(second, bundle)
    assert (result.model, result.imported, result.skipped, result.machine) == (FOLDER, ["r1", "r2"], [], "box-a")
    assert result.rows == 8 and "imported 2 run(s)" in result.message()
    singles = second.rows("single_stream")
    assert {(r["run_id"], r.get("machine")) for r in singles} == {("local1", None), ("r1", "box-a"), ("r2", "box-a")}
    assert [r["tokens_per_s"] for r in singles if r["run_id"] == "r2"] == [50.0, 68.25]
    runs = {r.run_id: r for r in second.runs(FOLDER)}
    assert runs["r1"].machine == "box-a" and runs["r1"].imported == {**runs["r1"].imported, "from": "box-a"}
    assert runs["r1"].environment["gpus"] == [{"name": "NVIDIA GB10"}]

    # the machine is a comparison dimension: the latest run per model+engine+machine, labelled with it
    names = [t.name for t in results_view(second, None, None).figures["single_stream"].data]
    assert len(names) == 2 and sum("box-a" in n for n in names) == 1
    assert any(n.startswith(f"{FOLDER} · llamacpp · box-a · 2026-01-02") for n in names)
    every = results_view(second, None, None, latest_only=False).figures["parallel"].data
    assert sum("box-a" in t.name for t in every) == 4  # two runs, two panels each

    again = import_bundle(second, bundle)
    assert (again.imported, again.skipped, again.rows) == ([], ["r1", "r2"], 0)
    assert len(second.rows("single_stream")) == len(singles) and len(second.runs(FOLDER)) == 3
    assert "already here, skipped" in again.message()


def test_export_of_chosen_runs_and_refusals(machine_a: ResultStore, tmp_path: Path) -> None:
    got = members(export_bundle(machine_a, FOLDER, ["r2"], tmp_path / "out"))
    assert json.loads(got["manifest.json"])["run_ids"] == ["r2"] and "runs/r1.json" not in got
    assert b"r1" not in got["tables/parallel.csv"]
    with pytest.raises(BadRequestError, match="has no run 'r9'"):
        export_bundle(machine_a, FOLDER, ["r9"], tmp_path / "out")
    with pytest.raises(BadRequestError, match="no saved benchmark runs for model 'nope'"):
        export_bundle(machine_a, "nope", None, tmp_path / "out")


def test_secrets_never_leave(machine_a: ResultStore, tmp_path: Path) -> None:
    bundle = export_bundle(machine_a, MODEL, None, tmp_path / "out")
    raw = bundle.read_bytes()
    for name, data in members(bundle).items():
        for secret in SECRETS:
            assert secret.encode() not in data and secret.encode() not in raw, f"{secret} in {name}"
    run = json.loads(members(bundle)["runs/r1.json"])
    assert "api_key" not in run["config"] and "Authorization" not in run["headers"]
    assert run["headers"]["Accept"] == "text/event-stream"  # only the secret keys go
    assert run["environment"]["load_options"]["args"] == ["-c", "4096"]
    assert run["environment"]["target"]["url"] == "http://gpu-a:8000/v1"
    header = members(bundle)["tables/single_stream.csv"].decode().splitlines()[0]
    assert "tokens_per_s" in header and "hf_token" not in header  # measurements named *tokens* stay
    assert [is_secret_key(k) for k in ("X-Api-Key", "apiKey", "password", "max_tokens", "tokenizer")] == [
        True,
        True,
        True,
        False,
        False,
    ]


def test_report_is_self_contained(machine_a: ResultStore, tmp_path: Path) -> None:
    report = members(export_bundle(machine_a, MODEL, None, tmp_path / "out"))["report.html"].decode()
    assert "plotly" in report and FOLDER in report and "box-a" in report
    assert report.count("Plotly.newPlot") >= 2  # single-stream and parallel charts
    assert report.count("* plotly.js v") == 1 and "<table>" in report  # plotly.js inline, once


def _zip(entries: dict[str, str | bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name, data in entries.items():
            zf.writestr(name, data)
    return buf.getvalue()


def test_bad_bundles_are_refused(machine_a: ResultStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    good = members(export_bundle(machine_a, MODEL, ["r1"], tmp_path / "out"))
    del good["report.html"]  # optional on import; leaving its 4 MB out keeps the cases quick
    target = ResultStore(tmp_path / "c")
    cases: list[tuple[dict[str, str | bytes] | bytes, str]] = [
        ({**good, "../x": "boom"}, "unexpected member '../x'"),
        ({**good, "runs/../../x.json": "{}"}, "unexpected member"),
        ({**good, "/etc/cron.d/x": "boom"}, "unexpected member"),
        (b"this is not a zip file", "not a readable zip file"),
        ({k: v for k, v in good.items() if k != "manifest.json"}, "has no manifest.json"),
        ({**good, "manifest.json": "{not json"}, "manifest.json is not valid JSON"),
        ({**good, "manifest.json": json.dumps({**json.loads(good["manifest.json"]), "version": 9})}, "version 9"),
        ({**good, "manifest.json": json.dumps({**json.loads(good["manifest.json"]), "run_ids": ["r1", "r7"]})}, "r7"),
        ({**good, "tables/latency.csv": "run_id,time,model,engine\nr5,t,m,e\n"}, "row of run 'r5'"),
        ({**good, "tables/parallel.csv": "run_id,time\nr1,t\n"}, "lacks the column 'model'"),
    ]
    for i, (content, message) in enumerate(cases):
        path = tmp_path / f"bad{i}.zip"
        path.write_bytes(content if isinstance(content, bytes) else _zip(content))
        with pytest.raises(BadRequestError, match=message):
            import_bundle(target, path)
    assert target.models() == []  # nothing written by a refused bundle
    monkeypatch.setattr(bundle, "MAX_BUNDLE_BYTES", 1000)
    path = tmp_path / "big.zip"
    path.write_bytes(_zip(good))
    with pytest.raises(PayloadTooLargeError, match="limit is 1000 bytes"):
        import_bundle(target, path)


def _roles_env() -> str:
    hashed = bcrypt.hashpw(b"pw", bcrypt.gensalt(4)).decode()
    return ",".join(f"{role[:3]}:{role}:{hashed}" for role in ("viewer", "operator", "admin"))


def test_api_export_and_import_between_two_panels(
    settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(share.platform, "node", lambda: "box-a")
    save_full(ResultStore(settings.benchmarks_dir), "r1", "2026-01-01T00:00:00")
    with TestClient(create_app(settings, with_ui=False)) as a:
        got = a.get("/v1/bench/export", params={"model": FOLDER, "run_id": "r1"})
        assert got.status_code == 200, got.text
        assert got.headers["content-type"] == "application/zip"
        assert "attachment" in got.headers["content-disposition"] and FOLDER in got.headers["content-disposition"]
        assert a.get("/v1/bench/export", params={"model": "nope"}).status_code == 400
    bundle = got.content

    other = dataclasses.replace(
        settings, benchmarks_dir=tmp_path / "b" / "benchmarks", data_dir=tmp_path / "b" / "data", users=_roles_env()
    )
    keys = {role: build_auth(other).create_key(role, role, actor="test")[1] for role in ("viewer", "operator")}
    zip_type = {"content-type": "application/zip"}
    with TestClient(create_app(other, with_ui=False)) as b:
        viewer = {**zip_type, "Authorization": f"Bearer {keys['viewer']}"}
        operator = {**zip_type, "Authorization": f"Bearer {keys['operator']}"}
        assert b.post("/v1/bench/import", content=bundle, headers=viewer).status_code == 403
        done = b.post("/v1/bench/import", content=bundle, headers=operator)
        assert done.status_code == 200, done.text
        answer = done.json()
        assert (answer["model"], answer["imported"], answer["skipped"], answer["machine"], answer["rows"]) == (
            FOLDER,
            ["r1"],
            [],
            "box-a",
            4,
        )
        assert b.post("/v1/bench/import", content=bundle, headers=operator).json()["skipped"] == ["r1"]
        bad = b.post("/v1/bench/import", content=b"not a zip", headers=operator)
        assert bad.status_code == 400 and "not a readable zip" in bad.json()["error"]["message"]
        traversal = _zip({**members_of(bundle), "../x": "boom"})
        assert b.post("/v1/bench/import", content=traversal, headers=operator).status_code == 400
        text = b.post("/v1/bench/import", content=bundle, headers={**operator, "content-type": "text/plain"})
        assert text.status_code == 400 and "application/zip" in text.json()["error"]["message"]
        monkeypatch.setattr(share_api, "MAX_BUNDLE_BYTES", 100)
        assert b.post("/v1/bench/import", content=bundle, headers=operator).status_code == 413
        # the second panel serves the imported runs like its own, tagged with box-a
        again = b.get("/v1/bench/export", params={"model": FOLDER}, headers=viewer)
        assert again.status_code == 200
    rows = ResultStore(other.benchmarks_dir).rows("parallel")
    assert {(r["run_id"], r["machine"]) for r in rows} == {("r1", "box-a")}
    assert b"box-a" in members_of(again.content)["tables/parallel.csv"]


def members_of(data: bytes) -> dict[str, bytes]:
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        return {name: zf.read(name) for name in zf.namelist()}


def test_mlflow_round_trip(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from mlflow.tracking import MlflowClient

    monkeypatch.delenv("MLFLOW_ALLOW_FILE_STORE", raising=False)  # restored after the test
    store = ResultStore(tmp_path / "benchmarks")
    save_full(store, "r1", "2026-01-01T00:00:00")
    record = store.runs(FOLDER)[0]
    uri = (tmp_path / "mlruns").as_uri()
    run_id = log_run_to_mlflow(record, uri)
    client = MlflowClient(tracking_uri=uri)
    run = client.get_run(run_id)
    params, metrics = run.data.params, run.data.metrics
    assert (params["model"], params["engine"], params["suites"]) == (FOLDER, "llamacpp", "single_stream,parallel")
    assert params["config.lengths"] == "[64, 1024]" and "config.api_key" not in params
    assert metrics["single_stream.tokens_per_s_by_length.1024"] == 68.25
    assert "single_stream.noisy" not in metrics  # booleans are not metrics
    assert run.info.status == "FINISHED" and run.data.tags["panel.run_id"] == "r1"
    assert [a.path for a in client.list_artifacts(run_id)] == ["environment.json"]
    env = json.loads(Path(client.download_artifacts(run_id, "environment.json", str(tmp_path))).read_text())
    assert env["gpus"] == [{"name": "NVIDIA GB10"}] and SECRETS[2] not in json.dumps(env)


def test_mlflow_uri_is_a_setting() -> None:
    assert Settings.load(env={}).mlflow_tracking_uri is None
    loaded = Settings.load(env={"PANEL_MLFLOW_TRACKING_URI": "http://mlflow:5000"})
    assert loaded.mlflow_tracking_uri == "http://mlflow:5000"


def test_the_import_route_takes_bundles_over_the_general_body_cap(settings: Settings) -> None:
    small = dataclasses.replace(settings, max_body_bytes=2048)
    with TestClient(create_app(small, with_ui=False)) as client:
        body = b"x" * 10_000  # over the 2 KiB cap of every other route
        chat = client.post("/v1/chat/completions", content=body, headers={"content-type": "application/json"})
        assert chat.status_code == 413
        bundle = client.post("/v1/bench/import", content=body, headers={"content-type": "application/zip"})
        assert bundle.status_code == 400 and "zip" in bundle.json()["error"]["message"], "read, then refused as no zip"
