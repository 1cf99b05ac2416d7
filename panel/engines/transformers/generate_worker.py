"""The Transformers child for a model that brings its own generation method (Dream's `diffusion_generate` with its
`steps`): it loads the folder, applies the chat template, calls that method and answers the OpenAI chat API behind
the panel's key, one generation at a time. A method that returns the whole answer at once is streamed as one content
chunk, then the final chunk with `usage` and the engine's `timings` (the whole call, prompt included).

Run as `python -m panel.engines.transformers.generate_worker --model <folder> --method diffusion_generate --port N
...` by TransformersChild; the key arrives by environment (keyed_serve.KEY_ENV)."""

from __future__ import annotations

import argparse
import asyncio
import inspect
import json
import os
import sys
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from panel.engines.base import WHOLE_ANSWER
from panel.engines.transformers.keyed_serve import KEY_ENV, KeyGate

DEFAULT_MAX_TOKENS = 256
# the library's auto classes a folder's auto_map may name, tried in this order
AUTO_CLASSES = ("AutoModelForCausalLM", "AutoModel")


class ChatBody(BaseModel):
    """The OpenAI chat fields this worker reads; others (the panel's, the client's) are accepted and unused."""

    model_config = ConfigDict(extra="allow")
    messages: list[dict[str, Any]] = Field(min_length=1)
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    temperature: float | None = Field(default=None, ge=0)
    top_p: float | None = Field(default=None, gt=0, le=1)
    stream: bool = False
    tools: list[dict[str, Any]] | None = None
    ignore_eos: bool = False  # benchmarks: every position the method filled counts, end-of-sequence or not

    @property
    def new_tokens(self) -> int:
        return self.max_completion_tokens or self.max_tokens or DEFAULT_MAX_TOKENS


@dataclass(frozen=True)
class Answer:
    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str  # "stop" at an end-of-sequence token, else "length"
    generation_ms: float  # the whole call of the model's method

    def usage(self) -> dict[str, int]:
        total = self.prompt_tokens + self.completion_tokens
        return {"prompt_tokens": self.prompt_tokens, "completion_tokens": self.completion_tokens, "total_tokens": total}


class Generator:
    """The loaded model, its tokenizer and the method that generates; one call at a time."""

    def __init__(self, args: argparse.Namespace) -> None:
        import torch
        from transformers import AutoConfig, AutoTokenizer

        folder = str(args.model)
        trust = bool(args.trust_remote_code)
        config = AutoConfig.from_pretrained(folder, trust_remote_code=trust)
        auto_map = getattr(config, "auto_map", None) or {}
        auto_name = next((name for name in AUTO_CLASSES if name in auto_map), AUTO_CLASSES[0])
        import transformers

        auto_class = getattr(transformers, auto_name)
        dtype: Any = "auto" if args.dtype == "auto" else getattr(torch, args.dtype)
        extra: dict[str, Any] = {"attn_implementation": args.attn_implementation} if args.attn_implementation else {}
        self.model = auto_class.from_pretrained(folder, trust_remote_code=trust, dtype=dtype, **extra).eval()
        device = args.device
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self.device = f"cuda:{device}" if device.isdigit() else device
        self.model.to(self.device)
        self.tokenizer = AutoTokenizer.from_pretrained(folder, trust_remote_code=trust)
        if args.chat_template:
            self.tokenizer.chat_template = Path(args.chat_template).read_text(encoding="utf-8")
        method = getattr(self.model, args.method, None)
        if not callable(method):
            sys.exit(f"{type(self.model).__name__} has no method {args.method!r}: load it without generate_method")
        self.method = method
        self.method_name = args.method
        self.steps: int | None = args.steps
        self.name = args.name
        self.stop_ids = _stop_ids(self.model, self.tokenizer)
        self._lock = asyncio.Lock()

    def _kwargs(self, body: ChatBody, attention_mask: Any) -> dict[str, Any]:
        """The method's arguments (Dream's names), only those it takes unless it takes any keyword."""
        wanted: dict[str, Any] = {
            "attention_mask": attention_mask,
            "max_new_tokens": body.new_tokens,
            "return_dict_in_generate": True,
        }
        if self.steps is not None:
            wanted["steps"] = self.steps
        if body.temperature is not None:
            wanted["temperature"] = body.temperature
        if body.top_p is not None:
            wanted["top_p"] = body.top_p
        params = inspect.signature(self.method).parameters
        if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
            return wanted
        return {k: v for k, v in wanted.items() if k in params}

    def _generate(self, body: ChatBody) -> Answer:
        import torch

        template_kwargs: dict[str, Any] = {"tools": body.tools} if body.tools else {}
        inputs = self.tokenizer.apply_chat_template(
            body.messages,
            add_generation_prompt=True,
            return_tensors="pt",
            return_dict=True,
            **template_kwargs,
        )
        input_ids = inputs["input_ids"].to(self.device)
        attention_mask = inputs["attention_mask"].to(self.device)
        started = time.perf_counter()
        with torch.inference_mode():
            output = self.method(input_ids, **self._kwargs(body, attention_mask))
        generation_ms = (time.perf_counter() - started) * 1000
        sequences = getattr(output, "sequences", output)
        new_ids = [int(t) for t in sequences[0][input_ids.shape[1] :].tolist()][: body.new_tokens]
        stop = None if body.ignore_eos else next((i for i, t in enumerate(new_ids) if t in self.stop_ids), None)
        kept = new_ids if stop is None else new_ids[:stop]
        return Answer(
            text=self.tokenizer.decode(kept, skip_special_tokens=True),
            prompt_tokens=int(input_ids.shape[1]),
            completion_tokens=len(kept),
            finish_reason="length" if stop is None else "stop",
            generation_ms=generation_ms,
        )

    async def answer(self, body: ChatBody) -> Answer:
        async with self._lock:
            return await asyncio.to_thread(self._generate, body)

    def timings(self, answer: Answer) -> dict[str, Any]:
        """What the call took: one figure for prompt and generation together (a diffusion model does both at once)."""
        return {
            "prompt_n": answer.prompt_tokens,
            "predicted_n": answer.completion_tokens,
            "generation_ms": round(answer.generation_ms, 3),
            "method": self.method_name,
            "steps": self.steps,
            WHOLE_ANSWER: True,
        }


