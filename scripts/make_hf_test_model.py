"""Make the HF-format test model for vLLM from the embedded SmolLM2 GGUF (idempotent; prints what it does).

The folder is built once in ${PANEL_CACHE:-~/.cache/panel}/hf-models/SmolLM2-135M-Instruct (outside the
checkout) and linked file by file into models/SmolLM2-135M-Instruct-hf: a real folder of symlinks, so it
lies inside the model roots (a symlinked folder would resolve outside them and be refused).

    python scripts/make_hf_test_model.py [--force]
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
MODEL_NAME = "SmolLM2-135M-Instruct"
LINK_NAME = "SmolLM2-135M-Instruct-hf"
DONE_MARKER = ".panel-converted"


def cache_root() -> Path:
    return Path(os.environ.get("PANEL_CACHE", Path.home() / ".cache" / "panel")).expanduser()


def convert(gguf: Path, out: Path) -> None:
    """Dequantize the GGUF into a bfloat16 safetensors checkpoint with tokenizer and chat template."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    print(f"reading {gguf} with transformers' GGUF reader (dequantizes to bfloat16)")
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.bfloat16)
    # The reader leaves its GGUF quantizer attached; a checkpoint saved with it claims a quantization
    # vLLM cannot load, so drop it: the weights are already plain float tensors.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    print(f"writing safetensors to {tmp}")
    model.save_pretrained(tmp, safe_serialization=True)
    tokenizer.save_pretrained(tmp)
    (tmp / DONE_MARKER).write_text(f"converted from {gguf.name}\n")
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)


def link_into_models(target: Path, folder: Path) -> None:
    """Make `folder` a real directory holding one symlink per file of `target` (replacing what was there)."""
    if folder.is_symlink() or folder.is_file():
        folder.unlink()
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.iterdir():
        if old.is_symlink() or old.is_file():
            old.unlink()
    for src in sorted(target.iterdir()):
        (folder / src.name).symlink_to(src)
    print(f"linked the files of {target} into {folder}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--force", action="store_true", help="convert again even if the cached folder exists")
    parser.add_argument("--models-dir", type=Path, default=REPO_ROOT / "models")
    args = parser.parse_args(argv)
    gguf = args.models_dir / GGUF_NAME
    out = cache_root() / "hf-models" / MODEL_NAME
    if not gguf.is_file():
        print(f"error: {gguf} is missing: install the embedded model first (launch.sh does)", file=sys.stderr)
        return 1
    if (out / DONE_MARKER).is_file() and not args.force:
        print(f"{out} exists (converted earlier); use --force to convert again")
    else:
        out.parent.mkdir(parents=True, exist_ok=True)
        convert(gguf, out)
    link_into_models(out, args.models_dir / LINK_NAME)
    print(f"done: load it on vLLM as models/{LINK_NAME}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
