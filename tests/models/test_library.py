"""The model library: metadata read from real GGUF and safetensors files made here, engine choices, delete."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from panel.errors import BadRequestError, ConflictError, ForbiddenError, NotFoundError
from panel.models import library
from panel.models.gguf import read_gguf
from tests.models.hub_server import GGUF_PARAMS, HF_FOLDER_PARAMS, make_gguf, make_hf_folder


@pytest.fixture
def roots(tmp_path: Path) -> tuple[Path, ...]:
    models = (tmp_path / "models").resolve()
    extra = (tmp_path / "more-models").resolve()
    make_hf_folder(models / "tiny-hf")
    make_gguf(models / "tiny-GGUF" / "tiny-Q4_K_M.gguf", file_type=15, context_length=8192)
    make_gguf(models / "split" / "big-Q8_0-00001-of-00002.gguf", file_type=7)
    make_gguf(models / "split" / "big-Q8_0-00002-of-00002.gguf", file_type=7)
    make_gguf(models / "tiny-GGUF" / "mmproj-tiny-F16.gguf", file_type=1, arch="clip")
    make_gguf(models / ".downloads" / "half" / "partial.gguf")  # staging: never listed
    make_gguf(extra / "other.gguf", file_type=2, arch="qwen3", context_length=32768)
    return models, extra


def by_name(entries: list[library.LibraryEntry]) -> dict[str, library.LibraryEntry]:
    return {e.name: e for e in entries}


def test_scan_reads_metadata_from_real_files(roots: tuple[Path, ...]) -> None:
    entries = by_name(library.scan(roots))
    assert set(entries) == {
        "models/tiny-hf",
        "models/tiny-GGUF/tiny-Q4_K_M.gguf",
        "models/split/big-Q8_0-00001-of-00002.gguf",
        "models/tiny-GGUF/mmproj-tiny-F16.gguf",
        "more-models/other.gguf",
    }
    hf = entries["models/tiny-hf"]
    assert (hf.format, hf.engine, hf.architecture) == ("hf", "vllm", "LlamaForCausalLM")
    assert (hf.parameters, hf.context_length, hf.quantization) == (HF_FOLDER_PARAMS, 2048, "BF16")
    assert hf.size_bytes == sum(p.stat().st_size for p in (roots[0] / "tiny-hf").iterdir())
    q4 = entries["models/tiny-GGUF/tiny-Q4_K_M.gguf"]
    assert (q4.format, q4.engine, q4.architecture) == ("gguf", "llamacpp", "llama")
    assert (q4.parameters, q4.context_length, q4.quantization) == (GGUF_PARAMS, 8192, "Q4_K_M")
    split = entries["models/split/big-Q8_0-00001-of-00002.gguf"]
    assert split.files == 2 and split.parameters == 2 * GGUF_PARAMS and split.quantization == "Q8_0"
    assert split.size_bytes == sum(p.stat().st_size for p in (roots[0] / "split").iterdir())
    assert entries["models/tiny-GGUF/mmproj-tiny-F16.gguf"].engine is None
    other = entries["more-models/other.gguf"]
    assert (other.architecture, other.context_length, other.quantization) == ("qwen3", 32768, "Q4_0")


def test_the_embedded_model_reads_like_llama_cpp_says(embedded_model: Path) -> None:
    entry = library.gguf_entry(embedded_model, (embedded_model.parent.resolve(),))
    assert (entry.architecture, entry.quantization, entry.context_length) == ("llama", "Q4_1", 8192)
    assert 130e6 < (entry.parameters or 0) < 140e6  # SmolLM2-135M


def test_gguf_headers_match_the_gguf_packages_reader_and_are_read_again_when_the_file_changes(
    embedded_model: Path, tmp_path: Path
) -> None:
    """The panel's header reader (mapped, vocabulary skipped) against the gguf package's own GGUFReader on the
    embedded model (49k-string vocabulary and merges); a rewritten file is read again, a truncated one is an error."""
    import gguf as gguf_package

    header = read_gguf(embedded_model)
    reader = gguf_package.GGUFReader(embedded_model)
    assert set(header.metadata) == {k for k in reader.fields if not k.startswith("GGUF.")}
    vocab = reader.fields["tokenizer.ggml.tokens"]
    assert header.metadata["tokenizer.ggml.tokens"] == len(vocab.data) > 40_000, "a string array stands for its length"
    assert header.metadata["general.architecture"] == "llama"
    assert header.n_params == sum(int(t.n_elements) for t in reader.tensors)
    assert read_gguf(embedded_model) is header, "the same file is not parsed twice"

    copy = tmp_path / "m-Q8_0.gguf"
    make_gguf(copy, file_type=7, context_length=4096)
    first = read_gguf(copy)
    make_gguf(copy, file_type=7, context_length=8192)
    os.utime(copy, ns=(time.time_ns() + 10**9, time.time_ns() + 10**9))  # a new version even on a coarse clock
    assert first.metadata["llama.context_length"] == 4096 and read_gguf(copy).metadata["llama.context_length"] == 8192
    with embedded_model.open("rb") as fh:
        head = fh.read(400_000)
    for cut in (30, 200_000):  # inside the first key; inside the vocabulary
        broken = tmp_path / f"cut-{cut}.gguf"
        broken.write_bytes(head[:cut])
        entry = library.gguf_entry(broken, (tmp_path,))
        assert entry.note is not None and entry.note.startswith("unreadable GGUF header"), entry


def test_hf_quantization_configs(tmp_path: Path) -> None:
    assert library.hf_quant_name({"quantization_config": {"quant_method": "fp8"}}) == "FP8"
    assert library.hf_quant_name({"quantization_config": {"quant_method": "mxfp4"}}) == "MXFP4"
    assert library.hf_quant_name({"quantization_config": {"quant_method": "awq", "bits": 4}}) == "AWQ 4-bit"
    assert library.hf_quant_name({"quantization_config": {"quant_method": "gptq", "bits": 8}}) == "GPTQ 8-bit"
    folder = tmp_path / "m" / "gemma"
    make_hf_folder(folder)
    text = {"max_position_embeddings": 32768}
    config = {
        "architectures": ["Gemma3nForConditionalGeneration"],
        "text_config": text,
        "quantization_config": {"quant_method": "fp8"},
    }
    (folder / "config.json").write_text(json.dumps(config))
    entry = library.hf_entry(folder, ((tmp_path / "m").resolve(),))
    assert (entry.context_length, entry.quantization) == (32768, "FP8")


def test_choices_per_engine(roots: tuple[Path, ...]) -> None:
    gguf = [path for _, path in library.choices(roots, "llamacpp")]
    assert str(roots[0] / "tiny-GGUF" / "tiny-Q4_K_M.gguf") in gguf
    assert not any("mmproj" in p or "00002-of" in p or ".downloads" in p for p in gguf)
    assert [path for _, path in library.choices(roots, "vllm")] == [str(roots[0] / "tiny-hf")]
    label = dict((p, label) for label, p in library.choices(roots, "llamacpp"))[gguf[0]]
    assert label.startswith("models/")


def test_which_engine_loads_what(roots: tuple[Path, ...]) -> None:
    assert (library.format_for_engine("llamacpp"), library.format_for_engine("vllm")) == (library.GGUF, library.HF)
    assert library.engine_for_path("models/x/Y.GGUF") == "llamacpp" and library.engine_for_path("models/x") == "vllm"
    with pytest.raises(BadRequestError, match="unknown engine"):
        library.format_for_engine("tgi")
    # a folder with its own code, named relative to the roots as loads name it: Transformers, not the format's vLLM
    custom = roots[0] / "custom-code"
    custom.mkdir(exist_ok=True)
    config = {"architectures": ["DreamModel"], "auto_map": {"AutoModel": "modeling_dream.DreamModel"}}
    (custom / "config.json").write_text(json.dumps(config))
    assert library.engine_for_path(str(custom)) == "transformers"
    assert library.engine_for_path("custom-code", roots) == library.engine_for_path("models/custom-code", roots)
    assert library.engine_for_path("custom-code", roots) == "transformers"
    assert library.engine_for_path("no-such-folder", roots) == "vllm"  # the load then says it does not exist
    gguf = roots[0] / "tiny-GGUF" / "tiny-Q4_K_M.gguf"
    assert library.resolve_for_engine("models/tiny-GGUF/tiny-Q4_K_M.gguf", roots, "llamacpp") == gguf
    assert library.resolve_for_engine("models/tiny-hf", roots, "vllm") == roots[0] / "tiny-hf"
    with pytest.raises(BadRequestError, match="choose the file"):
        library.resolve_for_engine("models/tiny-GGUF", roots, "llamacpp")
    with pytest.raises(BadRequestError, match="load it on the llamacpp engine"):
        library.resolve_for_engine(str(gguf), roots, "vllm")
    with pytest.raises(BadRequestError, match=r"no config\.json"):
        library.resolve_for_engine("models/tiny-GGUF", roots, "vllm")
    (roots[0] / "fake.gguf").write_bytes(b"nope")
    with pytest.raises(BadRequestError, match="wrong magic"):
        library.resolve_for_engine("models/fake.gguf", roots, "llamacpp")


def test_delete_refuses_outside_roots(roots: tuple[Path, ...], tmp_path: Path) -> None:
    outside = tmp_path / "precious.gguf"
    make_gguf(outside)
    with pytest.raises(ForbiddenError, match="outside the model roots"):
        library.delete_model(str(outside), roots)
    with pytest.raises(ForbiddenError):
        library.delete_model("../precious.gguf", roots)
    with pytest.raises((ForbiddenError, NotFoundError)):
        library.delete_model("models/../precious.gguf", roots)
    (roots[0] / "sneaky.gguf").symlink_to(outside)
    with pytest.raises(ForbiddenError):
        library.delete_model(str(roots[0] / "sneaky.gguf"), roots)
    with pytest.raises((ForbiddenError, NotFoundError)):
        library.delete_model("models/sneaky.gguf", roots)
    with pytest.raises(ForbiddenError, match="model root"):
        library.delete_model(str(roots[0]), roots)
    with pytest.raises(NotFoundError):
        library.delete_model("models/nothing-here", roots)
    (roots[0] / "notes.txt").write_text("x")
    with pytest.raises(BadRequestError, match="not a model"):
        library.delete_model("models/notes.txt", roots)
    assert outside.is_file() and (roots[0] / "sneaky.gguf").is_symlink() and (roots[0] / "notes.txt").is_file()


def test_delete_refuses_a_loaded_model(roots: tuple[Path, ...]) -> None:
    target = roots[0] / "tiny-GGUF" / "tiny-Q4_K_M.gguf"
    with pytest.raises(ConflictError, match="unload it first"):
        library.delete_model("models/tiny-GGUF/tiny-Q4_K_M.gguf", roots, loaded=[str(target)])
    assert target.is_file()


def test_delete_removes_shards_and_folders(roots: tuple[Path, ...]) -> None:
    gone = library.delete_model("models/split/big-Q8_0-00001-of-00002.gguf", roots)
    assert len(gone) == 2 and not (roots[0] / "split").exists()
    assert library.delete_model("models/tiny-hf", roots) == ["models/tiny-hf"]
    assert not (roots[0] / "tiny-hf").exists()
    names = {e.name for e in library.scan(roots)}
    assert "models/tiny-hf" not in names and "models/tiny-GGUF/tiny-Q4_K_M.gguf" in names


def test_mistral_format_folder_is_listed_for_vllm(tmp_path: Path) -> None:
    from safetensors.numpy import save_file

    root = (tmp_path / "models").resolve()
    folder = root / "Mistral-Small"
    folder.mkdir(parents=True)
    (folder / "params.json").write_text(json.dumps({"dim": 32, "n_layers": 1, "max_seq_len": 131072}))
    import numpy as np

    save_file({"tok_embeddings.weight": np.zeros((10, 32), dtype=np.float16)}, str(folder / "consolidated.safetensors"))
    (entry,) = library.scan((root,))
    assert (entry.name, entry.engine, entry.context_length, entry.parameters) == (
        "models/Mistral-Small",
        "vllm",
        131072,
        320,
    )
    assert entry.architecture == "Mistral (params.json)"
