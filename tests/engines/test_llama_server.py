"""The llama-server supervisor, in-process, against the real binary: states, health wait, stop, crash, retries."""

from __future__ import annotations

import asyncio
import itertools
import os
import signal
import socket
import time
from dataclasses import replace
from pathlib import Path

import pytest

from panel.calls.gateway import Gateway
from panel.engines.base import EngineState, LoadRequest
from panel.engines.llama_server import supervisor
from panel.engines.llama_server.argv import build_argv, parse_help
from panel.engines.llama_server.engine import LlamaServerEngine
from panel.engines.manager import EngineManager
from panel.engines.vllm.engine import VllmEngine
from panel.errors import BadRequestError, ConflictError, EngineFailure, ForbiddenError
from tests.conftest import pid_exists, scaled


def _manager(settings) -> EngineManager:
    return EngineManager(settings, {"llamacpp": LlamaServerEngine(settings), "vllm": VllmEngine(settings)})


def test_load_generate_unload_stops_the_process_group(settings, embedded_model) -> None:
    async def scenario() -> None:
        manager = _manager(settings)
        state = await manager.load("llamacpp", str(embedded_model), {"ctx_size": 1024, "parallel": 1})
        assert state.status is EngineState.LOADED and state.process_alive
        pid = state.pid
        assert os.getpgid(pid) == pid, "the child leads its own process group"
        engine = manager.get("llamacpp")
        body = {"prompt": "Once upon", "max_tokens": 12, "ignore_eos": True, "stream": True}
        tap = await Gateway(manager).open("/v1/completions", body)
        chunks = [c async for c in tap.chunks()]
        text = "".join(c.text for c in chunks)
        assert text and not any(c.usage and not c.has_choices for c in chunks), "no usage chunk unasked"
        stats = tap.outcome.stats
        assert stats.usage.completion_tokens == 12 and stats.tokens == 12, "the tap counts what the engine reports"
        assert stats.ttft_s > 0 and stats.decode_tps > 0 and tap.outcome.finish_reason == "length"
        assert all(b >= a for a, b in itertools.pairwise(stats.token_times))
        assert manager.in_flight["llamacpp"] == 0, "a finished call is no longer counted in flight"
        assert any("--ctx-size" in line for line in engine.logs())

        # the child's port answers nothing without the key only the panel holds; the key is not in its argv
        # (world-readable) or its log, and its listen address is loopback
        import httpx

        key = engine.auth_headers["Authorization"].removeprefix("Bearer ")
        async with httpx.AsyncClient(base_url=engine.base_url, timeout=scaled(60)) as direct:
            chat = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}
            for headers in ({}, {"Authorization": "Bearer guess"}, {"Origin": "https://evil.example"}):
                refused = await direct.post("/v1/chat/completions", json=chat, headers=headers)
                assert refused.status_code == 401, (headers, refused.status_code, refused.text)
            for path in ("/props", "/slots", "/metrics", "/v1/models"):
                assert (await direct.get(path)).status_code == 401, path
            allowed = await direct.post("/v1/chat/completions", json=chat, headers=engine.auth_headers)
            assert allowed.status_code == 200
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        assert key.encode() not in b" ".join(cmdline) and key not in "\n".join(engine.logs())
        assert cmdline[cmdline.index(b"--host") + 1] == b"127.0.0.1"

        await manager.unload("llamacpp")
        assert not pid_exists(pid)
        st = engine.status()
        assert st.status is EngineState.IDLE and st.pid is None and not st.process_alive
        await manager.shutdown()

    asyncio.run(scenario())


def test_second_load_while_loading_is_refused(settings, embedded_model) -> None:
    async def scenario() -> None:
        manager = _manager(settings)
        first = asyncio.create_task(manager.load("llamacpp", str(embedded_model), {}))
        while manager.get("llamacpp").status().status is not EngineState.LOADING:
            await asyncio.sleep(0.001)
        with pytest.raises(ConflictError, match="busy"):
            await manager.load("llamacpp", str(embedded_model), {})
        with pytest.raises(ConflictError, match="busy"):
            await manager.unload("llamacpp")
        await first
        assert manager.get("llamacpp").status().status is EngineState.LOADED
        await manager.shutdown()

    asyncio.run(scenario())


def test_corrupt_gguf_fails_fast_with_log_tail_and_next_load_works(settings, embedded_model) -> None:
    broken = embedded_model.parent / ".test-broken.gguf"
    broken.write_bytes(b"GGUF" + os.urandom(4096))
    try:

        async def scenario() -> None:
            manager = _manager(settings)
            started = time.monotonic()
            with pytest.raises(EngineFailure, match="exited with code"):
                await manager.load("llamacpp", str(broken), {})
            assert time.monotonic() - started < scaled(30), "an early exit must not wait for the load deadline"
            st = manager.get("llamacpp").status()
            assert st.status is EngineState.ERROR and "Last log lines" in st.error
            await manager.load("llamacpp", str(embedded_model), {})
            assert manager.get("llamacpp").status().status is EngineState.LOADED
            await manager.shutdown()

        asyncio.run(scenario())
    finally:
        broken.unlink()


