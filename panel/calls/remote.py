"""A remote OpenAI-compatible endpoint (a hosted API, another panel, a second llama-server) answering one request
through the same Tap as the engines, so its figures (tokens/s, TTFT, tokens) have the one definition. Its key is
sent as a Bearer token for that request only: never stored, logged or shown (RemoteEndpoint's repr leaves it out),
and the answer is not observed by /metrics or the request log, which are this machine's."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from panel.calls.stats import StreamStats
from panel.calls.tap import Outcome, Tap
from panel.credentials import bearer_headers, checked_key
from panel.engines.base import REMOTE, EngineReply
from panel.errors import BadRequestError, EngineFailure, EngineUnavailableError

CONNECT_TIMEOUT_S = 10.0
ANSWER_TIMEOUT_S = 300.0  # the longest wait for the next bytes of its answer


def check_remote_url(url: str) -> None:
    """BadRequestError unless `url` is a plain http(s) base URL (no credentials, no query)."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc or parts.username or parts.query:
        raise BadRequestError(f"remote target: an http(s) base URL like http://host:8080/v1, got {url!r}")


def remote_base_url(url: str) -> str:
    """The root the /v1/... paths go under: the URL less a trailing /v1."""
    url = url.rstrip("/")
    return url[: -len("/v1")] if url.endswith("/v1") else url


def remote_identity(url: str) -> str:
    """Which remote this is, in results: scheme://host:port/path (no credentials)."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}{parts.path}".rstrip("/")


@dataclass(frozen=True)
class RemoteEndpoint:
    url: str  # its OpenAI base URL, e.g. https://host/v1
    model: str
    api_key: str = field(default="", repr=False)

    def checked(self) -> RemoteEndpoint:
        """Itself, or BadRequestError for a URL that is not a plain http(s) base URL or a missing model name."""
        if not self.model.strip():
            raise BadRequestError("a remote endpoint needs the model name it serves")
        checked_key(self.api_key, "the remote endpoint's API key")
        check_remote_url(self.url.strip())
        return self

    @property
    def identity(self) -> str:
        """scheme://host:port/path, no credentials: what results may show of it."""
        return remote_identity(self.url.strip())

    @property
    def base_url(self) -> str:
        """The root the /v1/... paths go under."""
        return remote_base_url(self.url.strip())

    @property
    def label(self) -> str:
        """The model and where it is, as a battle records it."""
        return f"{self.model.strip()} @ {self.identity}"


async def open_remote(
    endpoint: RemoteEndpoint, path: str, body: dict[str, Any], who: str, timeout_s: float = ANSWER_TIMEOUT_S
) -> Tap:
    """Send one request to the endpoint and tap its answer (read it, or close the Tap, to end the call).
    EngineUnavailableError when it cannot be reached."""
    import httpx

    endpoint.checked()
    headers = bearer_headers(endpoint.api_key, "the remote endpoint's API key")
    client = httpx.AsyncClient(timeout=httpx.Timeout(timeout_s, connect=CONNECT_TIMEOUT_S), headers=headers)
    sent = time.perf_counter()
    try:
        response = await client.send(
            client.build_request("POST", endpoint.base_url + path, json={**body, "model": endpoint.model}), stream=True
        )
    except httpx.HTTPError as exc:
        await client.aclose()
        raise EngineUnavailableError(f"cannot reach {endpoint.identity} ({type(exc).__name__})") from None

    async def chunks() -> AsyncIterator[bytes]:
        try:
            async for piece in response.aiter_bytes():
                yield piece
        except httpx.HTTPError as exc:
            raise EngineFailure(f"{endpoint.identity} broke off its answer ({type(exc).__name__})") from None

    async def close() -> None:
        try:
            await response.aclose()
        finally:
            await client.aclose()

    reply = EngineReply(response.status_code, response.headers.get("content-type", ""), chunks(), close)
    outcome = Outcome(engine=REMOTE, model=endpoint.label, path=path, stats=StreamStats(sent), who=who)
    return Tap(reply, outcome, drop_usage=False, observers=[])
