"""Embedding kernels side by side with numpy (+ OpenBLAS) and, when installed, faiss-cpu.

Full sizes (issue 5) run only with ``--benchmark-enable``; the normal test run
(``--benchmark-disable``) runs every bench once on small inputs as a smoke test. Each bench stores
whether its output agrees with numpy in ``extra_info`` (max abs difference or recall@k).

To compare fairly with numpy, run without the OpenBLAS overrides this machine sets (they select an
older kernel); ``blas`` in each bench's ``extra_info`` records which kernel numpy used::

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE \\
        pytest benches/bench_embed.py --benchmark-enable --benchmark-columns=min,median,mean
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import bytepair.embed as embed
import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
import ref_embed as ref  # noqa: E402

try:
    import faiss  # type: ignore
except ImportError:  # pragma: no cover
    faiss = None

K_TOP = 10


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

        info = [
            i for i in threadpoolctl.threadpool_info() if i.get("user_api") == "blas"
        ]
        return ",".join(
            f"{i.get('internal_api')}:{i.get('architecture')}:{i.get('num_threads')}"
            for i in info
        )
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
    ids = rng.integers(0, V, (B, L))
    return T, ids, T[ids].mean(1)


@pytest.mark.benchmark(group="gather-mean")
def test_gather_numpy(benchmark, gather_data, blas):
    T, ids, want = gather_data
    benchmark.extra_info["blas"] = blas
    out = benchmark(lambda: T[ids].mean(1))
    benchmark.extra_info["max_abs_diff"] = float(np.abs(out - want).max())


@pytest.mark.benchmark(group="gather-mean")
def test_gather_bytepair(benchmark, gather_data):
    T, ids, want = gather_data
    out = benchmark(lambda: embed.gather(T, ids))
    benchmark.extra_info["max_abs_diff"] = diff = float(np.abs(out - want).max())
    assert diff < 1e-5


@pytest.mark.benchmark(group="gather-mean")
def test_gather_bytepair_f16(benchmark, gather_data):
    T, ids, want = gather_data
    T16 = T.astype(np.float16)
    out = benchmark(lambda: embed.gather(T16, ids))
    benchmark.extra_info["max_abs_diff"] = diff = float(np.abs(out - want).max())
    assert diff < 1e-2


# ---------------------------------------------------------------------------------------------
# top-10: 200k keys x 768, keys pre-normalised for numpy and faiss


@pytest.fixture(scope="module")
def keys(full):
    rng = np.random.default_rng(1)
    N, D = (200_000, 768) if full else (3000, 64)
    K = rng.standard_normal((N, D), dtype=np.float32)
    K /= np.linalg.norm(K, axis=1, keepdims=True)
    Q = rng.standard_normal((32, D), dtype=np.float32)
    Q /= np.linalg.norm(Q, axis=1, keepdims=True)
    return K, Q, np_topk(Q, K, K_TOP)


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


def _agree(benchmark, idx, want_idx, scores=None, want_scores=None):
    r = ref.recall(idx, want_idx)
    benchmark.extra_info["recall_at_10"] = r
    if scores is not None:
        benchmark.extra_info["max_abs_diff"] = float(np.abs(scores - want_scores).max())
    return r


@pytest.mark.benchmark(group="topk-32q")
def test_topk32_numpy(benchmark, keys, blas):
    K, Q, (ws, wi) = keys
    benchmark.extra_info["blas"] = blas
    s, i = benchmark(np_topk, Q, K, K_TOP)
    _agree(benchmark, i, wi, s, ws)


@pytest.mark.benchmark(group="topk-32q")
def test_topk32_bytepair(benchmark, keys):
    K, Q, (ws, wi) = keys
    s, i = benchmark(embed.topk, Q, K, K_TOP)
    assert _agree(benchmark, i, wi, s, ws) >= 0.99


@pytest.mark.benchmark(group="topk-32q")
def test_topk32_bytepair_index_f32(benchmark, keys, indexes):
    K, Q, (ws, wi) = keys
    s, i = benchmark(indexes["float32"].search, Q, K_TOP)
    assert _agree(benchmark, i, wi, s, ws) >= 0.99


@pytest.mark.benchmark(group="topk-32q")
def test_topk32_faiss(benchmark, keys, faiss_index):
    K, Q, (ws, wi) = keys
    s, i = benchmark(faiss_index.search, Q, K_TOP)
    _agree(benchmark, i, wi, s, ws)


@pytest.mark.benchmark(group="topk-1q")
def test_topk1_numpy(benchmark, keys, blas):
    K, Q, (ws, wi) = keys
    benchmark.extra_info["blas"] = blas
    s, i = benchmark(np_topk, Q[:1], K, K_TOP)
    _agree(benchmark, i, wi[:1], s, ws[:1])


@pytest.mark.benchmark(group="topk-1q")
def test_topk1_bytepair(benchmark, keys):
    K, Q, (ws, wi) = keys
    s, i = benchmark(embed.topk, Q[:1], K, K_TOP)
    assert _agree(benchmark, i, wi[:1], s, ws[:1]) >= 0.99


@pytest.mark.parametrize("dtype", ["float32", "float16", "int8"])
@pytest.mark.benchmark(group="topk-1q")
def test_topk1_bytepair_index(benchmark, keys, indexes, dtype):
    K, Q, (ws, wi) = keys
    ix = indexes[dtype]
    benchmark.extra_info["index_mb"] = ix.nbytes / 1e6
    s, i = benchmark(ix.search, Q[:1], K_TOP)
    # Recall over all 32 queries (one search each), the number the goal is about.
    got = np.concatenate([ix.search(Q[j : j + 1], K_TOP)[1] for j in range(len(Q))])
    assert _agree(benchmark, got, wi) >= 0.99


@pytest.mark.benchmark(group="topk-1q")
def test_topk1_faiss(benchmark, keys, faiss_index):
    K, Q, (ws, wi) = keys
    s, i = benchmark(faiss_index.search, Q[:1], K_TOP)
    _agree(benchmark, i, wi[:1], s, ws[:1])


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
    out = np.stack(
        [T[i].mean(0) if len(i) else np.zeros(T.shape[1], np.float32) for i in ids]
    )
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
# `python benches/bench_embed.py [ROUNDS]`: the same workloads, implementations run round-robin
# (fairer than one group after another when the machine's load changes), as a markdown table.


def _interleaved(rounds: int = 15) -> None:  # pragma: no cover - manual tool
    import time

    rng = np.random.default_rng(0)
    V, D, B, L = 50257, 768, 32, 256
    T = rng.standard_normal((V, D), dtype=np.float32)
    T16 = T.astype(np.float16)
    ids = rng.integers(0, V, (B, L))
    N = 200_000
    K = rng.standard_normal((N, D), dtype=np.float32)
    K /= np.linalg.norm(K, axis=1, keepdims=True)
    Q = rng.standard_normal((32, D), dtype=np.float32)
    Q /= np.linalg.norm(Q, axis=1, keepdims=True)
    ix = {dt: embed.Index(K, dtype=dt) for dt in ("float32", "float16", "int8")}
    fx = None
    if faiss is not None:
        fx = faiss.IndexFlatIP(D)
        fx.add(K)
    enc = ref.tiktoken_encoding("cl100k_base")
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
    from test_embed import _encoding

    bp_enc = _encoding("cl100k_base")
    docs = _docs(200, 2048)
    TT = rng.standard_normal((enc.n_vocab, 256), dtype=np.float32)
    exact32 = np_topk(Q, K, K_TOP)[1]
    groups = {
        "gather+mean [50257,768] 32x256": {
            "numpy T[ids].mean(1)": lambda: T[ids].mean(1),
            "bytepair gather f32": lambda: embed.gather(T, ids),
            "bytepair gather f16": lambda: embed.gather(T16, ids),
        },
        "top-10, 32 queries x 200k x 768": {
            "numpy q@K.T + argpartition": lambda: np_topk(Q, K, K_TOP),
            "bytepair topk (cosine)": lambda: embed.topk(Q, K, K_TOP),
            "bytepair Index f32": lambda: ix["float32"].search(Q, K_TOP),
            "bytepair Index f16": lambda: ix["float16"].search(Q, K_TOP),
            "bytepair Index int8": lambda: ix["int8"].search(Q, K_TOP),
            **({"faiss IndexFlatIP": lambda: fx.search(Q, K_TOP)} if fx else {}),
        },
        "top-10, 1 query x 200k x 768": {
            "numpy q@K.T + argpartition": lambda: np_topk(Q[:1], K, K_TOP),
            "bytepair topk (cosine)": lambda: embed.topk(Q[:1], K, K_TOP),
            "bytepair Index f32": lambda: ix["float32"].search(Q[:1], K_TOP),
            "bytepair Index f16": lambda: ix["float16"].search(Q[:1], K_TOP),
            "bytepair Index int8": lambda: ix["int8"].search(Q[:1], K_TOP),
            **({"faiss IndexFlatIP": lambda: fx.search(Q[:1], K_TOP)} if fx else {}),
        },
        "embed_texts, 200 docs x 2 KB, table [100277,256]": {
            "tiktoken batch + numpy": lambda: _numpy_pipeline(enc, TT, docs),
            "bytepair embed_texts": lambda: embed.embed_texts(bp_enc, TT, docs),
        },
    }
    recall = {
        name: ref.recall(ix[dt].search(Q, K_TOP)[1], exact32)
        for name, dt in [
            ("bytepair Index f16", "float16"),
            ("bytepair Index int8", "int8"),
        ]
    }
    print(f"simd: {embed.simd_level()}; rounds: {rounds}; load: {os.getloadavg()}")
    print(
        "| workload | implementation | min ms | median ms | ratio (median) | ratio (min) |"
    )
    print("| --- | --- | ---: | ---: | ---: | ---: |")
    for gname, impls in groups.items():
        times = {n: [] for n in impls}
        for f in impls.values():
            f()  # warm up
        for _ in range(rounds):
            for n, f in impls.items():
                if "top-10" in gname:
                    # Start each search from an idle machine: OpenBLAS's threads keep spinning
                    # for a while after a matrix product and would slow down what runs next.
                    time.sleep(0.15)
                t0 = time.perf_counter()
                f()
                times[n].append(time.perf_counter() - t0)
        base = next(iter(times))
        bmin, bmed = min(times[base]), float(np.median(times[base]))
        for n, ts in times.items():
            mn, md = min(ts), float(np.median(ts))
            extra = f" (recall@10 {recall[n]:.3f})" if n in recall else ""
            print(
                f"| {gname} | {n}{extra} | {mn * 1e3:.2f} | {md * 1e3:.2f} | "
                f"{bmed / md:.2f}x | {bmin / mn:.2f}x |"
            )


if __name__ == "__main__":
    _interleaved(int(sys.argv[1]) if len(sys.argv) > 1 else 15)
