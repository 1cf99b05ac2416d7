"""Which engine API paths the panel carries, in one place (the routes, the gate and the tap all read this)."""

from __future__ import annotations

# Paths forwarded to the engine's own server, body and answer unchanged. Both engines serve most of them
# (llama-server all; vLLM the OpenAI ones, /tokenize and /detokenize); an engine without one answers 404 itself.
FORWARDED_PATHS = (
    "/v1/chat/completions",
    "/v1/completions",
    "/v1/embeddings",
    "/v1/rerank",
    "/v1/messages",
    "/v1/messages/count_tokens",
    "/v1/responses",
    "/infill",
    "/tokenize",
    "/detokenize",
    "/apply-template",
)

# Paths that make the engine compute over a prompt: the per-user concurrency limit and the max_tokens cap apply,
# and the tap's figures go to /metrics. (Every forwarded path needs at least the viewer role.)
GENERATION_PATHS = frozenset(
    {"/v1/chat/completions", "/v1/completions", "/v1/embeddings", "/v1/rerank", "/v1/messages", "/v1/responses"}
    | {"/infill"}
)

# Paths whose streamed answers end with an OpenAI usage chunk when stream_options.include_usage is set.
USAGE_OPTION_PATHS = frozenset({"/v1/chat/completions", "/v1/completions"})

# Fields only the panel reads; removed before the body goes to the engine.
PANEL_FIELDS = ("engine",)

# Every name a request may give its output length by: OpenAI, llama-server's native one, the Responses API.
MAX_TOKENS_FIELDS = ("max_tokens", "max_completion_tokens", "n_predict", "max_output_tokens")
