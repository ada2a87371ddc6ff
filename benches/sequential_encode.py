"""encode_ordinary throughput with each implementation run alone, one after the other.

``bytepair bench`` interleaves implementations in chunks of 16 documents, so each one starts its
chunk with caches full of the others' data; that is fair for noise but charges a fast encoder a
large fixed cost per chunk (o200k's tables are 8 MB). This script measures the other regime, a
tokenizer running by itself: every implementation encodes every document exactly once, fresh
``str`` objects of about 4 KB, the same documents for each, one implementation after the other.

    python benches/sequential_encode.py ../shared/corpus/en.txt cl100k_base [max_bytes]

Prints MB/s for bytepair and tiktoken and their ratio. Run it a few times: the machine is noisy.
"""

from __future__ import annotations

import gc
import sys
import time


def main(path: str, encoding: str, max_bytes: int = 8_000_000) -> None:
    import tempfile

    import bytepair
    from bytepair.bench import prepare_tiktoken_cache

    # tiktoken offline, from the bundled rank files (unless TIKTOKEN_CACHE_DIR is set already)
    prepare_tiktoken_cache(tempfile.mkdtemp(prefix="tiktoken-cache-"), [encoding])
    import tiktoken

    with open(path, encoding="utf-8", errors="replace") as f:
        raw = f.read(max_bytes)
    docs = [raw[i : i + 4000] for i in range(0, len(raw), 4000)]
    mb = sum(len(d.encode()) for d in docs) / 1e6
    rates = {}
    gc.disable()
    try:
        for lib in (bytepair, tiktoken):
            enc = lib.get_encoding(encoding)
            enc.encode_ordinary("warm up the import")
            fresh = [d.encode().decode() for d in docs]  # no cached UTF-8 from an earlier run
            t0 = time.perf_counter()
            for d in fresh:
                enc.encode_ordinary(d)
            rates[lib.__name__] = mb / (time.perf_counter() - t0)
    finally:
        gc.enable()
    bp, tk = rates["bytepair"], rates["tiktoken"]
    print(f"{path} {encoding}: bytepair {bp:.1f} MB/s, tiktoken {tk:.1f} MB/s, {bp / tk:.2f}x")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], *(int(a) for a in sys.argv[3:4]))
