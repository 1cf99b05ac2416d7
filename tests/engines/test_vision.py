"""Whether a model can see: the HF folder rule (vLLM, Transformers), and llama.cpp's mmproj option checked inside the
model roots and passed to the real llama-server as --mmproj."""

from __future__ import annotations

import asyncio
import json
import shutil
from dataclasses import replace
from pathlib import Path

import httpx
import pytest

from panel.engines.base import LoadRequest
from panel.engines.llama_server.argv import build_argv
from panel.engines.llama_server.engine import LlamaServerEngine
from panel.engines.memory.llama_fit import LlamaFitOptions, estimate_llama
from panel.engines.vision import hf_folder_sees
from panel.errors import BadRequestError, EngineFailure
from panel.settings import Settings
from tests.engines.tiny_mmproj import write_tiny_mmproj


def test_an_hf_folder_sees_with_a_vision_config_or_an_image_processor(tmp_path: Path) -> None:
    def folder(name: str, files: dict[str, str]) -> Path:
        path = tmp_path / name
        path.mkdir()
        for file, text in files.items():
            (path / file).write_text(text)
        return path

    text_only = {"architectures": ["LlamaForCausalLM"], "hidden_size": 64}
    assert not hf_folder_sees(folder("text", {"config.json": json.dumps(text_only)}))
    vl = {"architectures": ["Qwen2VLForConditionalGeneration"], "vision_config": {"depth": 2}}
    assert hf_folder_sees(folder("vl", {"config.json": json.dumps(vl)}))
    assert hf_folder_sees(folder("proc", {"config.json": json.dumps(text_only), "preprocessor_config.json": "{}"}))
    assert not hf_folder_sees(folder("broken", {"config.json": "{not json"}))
    assert not hf_folder_sees(folder("odd", {"config.json": json.dumps({"vision_config": None})}))
    assert not hf_folder_sees(tmp_path / "missing") and not hf_folder_sees(tmp_path / "text" / "config.json")


@pytest.fixture
def roots(settings: Settings, tmp_path: Path) -> tuple[Settings, Path]:
    """Settings with an extra model root holding a projector file (a .gguf)."""
    root = tmp_path / "root"
    root.mkdir()
    return replace(settings, model_roots=(root,)), root


def test_the_mmproj_option_is_a_gguf_inside_the_roots_and_goes_to_argv(
    roots: tuple[Settings, Path], embedded_model: Path, tmp_path: Path
) -> None:
    settings, root = roots
    projector = root / "mmproj-F16.gguf"
    shutil.copyfile(embedded_model, projector)
    engine = LlamaServerEngine(settings)
    options = engine.validate_options({"mmproj": "mmproj-F16.gguf"})  # relative: inside a root
    assert options.mmproj == str(projector.resolve())
    assert engine.validate_options(options.to_json()) == options, "kept as JSON, it loads the same again"
    argv = build_argv(engine.binary, str(embedded_model), options, 5555, "m")
    assert argv[argv.index("--mmproj") + 1] == str(projector.resolve())
    assert "--mmproj" not in build_argv(engine.binary, str(embedded_model), engine.validate_options({}), 1, "m")

    outside = tmp_path / "outside.gguf"
    outside.write_bytes(b"GGUF")
    not_gguf = root / "mmproj.bin"
    not_gguf.write_bytes(b"x")
    for raw, why in (
        (str(outside), r"mmproj: .*outside the model roots"),
        ("no-such-mmproj.gguf", r"mmproj: no file at no-such-mmproj.gguf"),
        (str(not_gguf), "must be a projector .gguf file"),
        (str(root), "must be a projector .gguf file"),
        (3, "must be the path of a projector .gguf file"),
    ):
        with pytest.raises(BadRequestError, match=why):
            engine.validate_options({"mmproj": raw})
    with pytest.raises(BadRequestError, match="give the projector once"):
        engine.validate_options({"mmproj": str(projector), "extra_args": ["--mmproj", str(projector)]})


def test_the_projector_counts_in_the_memory_estimate(roots: tuple[Settings, Path], embedded_model: Path) -> None:
    settings, root = roots
    projector = write_tiny_mmproj(root / "mmproj-tiny.gguf")
    engine = LlamaServerEngine(settings)
    plain = LlamaFitOptions.of(engine.validate_options({"ctx_size": 1024}))
    seeing = LlamaFitOptions.of(engine.validate_options({"ctx_size": 1024, "mmproj": projector.name}))
    by_flag = LlamaFitOptions.of(engine.validate_options({"ctx_size": 1024, "extra_args": ["-mm", projector.name]}))
    assert plain.projector_bytes == 0 and seeing.projector_bytes == by_flag.projector_bytes == projector.stat().st_size
    grown = estimate_llama(embedded_model, seeing).weights_bytes - estimate_llama(embedded_model, plain).weights_bytes
    assert grown == projector.stat().st_size


def test_llama_server_says_whether_the_model_sees(roots: tuple[Settings, Path], embedded_model: Path) -> None:
    """The real llama-server: a text model's /props says it cannot see; with a projector (a tiny random one) it sees;
    a text GGUF given as the projector makes llama-server itself refuse to start."""
    settings, root = roots
    not_a_projector = root / "mmproj-text.gguf"
    shutil.copyfile(embedded_model, not_a_projector)
    projector = write_tiny_mmproj(root / "mmproj-tiny.gguf")

    async def scenario() -> None:
        engine = LlamaServerEngine(settings)
        try:
            options = engine.validate_options({"ctx_size": 1024, "parallel": 1})
            await engine.load(LoadRequest("llamacpp", str(embedded_model), options))
            [resident] = engine.residents()
            assert resident.vision is False
            child = engine.children[resident.name]
            async with httpx.AsyncClient(base_url=child.base_url, headers=child.auth_headers) as client:
                props = await client.get("/props", timeout=30)
            assert props.json()["modalities"]["vision"] is False, "this llama-server reports its modalities"
            await engine.unload()
            seeing = engine.validate_options({"ctx_size": 1024, "parallel": 1, "mmproj": projector.name})
            await engine.load(LoadRequest("llamacpp", str(embedded_model), seeing))
            [resident] = engine.residents()
            assert resident.vision is True, "llama-server's /props says the model sees with the projector"
            assert resident.options["mmproj"] == str(projector.resolve())
            await engine.unload()
            bad = engine.validate_options({"ctx_size": 1024, "parallel": 1, "mmproj": not_a_projector.name})
            with pytest.raises(EngineFailure) as failed:
                await engine.load(LoadRequest("llamacpp", str(embedded_model), bad))
            assert "mmproj" in failed.value.message.lower() or "clip" in failed.value.message.lower(), failed.value
        finally:
            await engine.shutdown()

    asyncio.run(scenario())
