"""A mock OpenAI-compatible SSE server on loopback that emits tokens at a known rate, for measuring the client.

Run it as its own process (so the client under test does not share its event loop):

    python -m panel.bench.mock_sse [--port 0]      # prints "PORT <n>" once listening

Each request's JSON body may set, besides the usual max_tokens and stream_options:
    mock_tokens_per_s    emission rate per stream (default 100)
    mock_tokens_per_chunk  k tokens in each SSE chunk (default 1)
    mock_ttft_ms         delay before the first chunk (default 50)
    mock_stamp           put the mock's send time (time.perf_counter) in each chunk as mock_t
    mock_status          answer with this HTTP status and an OpenAI error body instead of streaming
Chunk i (0-based) is sent at send + ttft + i·k/rate on an absolute schedule, so delays do not accumulate; the
last chunk may carry fewer tokens. The usage chunk reports completion_tokens = max_tokens exactly.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any


async def _read_request(reader: asyncio.StreamReader) -> tuple[str, dict[str, Any]] | None:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    path = lines[0].split(" ")[1]
    length = 0
    for line in lines[1:]:
        if line.lower().startswith("content-length:"):
            length = int(line.split(":", 1)[1])
    body = json.loads(await reader.readexactly(length)) if length else {}
    return path, body


def _event(payload: dict[str, Any]) -> bytes:
    data = b"data: " + json.dumps(payload).encode() + b"\n\n"
    return f"{len(data):x}\r\n".encode() + data + b"\r\n"


async def _stream(writer: asyncio.StreamWriter, path: str, body: dict[str, Any]) -> None:
    loop = asyncio.get_running_loop()
    start = loop.time()
    status = int(body.get("mock_status", 200))
    if status != 200:
        err = json.dumps({"error": {"message": f"mock error {status}", "type": "invalid_request_error"}}).encode()
        writer.write(
            f"HTTP/1.1 {status} Error\r\nContent-Type: application/json\r\nContent-Length: {len(err)}\r\n\r\n".encode()
            + err
        )
        await writer.drain()
        return
    rate = float(body.get("mock_tokens_per_s", 100.0))
    k = max(1, int(body.get("mock_tokens_per_chunk", 1)))
    ttft = float(body.get("mock_ttft_ms", 50.0)) / 1000.0
    n = int(body.get("max_tokens") or 16)
    chat = path.endswith("/chat/completions")
    stamp = bool(body.get("mock_stamp"))
    writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n")
    sent, i = 0, 0
    events: dict[int, bytes] = {}  # encoded once per chunk size: the mock must stay cheap at 256 streams
    while sent < n:
        take = min(k, n - sent)
        delay = start + ttft + i * k / rate - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        if take not in events or stamp:
            text = "tok " * take
            choice = {"index": 0, "delta": {"content": text}} if chat else {"index": 0, "text": text}
            payload: dict[str, Any] = {"choices": [choice]}
            if stamp:  # the mock's own send time; CLOCK_MONOTONIC, so comparable across processes
                payload["mock_t"] = time.perf_counter()
            events[take] = _event(payload)
        writer.write(events[take])
        await writer.drain()
        sent += take
        i += 1
    final = (
        {"index": 0, "delta": {}, "finish_reason": "length"}
        if chat
        else {"index": 0, "text": "", "finish_reason": "length"}
    )
    writer.write(_event({"choices": [final]}))
    if (body.get("stream_options") or {}).get("include_usage"):
        usage = {"prompt_tokens": 7, "completion_tokens": n, "total_tokens": n + 7}
        writer.write(_event({"choices": [], "usage": usage}))
    data = b"data: [DONE]\n\n"
    writer.write(f"{len(data):x}\r\n".encode() + data + b"\r\n0\r\n\r\n")
    await writer.drain()


async def _handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while True:
            request = await _read_request(reader)
            if request is None:
                break
            await _stream(writer, *request)
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    finally:
        writer.close()


async def serve(port: int) -> None:
    server = await asyncio.start_server(_handle, "127.0.0.1", port, backlog=1024)
    print(f"PORT {server.sockets[0].getsockname()[1]}", flush=True)
    async with server:
        await server.serve_forever()


@contextlib.contextmanager
def running_mock(timeout_s: float = 30.0) -> Iterator[str]:
    """Start the mock as a child process; yield its base URL; stop it after."""
    proc = subprocess.Popen(
        [sys.executable, str(Path(__file__).resolve()), "--port", "0"],
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        deadline = time.monotonic() + timeout_s
        line = ""
        while not line.startswith("PORT "):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("mock SSE server did not start")
            line = proc.stdout.readline() if proc.stdout else ""
        yield f"http://127.0.0.1:{int(line.split()[1])}"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(parser.parse_args().port))
