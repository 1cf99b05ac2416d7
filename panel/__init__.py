"""The panel: a Gradio control panel and OpenAI-compatible API for a single-GPU LLM workstation."""

__version__ = "0.1.0"