def test_port_collision_is_retried_on_another_port(settings, embedded_model, monkeypatch) -> None:
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    busy_port = taken.getsockname()[1]
    ports = iter([busy_port])
    real_free_port = supervisor.free_port
    monkeypatch.setattr(supervisor, "free_port", lambda: next(ports, None) or real_free_port())
    try:

        async def scenario() -> None:
            manager = _manager(settings)
            state = await manager.load("llamacpp", str(embedded_model), {})
            assert state.status is EngineState.LOADED
            assert state.detail != f"port {busy_port}"
            assert any("was taken; retrying" in line for line in manager.get("llamacpp").logs())
            await manager.shutdown()

        asyncio.run(scenario())
    finally:
        taken.close()


def test_crash_while_loaded_is_noticed_without_a_request(settings, embedded_model) -> None:
    async def scenario() -> None:
        manager = _manager(settings)
        state = await manager.load("llamacpp", str(embedded_model), {})
        assert state.pid is not None
        os.kill(state.pid, signal.SIGKILL)
        engine = manager.get("llamacpp")
        deadline = time.monotonic() + scaled(5)
        while engine.status().status is not EngineState.ERROR and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        st = engine.status()
        assert st.status is EngineState.ERROR and "code -9" in st.error and st.pid is None
        with pytest.raises(ConflictError):
            manager.route("llamacpp", None)
        await manager.load("llamacpp", str(embedded_model), {})
        assert engine.status().status is EngineState.LOADED
        await manager.shutdown()
        assert engine.status().process_alive is False

    asyncio.run(scenario())


def test_load_deadline_is_enforced(settings, embedded_model) -> None:

    quick = replace(settings, load_timeout_s=0.05)

    async def scenario() -> None:
        manager = _manager(quick)
        with pytest.raises(EngineFailure, match="not healthy within"):
            await manager.load("llamacpp", str(embedded_model), {})
        st = manager.get("llamacpp").status()
        assert st.status is EngineState.ERROR and not st.process_alive

    asyncio.run(scenario())


def test_missing_binary_reports_unavailable(settings, tmp_path: Path) -> None:

    engine = LlamaServerEngine(replace(settings, llama_server_bin=str(tmp_path / "no-such-binary")))
    st = engine.status()
    assert st.status is EngineState.UNAVAILABLE and not st.available and "llama-server not found" in st.error


def test_option_validation_and_argv(settings, embedded_model, tmp_path) -> None:
    engine = LlamaServerEngine(settings)
    template = settings.models_dir / "templates" / "chatml-tools.jinja"
    clean = engine.validate_options(
        {
            "ctx_size": "8192",
            "parallel": 8,
            "n_gpu_layers": 0,
            "flash_attn": "on",
            "extra_args": f"--threads 2 --no-warmup --cache-type-k=q8_0 --chat-template-file {template}",
        }
    )
    assert clean.ctx_size == 8192 and clean.flash_attn is True
    assert engine.validate_options(clean.to_json()) == clean, "options kept as JSON (the load log) load the same again"
    request = LoadRequest("llamacpp", str(embedded_model), clean)
    argv = build_argv(engine.binary, request.model_path, clean, 5555, engine.name_for(request))
    assert argv[argv.index("--port") + 1] == "5555" and argv[argv.index("--n-gpu-layers") + 1] == "0"
    assert argv[-6:] == ["--threads", "2", "--no-warmup", "--cache-type-k=q8_0", "--chat-template-file", str(template)]
    assert "--jinja" in argv, "the model's own Jinja template (tools, reasoning) is on by default"
    assert argv[argv.index("--alias") + 1] == embedded_model.name, "the child answers with the file name"
    threads = replace(settings, llama_threads=1)
    by_setting = LlamaServerEngine(threads).validate_options({})
    assert by_setting.threads == 1, "PANEL_LLAMA_THREADS is the default for a load that names none"
    assert build_argv(engine.binary, str(embedded_model), by_setting, 1, "m").count("--threads") == 1
    assert LlamaServerEngine(threads).validate_options({"threads": 3}).threads == 3, "the load's own wins"
    own_choice = LlamaServerEngine(replace(settings, llama_threads=0)).validate_options({})
    assert own_choice.threads is None and "--threads" not in build_argv("x", "m", own_choice, 1, "m"), "0: its own"
    no_jinja = engine.validate_options({"extra_args": "--no-jinja"})
    assert "--jinja" not in build_argv(engine.binary, str(embedded_model), no_jinja, 1, embedded_model.name)
    assert engine.validate_options({}).n_gpu_layers == 999, "GPU layers default to all"
    # a path-valued flag with a relative path is resolved inside the roots; outside them it is refused
    relative = engine.validate_options({"extra_args": ["--mmproj", embedded_model.name]}).extra_args
    assert relative == ("--mmproj", str(embedded_model))
    lora = engine.validate_options({"extra_args": ["--lora-scaled", f"{embedded_model.name}:0.5"]}).extra_args
    assert lora == ("--lora-scaled", f"{embedded_model}:0.5")
    outside = tmp_path / "draft.gguf"
    outside.write_bytes(b"GGUF")
    with pytest.raises(ForbiddenError, match=r"--model-draft: .*outside the model roots"):
        engine.validate_options({"extra_args": ["--model-draft", str(outside)]})
    for bad in ({"ctx_size": 1.5}, {"parallel": 0}, {"n_gpu_layers": "all"}, {"flash_attn": 3}):
        with pytest.raises(BadRequestError):
            engine.validate_options(bad)
    for bad_args, why in (
        (["--model", "x"], "model_path"),
        (["--host", "0.0.0.0"], "loopback"),
        (["-hf", "user/model"], "Models tab"),
        ("--threads", "needs a value"),
        (["--no-such-flag"], "does not know"),
        ("'unterminated", "could not be parsed"),
        ([1], "list of strings"),
    ):
        with pytest.raises(BadRequestError, match=why):
            engine.validate_options({"extra_args": bad_args})


