"""What a memory estimate reports: the weights, KV cache and runtime a load will hold."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class MemoryEstimate:
    """What a load will hold once the model is up, split for users; total_bytes is what must be free."""

    weights_bytes: int
    kv_bytes: int
    overhead_bytes: int
    detail: str  # one line for users
    # Memory only long prompts touch: on the CPU, llama.cpp's attention-score buffer is reserved at load but its
    # pages become resident only as prompts fill the context. Not in total_bytes; a caller may warn on it.
    peak_extra_bytes: int = 0

    @property
    def total_bytes(self) -> int:
        return self.weights_bytes + self.kv_bytes + self.overhead_bytes

    @property
    def peak_bytes(self) -> int:
        return self.total_bytes + self.peak_extra_bytes
