"""The MiniLM limit: all-MiniLM-L6-v2 encoding the benchmark sentence in-process, no server.

    python benchmarks/servers/raw_model.py --seconds 10 --batches 1,32,64

Prints one JSON object: sentences/s per batch size (median of three windows) and the median time
of one single-sentence encode (what a request at concurrency 1 cannot go below).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

from _common import SENTENCE, load_minilm


def rate(model: object, batch: int, seconds: float) -> float:
    """Sentences per second encoding batches of `batch` copies of the sentence for about `seconds`."""
    texts = [SENTENCE] * batch
    done = 0
    start = time.perf_counter()
    while time.perf_counter() - start < seconds:
        model.encode(texts, batch_size=batch, normalize_embeddings=True, convert_to_numpy=True)  # type: ignore[attr-defined]
        done += batch
    return done / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="measuring time per batch size")
    parser.add_argument("--batches", default="1,32,64")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    model = load_minilm(args.threads)
    batches = [int(b) for b in args.batches.split(",")]
    for batch in batches:  # warm-up: first calls allocate and pick kernels
        rate(model, batch, 1.0)
    result: dict[str, object] = {"threads": args.threads, "sentence": SENTENCE, "sentences_per_s": {}}
    for batch in batches:
        windows = [rate(model, batch, args.seconds / 3) for _ in range(3)]
        result["sentences_per_s"][str(batch)] = round(statistics.median(windows), 2)  # type: ignore[index]
    single = []
    for _ in range(50):
        start = time.perf_counter()
        model.encode([SENTENCE], batch_size=1, normalize_embeddings=True, convert_to_numpy=True)
        single.append((time.perf_counter() - start) * 1000)
    result["single_encode_ms"] = round(statistics.median(single), 3)
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
