"""A tiny multimodal projector GGUF for tests: a 2-layer CLIP-style vision tower with a LLaVA MLP projector and seeded
random weights, sized for a language model of `n_embd_llm` (SmolLM2-135M: 576). llama-server loads it with --mmproj
as it would a real one, so the whole image path runs (decode, encode, answer); what the model then says about the
image is noise. No vision model can be downloaded here (no Hub access), and no PyPI package ships a small one."""

from __future__ import annotations

from pathlib import Path

import numpy as np

N_EMBD = 32  # the vision tower's width
N_FF = 64
N_HEAD = 2
N_LAYER = 2  # LLaVA reads the second-to-last layer: one layer runs
IMAGE_SIZE = 32
PATCH_SIZE = 16
PROJ = 64


def write_tiny_mmproj(path: Path, n_embd_llm: int = 576, seed: int = 0) -> Path:
    import gguf

    rng = np.random.default_rng(seed)

    def weights(*shape: int) -> np.ndarray:
        return (rng.standard_normal(shape) * 0.02).astype(np.float32)

    writer = gguf.GGUFWriter(str(path), "clip")
    writer.add_bool("clip.has_vision_encoder", True)
    writer.add_string("clip.projector_type", "mlp")
    writer.add_bool("clip.use_gelu", True)
    writer.add_uint32("clip.vision.embedding_length", N_EMBD)
    writer.add_uint32("clip.vision.feed_forward_length", N_FF)
    writer.add_uint32("clip.vision.attention.head_count", N_HEAD)
    writer.add_uint32("clip.vision.block_count", N_LAYER)
    writer.add_uint32("clip.vision.projection_dim", n_embd_llm)
    writer.add_float32("clip.vision.attention.layer_norm_epsilon", 1e-6)
    writer.add_uint32("clip.vision.image_size", IMAGE_SIZE)
    writer.add_uint32("clip.vision.patch_size", PATCH_SIZE)
    writer.add_array("clip.vision.image_mean", [0.5, 0.5, 0.5])
    writer.add_array("clip.vision.image_std", [0.5, 0.5, 0.5])
    n_pos = (IMAGE_SIZE // PATCH_SIZE) ** 2
    # numpy shapes are ggml's ne reversed: a weight of ne [in, out] is an (out, in) array
    writer.add_tensor("v.patch_embd.weight", weights(N_EMBD, 3, PATCH_SIZE, PATCH_SIZE).astype(np.float16))
    writer.add_tensor("v.position_embd.weight", weights(n_pos, N_EMBD))
    for layer in range(N_LAYER):
        block = f"v.blk.{layer}"
        for name in ("attn_q", "attn_k", "attn_v", "attn_out"):
            writer.add_tensor(f"{block}.{name}.weight", weights(N_EMBD, N_EMBD))
            writer.add_tensor(f"{block}.{name}.bias", np.zeros(N_EMBD, np.float32))
        for norm in ("ln1", "ln2"):
            writer.add_tensor(f"{block}.{norm}.weight", np.ones(N_EMBD, np.float32))
            writer.add_tensor(f"{block}.{norm}.bias", np.zeros(N_EMBD, np.float32))
        writer.add_tensor(f"{block}.ffn_up.weight", weights(N_FF, N_EMBD))
        writer.add_tensor(f"{block}.ffn_up.bias", np.zeros(N_FF, np.float32))
        writer.add_tensor(f"{block}.ffn_down.weight", weights(N_EMBD, N_FF))
        writer.add_tensor(f"{block}.ffn_down.bias", np.zeros(N_EMBD, np.float32))
    writer.add_tensor("mm.0.weight", weights(PROJ, N_EMBD))
    writer.add_tensor("mm.0.bias", np.zeros(PROJ, np.float32))
    writer.add_tensor("mm.2.weight", weights(n_embd_llm, PROJ))
    writer.add_tensor("mm.2.bias", np.zeros(n_embd_llm, np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path
