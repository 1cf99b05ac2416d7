"""Transformers engine: Hugging Face Transformers' own OpenAI server (`transformers serve`), one child per model."""