def test_help_parser_reads_names_values_and_paths() -> None:
    flags = parse_help(
        "-m,    --model FNAME                    model path\n"
        "--lora-scaled FNAME:SCALE,...           adapters\n"
        "--jinja, --no-jinja                     templates\n"
        "                                        (env: LLAMA_ARG_JINJA)\n"
        "-fa,   --flash-attn [on|off|auto]       flash attention\n"
    )
    assert flags["-m"] is flags["--model"] and flags["--model"].is_path(0)
    assert flags["--no-jinja"].n_values == 0 and flags["--flash-attn"].n_values == 1
    assert not flags["--flash-attn"].is_path(0) and flags["--lora-scaled"].is_path(0)


def test_exclusive_holder_loads_while_others_are_refused(settings, embedded_model) -> None:
    async def scenario() -> None:
        manager = _manager(settings)
        async with manager.exclusive("benchmark test") as hold:
            assert manager.busy_reason == "benchmark test"
            state = await hold.load("llamacpp", str(embedded_model), {"parallel": 1})
            assert state.status is EngineState.LOADED
            with pytest.raises(ConflictError, match="benchmark test"):
                await manager.load("llamacpp", str(embedded_model), {})
            with pytest.raises(ConflictError, match="benchmark test"):
                await manager.unload("llamacpp")
            await hold.unload("llamacpp")
        assert manager.busy_reason is None
        assert manager.get("llamacpp").status().status is EngineState.IDLE
        assert [r.ok for r in manager.load_history] == [True]
        await manager.shutdown()

    asyncio.run(scenario())


def test_a_stopped_child_turns_error_within_the_health_deadline_and_a_reload_works(settings, embedded_model) -> None:
    """SIGSTOP: the process is alive but answers nothing. The health watch notices within its deadline, kills the
    group (a stopped process still dies on SIGKILL) and the model is `error`; a reload starts a fresh child."""
    import dataclasses

    quick = dataclasses.replace(settings, health_interval_s=0.5, health_deadline_s=2.0)

    async def scenario() -> None:
        manager = _manager(quick)
        state = await manager.load("llamacpp", str(embedded_model), {"ctx_size": 1024, "parallel": 1})
        pid = state.pid
        engine = manager.get("llamacpp")
        os.kill(pid, signal.SIGSTOP)
        stopped = time.monotonic()
        while engine.status().status is not EngineState.ERROR:
            assert time.monotonic() - stopped < scaled(15), "the stopped child was not noticed"
            await asyncio.sleep(0.1)
        noticed = time.monotonic() - stopped
        print(f"FIGURE SIGSTOP child noticed and killed after {noticed:.1f} s (deadline 2 s, interval 0.5 s)")
        # silence is counted from the last answer, which came up to one interval and one probe (1 s) before the stop
        assert 2.0 - 0.5 - 1.0 <= noticed <= scaled(8.0)
        assert "did not answer /health" in engine.status().error
        deadline = time.monotonic() + scaled(5)
        while pid_exists(pid) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        assert not pid_exists(pid), "the stopped child's group was killed"
        with pytest.raises(ConflictError):
            manager.route("llamacpp", None)
        await manager.load("llamacpp", str(embedded_model), {"ctx_size": 1024, "parallel": 1})
        assert engine.status().status is EngineState.LOADED and engine.status().pid != pid
        await manager.shutdown()

    asyncio.run(scenario())
