"""Decoding benchmarks: bytepair side by side with tiktoken on long token lists.

``decode``, ``decode_bytes`` and ``decode_tokens_bytes`` of the tokens of the last 4 MB of each shared corpus file (a part
the encoding benchmarks never read; 256 KB in the smoke run), for cl100k_base and o200k_base,
given as a Python list and as a numpy ``uint32`` array. Decoding keeps no results between calls,
so every round decodes the same list; the outputs are checked against tiktoken's.

    pytest benches/bench_decode.py --benchmark-enable --benchmark-columns=min,median
"""

from __future__ import annotations

import numpy as np
import pytest

from benches.conftest import CATEGORIES, CORPUS_DIR, ENCODINGS

MEASURE_BYTES = 4 << 20
SMOKE_BYTES = 256 << 10


def _tail(name: str, nbytes: int) -> str:
    path = CORPUS_DIR / name
    if not path.is_file():
        pytest.skip(f"no {name} in {CORPUS_DIR}")
    with open(path, "rb") as f:
        f.seek(0, 2)
        f.seek(max(0, f.tell() - nbytes))
        return f.read().decode("utf-8", errors="ignore")


@pytest.mark.parametrize("container", ["list", "numpy"])
@pytest.mark.parametrize("method", ["decode", "decode_bytes", "decode_tokens_bytes"])
@pytest.mark.parametrize("category", ["en", "multi"])
@pytest.mark.parametrize("encoding", ENCODINGS)
def test_decode(benchmark, bench_settings, impl_module, impl, encoding, category, method, container):
    if impl == "bpe-openai":
        pytest.skip("bpe-openai's decode is not tiktoken's interface")
    if impl == "riptoken" and method not in ("decode", "decode_bytes"):
        pytest.skip(f"riptoken hands {method} to tiktoken")
    reference = impl_module("tiktoken").get_encoding(encoding)
    text = _tail(CATEGORIES[category], MEASURE_BYTES if bench_settings.measuring else SMOKE_BYTES)
    tokens = reference.encode_ordinary(text)
    arg = np.asarray(tokens, dtype=np.uint32) if container == "numpy" else tokens
    enc = impl_module(impl).get_encoding(encoding)
    fn = getattr(enc, method)
    benchmark.group = f"{method} {container} {encoding} {category}"
    out = benchmark.pedantic(fn, args=(arg,), rounds=bench_settings.rounds, iterations=1, warmup_rounds=0)
    expected = {"decode": text, "decode_bytes": text.encode("utf-8")}.get(method) or reference.decode_tokens_bytes(
        tokens
    )
    benchmark.extra_info.update({"impl": impl, "tokens": len(tokens), "agree_with_tiktoken": out == expected})
    assert out == expected
