"""`python -m loadtest.simengine`: serve one simulated engine in the foreground."""

from __future__ import annotations

import argparse
import logging
from collections.abc import Sequence

import uvicorn

from loadtest.sim.app import create_app
from loadtest.sim.config import Faults, SimConfig
from loadtest.sim.server import bind_socket, uvicorn_config

logger = logging.getLogger("loadtest.simengine")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m loadtest.simengine",
        description="Simulated vLLM 0.32 OpenAI-compatible engine with runtime LoRA loading.",
    )
    add = parser.add_argument
    add("--host", default="127.0.0.1")
    add("--port", type=int, default=8000, help="0 picks a free port")
    add("--model", default="sim-base", help="served base model id")
    add("--max-loras", type=int, default=1, help="distinct adapters per batch")
    add("--max-cpu-loras", type=int, default=None, help="adapters held in the CPU LRU")
    add("--max-lora-rank", type=int, default=16)
    add("--max-model-len", type=int, default=2048, help="tokens, prompt + output")
    add("--max-num-seqs", type=int, default=256)
    add("--load-ms", type=float, default=30.0, help="adapter load latency")
    add("--load-jitter-ms", type=float, default=0.0, help="uniform +- around --load-ms")
    add("--ttft-ms", type=float, default=10.0, help="time to first token")
    add("--token-ms", type=float, default=2.0, help="time between tokens")
    add("--answer-tokens", type=int, default=32, help="answer length before the EOS")
    add("--seed", type=int, default=0)
    add("--fail-load", default=None, metavar="REGEX", help="loads of matching names fail")
    add("--load-lies", action="store_true", help="loads answer 200 but register nothing")
    add("--fail-requests", type=float, default=0.0, help="probability a request fails")
    add("--fail-models", default=None, metavar="REGEX", help="--fail-requests only for these")
    add("--request-delay-ms", type=float, default=0.0)
    add("--stream-error-after-tokens", type=int, default=None)
    return parser


def config_from_args(args: argparse.Namespace) -> SimConfig:
    faults = Faults(
        fail_load=args.fail_load,
        load_lies=args.load_lies,
        fail_requests=args.fail_requests,
        fail_models=args.fail_models,
        request_delay_ms=args.request_delay_ms,
        stream_error_after_tokens=args.stream_error_after_tokens,
    )
    return SimConfig(
        host=args.host,
        port=args.port,
        model=args.model,
        max_loras=args.max_loras,
        max_cpu_loras=args.max_cpu_loras,
        max_lora_rank=args.max_lora_rank,
        max_model_len=args.max_model_len,
        max_num_seqs=args.max_num_seqs,
        load_ms=args.load_ms,
        load_jitter_ms=args.load_jitter_ms,
        ttft_ms=args.ttft_ms,
        token_ms=args.token_ms,
        answer_tokens=args.answer_tokens,
        seed=args.seed,
        faults=faults,
    )


def main(argv: Sequence[str] | None = None) -> None:
    config = config_from_args(build_parser().parse_args(argv))
    sock = bind_socket(config.host, config.port)
    server = uvicorn.Server(uvicorn_config(create_app(config), config, quiet=False))
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    logger.info("simulated engine for %s on %s:%s", config.model, *sock.getsockname()[:2])
    try:
        server.run(sockets=[sock])
    finally:
        sock.close()
