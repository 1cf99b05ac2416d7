"""vLLM in this process: the AsyncLLM engine, vLLM's own OpenAI app over it, its options, and multi-node workers."""
