"""Embedding kernels side by side with numpy (+ OpenBLAS) and, when installed, faiss-cpu.

Full sizes (issue 5) run only with ``--benchmark-enable``; the normal test run
(``--benchmark-disable``) runs every bench once on small inputs as a smoke test. Each bench stores
whether its output agrees with numpy in ``extra_info`` (max abs difference or recall@k).

Every round gets fresh input, the same sequence of inputs for every implementation, prepared the
way ``bytepair bench --only embeddings`` prepares it (``bytepair.bench``): the gather's caches
are evicted before each call (its 25 MB of rows would otherwise stay in a 32 MB L3 from the
previous round of the same ids), and each search starts after a pause (OpenBLAS's threads spin
for a while after a product and slow whatever runs next)::

    pytest benches/bench_embed.py --benchmark-enable --benchmark-columns=min,median,mean,rounds

``blas`` in each bench's ``extra_info`` records which OpenBLAS kernel numpy used (the tests and
benchmarks leave this machine's ``OPENBLAS_CORETYPE`` as set).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import bytepair.embed as embed
import numpy as np
import pytest
from bytepair.bench import _SEARCH_PAUSE, cache_evictor

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
import ref_embed as ref  # noqa: E402

try:
    import faiss  # type: ignore
except ImportError:  # pragma: no cover
    faiss = None

K_TOP = 10
ROUNDS = 15
SEARCH_ROUNDS = 10


def _fresh(benchmark, fn, inputs, *, evict=None, pause=0.0):
    """Times ``fn(inputs[r])`` for fresh ``r`` each round (one untimed warm-up round first), with
    ``evict()`` and/or a pause, both untimed, before every call. Returns (last input, output)."""
    import time

    used = []

    def setup():
        x = inputs[len(used) % len(inputs)]
        used.append(x)
        if pause:
            time.sleep(pause)
        if evict is not None:
            evict()
        return (x,), {}

    rounds = max(1, len(inputs) - 1)
    out = benchmark.pedantic(fn, setup=setup, rounds=rounds, warmup_rounds=1)
    return used[-1], out


@pytest.fixture(scope="module")
def full(request) -> bool:
    # Mirrors pytest-benchmark: --benchmark-enable wins over the --benchmark-disable in addopts.
    cfg = request.config
    return bool(cfg.getoption("benchmark_enable", default=False)) or not cfg.getoption(
        "benchmark_disable", default=False
    )


@pytest.fixture(scope="module")
def blas() -> str:
    try:
        import threadpoolctl

        info = [i for i in threadpoolctl.threadpool_info() if i.get("user_api") == "blas"]
        return ",".join(f"{i.get('internal_api')}:{i.get('architecture')}:{i.get('num_threads')}" for i in info)
    except ImportError:  # pragma: no cover
        return "unknown"


def np_topk(q, K, k):
    """numpy's best exact top-k: one GEMM into a [B, N] score matrix, argpartition, sort k."""
    S = q @ K.T
    part = np.argpartition(-S, k - 1, axis=1)[:, :k]
    ps = np.take_along_axis(S, part, 1)
    o = np.argsort(-ps, axis=1, kind="stable")
    return np.take_along_axis(ps, o, 1), np.take_along_axis(part, o, 1)


# ---------------------------------------------------------------------------------------------
# gather + mean: table [50257, 768], 32 bags x 256 ids


@pytest.fixture(scope="module")
def gather_data(full):
    rng = np.random.default_rng(0)
    V, D, B, L = (50257, 768, 32, 256) if full else (1000, 64, 4, 16)
    T = rng.standard_normal((V, D), dtype=np.float32)
    ids = [rng.integers(0, V, (B, L)) for _ in range(ROUNDS + 1 if full else 1)]
    return T, ids


@pytest.fixture(scope="module")
def evict(full):
    return cache_evictor(np) if full else None


@pytest.mark.benchmark(group="gather-mean")
def test_gather_numpy(benchmark, gather_data, evict, blas):
    T, ids = gather_data
    benchmark.extra_info["blas"] = blas
    x, out = _fresh(benchmark, lambda i: T[i].mean(1), ids, evict=evict)
    benchmark.extra_info["max_abs_diff"] = float(np.abs(out - T[x].mean(1)).max())


