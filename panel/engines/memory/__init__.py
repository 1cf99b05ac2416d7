"""Memory fit: what loading a model will take on llama-server or vLLM, and what the device has free, so a load that
cannot fit is refused with figures instead of an OOM kill. llama_fit and vllm_fit estimate, device reads the
device, estimate holds the result."""
