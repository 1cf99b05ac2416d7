"""The model library: one scanner of the model folders (which engine loads what), GGUF and Hugging Face metadata,
downloads from the Hub, the library's routes and CLI."""