@pytest.mark.benchmark(group="gather-mean")
def test_gather_bytepair(benchmark, gather_data, evict):
    T, ids = gather_data
    x, out = _fresh(benchmark, lambda i: embed.gather(T, i), ids, evict=evict)
    benchmark.extra_info["max_abs_diff"] = diff = float(np.abs(out - T[x].mean(1)).max())
    assert diff < 1e-5


@pytest.mark.benchmark(group="gather-mean")
def test_gather_bytepair_f16(benchmark, gather_data, evict):
    T, ids = gather_data
    T16 = T.astype(np.float16)
    x, out = _fresh(benchmark, lambda i: embed.gather(T16, i), ids, evict=evict)
    want = T16[x].astype(np.float32).mean(1)
    benchmark.extra_info["max_abs_diff"] = diff = float(np.abs(out - want).max())
    assert diff < 1e-5


# ---------------------------------------------------------------------------------------------
# top-10: 200k keys x 768, keys pre-normalised for numpy and faiss


def _unit(rng, n, d):
    x = rng.standard_normal((n, d), dtype=np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x


@pytest.fixture(scope="module")
def keys(full):
    rng = np.random.default_rng(1)
    N, D = (200_000, 768) if full else (3000, 64)
    K = _unit(rng, N, D)
    Q = _unit(rng, 32, D)
    # Fresh queries for every round: 32 at a time, and one at a time.
    n = SEARCH_ROUNDS + 1 if full else 1
    Q32 = [_unit(rng, 32, D) for _ in range(n)]
    Q1 = [_unit(rng, 1, D) for _ in range(n)]
    return K, Q, np_topk(Q, K, K_TOP), Q32, Q1


@pytest.fixture(scope="module")
def pause(full):
    return _SEARCH_PAUSE if full else 0.0


@pytest.fixture(scope="module")
def indexes(keys):
    K = keys[0]
    return {dt: embed.Index(K, dtype=dt) for dt in ("float32", "float16", "int8")}


@pytest.fixture(scope="module")
def faiss_index(keys):
    if faiss is None:
        pytest.skip("faiss-cpu is not installed")
    ix = faiss.IndexFlatIP(keys[0].shape[1])
    ix.add(keys[0])
    return ix


def _search(benchmark, keys, fn, which, pause, *, exact=True):
    """Times ``fn(queries)`` on fresh queries each round; checks the last output against numpy's
    exact top-k and records recall@10 (asserted >= 0.99 for bytepair, exactness when ``exact``)."""
    K = keys[0]
    q, (s, i) = _fresh(benchmark, fn, keys[3] if which == 32 else keys[4], pause=pause)
    ws, wi = np_topk(q, K, K_TOP)
    r = ref.recall(np.asarray(i), wi)
    benchmark.extra_info["recall_at_10"] = r
    if exact:
        benchmark.extra_info["max_abs_diff"] = float(np.abs(np.asarray(s) - ws).max())
    return r


@pytest.mark.benchmark(group="topk-32q")
def test_topk32_numpy(benchmark, keys, pause, blas):
    K = keys[0]
    benchmark.extra_info["blas"] = blas
    _search(benchmark, keys, lambda q: np_topk(q, K, K_TOP), 32, pause)


@pytest.mark.benchmark(group="topk-32q")
def test_topk32_bytepair(benchmark, keys, pause):
    K = keys[0]
    assert _search(benchmark, keys, lambda q: embed.topk(q, K, K_TOP), 32, pause) >= 0.99


@pytest.mark.benchmark(group="topk-32q")
def test_topk32_bytepair_index_f32(benchmark, keys, indexes, pause):
    ix = indexes["float32"]
    assert _search(benchmark, keys, lambda q: ix.search(q, K_TOP), 32, pause) >= 0.99


@pytest.mark.benchmark(group="topk-32q")
def test_topk32_faiss(benchmark, keys, faiss_index, pause):
    _search(benchmark, keys, lambda q: faiss_index.search(q, K_TOP), 32, pause)


@pytest.mark.benchmark(group="topk-1q")
def test_topk1_numpy(benchmark, keys, pause, blas):
    K = keys[0]
    benchmark.extra_info["blas"] = blas
    _search(benchmark, keys, lambda q: np_topk(q, K, K_TOP), 1, pause)


@pytest.mark.benchmark(group="topk-1q")
def test_topk1_bytepair(benchmark, keys, pause):
    K = keys[0]
    assert _search(benchmark, keys, lambda q: embed.topk(q, K, K_TOP), 1, pause) >= 0.99


@pytest.mark.parametrize("sketch", [True, False], ids=["sketch", "no-sketch"])
@pytest.mark.parametrize("dtype", ["float32", "float16", "int8"])
@pytest.mark.benchmark(group="topk-1q")
def test_topk1_bytepair_index(benchmark, keys, indexes, pause, dtype, sketch):
    # `sketch=False` scans the stored keys themselves: the sketch's share of the speed.
    K, Q, (ws, wi) = keys[:3]
    ix = indexes[dtype]
    ix.sketch = sketch
    try:
        benchmark.extra_info["index_mb"] = ix.nbytes / 1e6
        _search(benchmark, keys, lambda q: ix.search(q, K_TOP), 1, pause, exact=dtype == "float32")
        # Recall over 32 queries (one search each), the number the goal is about.
        got = np.concatenate([ix.search(Q[j : j + 1], K_TOP)[1] for j in range(len(Q))])
        benchmark.extra_info["recall_at_10_32q"] = r = ref.recall(got, wi)
        assert r >= 0.99
    finally:
        ix.sketch = True


@pytest.mark.benchmark(group="topk-1q")
def test_topk1_faiss(benchmark, keys, faiss_index, pause):
    _search(benchmark, keys, lambda q: faiss_index.search(q, K_TOP), 1, pause)


# ---------------------------------------------------------------------------------------------
# embed_texts: 200 documents of 2 KB, cl100k_base, table [100277, 256]


def _docs(n: int, size: int):
    corpus = Path(__file__).resolve().parents[2] / "shared" / "corpus" / "en.txt"
    if corpus.exists():
        with open(corpus, encoding="utf-8") as f:
            text = f.read(n * size + 1000)
    else:  # the standard library's sources, as bytepair's own bench does
        import sysconfig

        parts = []
        for p in sorted(Path(sysconfig.get_paths()["stdlib"]).glob("*.py")):
            parts.append(p.read_text(encoding="utf-8", errors="replace"))
            if sum(map(len, parts)) > n * size:
                break
        text = "".join(parts)
    return [text[i * size : (i + 1) * size] for i in range(n)]


@pytest.fixture(scope="module")
def texts_data(full):
    enc = ref.tiktoken_encoding("cl100k_base")
    n, D = (200, 256) if full else (10, 16)
    docs = _docs(n, 2048)
    T = np.random.default_rng(2).standard_normal((enc.n_vocab, D), dtype=np.float32)
    return enc, T, docs


def _numpy_pipeline(enc, T, docs):
    ids = enc.encode_ordinary_batch(docs)
    out = np.stack([T[i].mean(0) if len(i) else np.zeros(T.shape[1], np.float32) for i in ids])
    n = np.linalg.norm(out, axis=1, keepdims=True)
    return out / np.where(n > 0, n, 1)


@pytest.mark.benchmark(group="embed-texts")
def test_embed_texts_tiktoken_numpy(benchmark, texts_data, blas):
    enc, T, docs = texts_data
    benchmark.extra_info["blas"] = blas
    benchmark.extra_info["mb"] = sum(len(d.encode()) for d in docs) / 1e6
    benchmark(_numpy_pipeline, enc, T, docs)


@pytest.mark.benchmark(group="embed-texts")
def test_embed_texts_bytepair(benchmark, texts_data):
    enc, T, docs = texts_data
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
    from test_embed import _encoding

    e = _encoding("cl100k_base")
    out = benchmark(embed.embed_texts, e, T, docs)
    want = _numpy_pipeline(enc, T, docs)
    benchmark.extra_info["max_abs_diff"] = diff = float(np.abs(out - want).max())
    assert diff < 1e-5


def test_simd_level_reported():
    assert embed.simd_level() in ("avx512+vnni", "avx512", "avx2", "generic")
    if os.environ.get("BYTEPAIR_SIMD") is None and sys.platform == "linux":
        print("simd level:", embed.simd_level())


# ---------------------------------------------------------------------------------------------
# `python benches/bench_embed.py`: the interleaved comparison (implementations alternate round by
# round, fairer when the machine's load changes) is `bytepair bench --only embeddings`, which
# prepares every input as the tests above do.

if __name__ == "__main__":  # pragma: no cover - manual tool
    from bytepair.cli import main

    sys.exit(main(["bench", "--only", "embeddings", *sys.argv[1:]]))
