"""Embedding throughput of the configured embedder (default: the local MiniLM model).

    .venv/bin/python bench/embeddings.py [--passages 200] [--queries 50]

Prints model load time, per-query latency and passage throughput, the numbers that size
the embedding worker (documents are embedded off the request path; queries are on it).
"""
from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pyapp.providers.embeddings import LocalMiniLMEmbedder, get_embedder

WORDS = ["widget", "router", "password", "invoice", "refund", "shipping", "battery", "warranty", "light", "button",
         "network", "account", "billing", "customer", "order", "delivery", "screen", "cable", "firmware", "update",
         "reset", "the", "a", "of", "to", "and", "is", "in", "for"]


def passage(rng: random.Random, words: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(words)).capitalize() + "."


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--passages", type=int, default=200, help="passages of ~150 words to embed")
    parser.add_argument("--queries", type=int, default=50, help="single short queries to embed one by one")
    parser.add_argument("--batch", type=int, default=32)
    args = parser.parse_args()

    embedder = get_embedder()
    if embedder is None:
        print("embeddings are off (PARLEY_EMBEDDINGS=none)")
        return
    print(f"embedder: {type(embedder).__name__} model={embedder.model_name} dim={embedder.dim}")
    rng = random.Random(1)

    started = time.perf_counter()
    if isinstance(embedder, LocalMiniLMEmbedder):
        await embedder.warm_up()
    await embedder.embed(["warm-up"])
    print(f"load + first call: {time.perf_counter() - started:.2f} s")

    latencies = []
    for _ in range(args.queries):
        query = passage(rng, rng.randint(4, 12))
        t0 = time.perf_counter()
        await embedder.embed_queries([query])
        latencies.append((time.perf_counter() - t0) * 1000)
    latencies.sort()
    print(f"query latency over {args.queries}: median {statistics.median(latencies):.1f} ms, "
          f"p95 {latencies[int(len(latencies) * 0.95) - 1]:.1f} ms")

    texts = [passage(rng, 150) for _ in range(args.passages)]
    t0 = time.perf_counter()
    for start in range(0, len(texts), args.batch):
        await embedder.embed(texts[start:start + args.batch])
    elapsed = time.perf_counter() - t0
    print(f"passages: {args.passages} x ~150 words in {elapsed:.2f} s = {args.passages / elapsed:.1f} passages/s "
          f"({elapsed / args.passages * 1000:.1f} ms each)")


if __name__ == "__main__":
    asyncio.run(main())
