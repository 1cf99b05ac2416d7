"""The model library: one scanner of the model folders (which engine loads what), GGUF and Hugging Face metadata,
downloads from the Hub. Its routes are in panel/api/models.py, its CLI in panel/cli/models.py."""
