"""llama.cpp's llama-server as supervised children: the binary, its argv, the supervisor, the pass-through API."""