def _stop_ids(model: Any, tokenizer: Any) -> set[int]:
    ids: set[int] = set()
    for source in (getattr(model, "generation_config", None), getattr(model, "config", None), tokenizer):
        eos = getattr(source, "eos_token_id", None)
        if isinstance(eos, int):
            ids.add(eos)
        elif isinstance(eos, (list, tuple)):
            ids.update(int(i) for i in eos)
    return ids


def build_app(generator: Generator) -> Any:
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse, Response, StreamingResponse
    from starlette.routing import Route

    async def health(_: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def models(_: Request) -> Response:
        return JSONResponse(
            {"object": "list", "data": [{"id": generator.name, "object": "model", "owned_by": "panel"}]}
        )

    async def chat(request: Request) -> Response:
        try:
            body = ChatBody.model_validate(json.loads(await request.body()))
        except (ValueError, ValidationError) as exc:
            message = str(exc).splitlines()[0] if isinstance(exc, ValidationError) else f"not JSON: {exc}"
            return _error(400, f"bad chat request: {message}")
        created, ident = int(time.time()), f"chatcmpl-{uuid.uuid4().hex}"
        if body.stream:
            return StreamingResponse(_stream(generator, body, ident, created), media_type="text/event-stream")
        try:
            answer = await generator.answer(body)
        except Exception as exc:  # the model's own code failed: this request's error, the worker lives on
            return _error(500, f"{generator.method_name} failed: {exc!r}")
        choice = {
            "index": 0,
            "message": {"role": "assistant", "content": answer.text},
            "finish_reason": answer.finish_reason,
        }
        return JSONResponse(
            {
                "id": ident,
                "object": "chat.completion",
                "created": created,
                "model": generator.name,
                "choices": [choice],
                "usage": answer.usage(),
                "timings": generator.timings(answer),
            }
        )

    def _error(status: int, message: str) -> Response:
        return JSONResponse({"error": {"message": message, "type": "invalid_request_error", "code": status}}, status)

    return Starlette(
        routes=[
            Route("/health", health),
            Route("/v1/models", models),
            Route("/v1/chat/completions", chat, methods=["POST"]),
        ]
    )


async def _stream(generator: Generator, body: ChatBody, ident: str, created: int) -> AsyncIterator[bytes]:
    """The role at once, the whole answer as one content chunk when the method returns, then the finish and usage."""

    def event(choices: list[dict[str, Any]], **extra: Any) -> bytes:
        chunk = {
            "id": ident,
            "object": "chat.completion.chunk",
            "created": created,
            "model": generator.name,
            "choices": choices,
            **extra,
        }
        return f"data: {json.dumps(chunk, ensure_ascii=False)}\n\n".encode()

    yield event([{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}])
    try:
        answer = await generator.answer(body)
    except Exception as exc:
        error = {"message": f"{generator.method_name} failed: {exc!r}", "type": "server_error", "code": 500}
        yield f"data: {json.dumps({'error': error})}\n\n".encode()
        return
    if answer.text:
        yield event([{"index": 0, "delta": {"content": answer.text}, "finish_reason": None}])
    yield event([{"index": 0, "delta": {}, "finish_reason": answer.finish_reason}])
    yield event([], usage=answer.usage(), timings=generator.timings(answer))
    yield b"data: [DONE]\n\n"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="generate_worker", description=__doc__)
    parser.add_argument("--model", required=True, type=Path)
    parser.add_argument("--name", required=True)
    parser.add_argument("--method", required=True)
    parser.add_argument("--port", required=True, type=int)
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--chat-template", default=None)
    parser.add_argument("--attn-implementation", default=None)
    parser.add_argument("--trust-remote-code", action="store_true")
    return parser.parse_args(argv)


def main() -> None:
    key = os.environ.pop(KEY_ENV, "")
    if not key:
        sys.exit(f"{KEY_ENV} is not set: this child is started by the panel")
    args = parse_args()
    print(f"[worker] loading {args.model} for {args.method}", flush=True)
    generator = Generator(args)
    print(f"[worker] {type(generator.model).__name__} loaded on {generator.device}", flush=True)
    import uvicorn

    uvicorn.run(KeyGate(build_app(generator), key), host="127.0.0.1", port=args.port, log_level="info")


if __name__ == "__main__":
    main()
