"""bytepair.embed against the numpy reference in ref_embed.py (the Python contract, API.md)."""

from __future__ import annotations

import doctest
import os
import pickle
import subprocess
import sys
import threading

import bytepair
import bytepair.embed as embed
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

sys.path.insert(0, os.path.dirname(__file__))
import ref_embed as ref  # noqa: E402

RNG = np.random.default_rng(1234)


def _encoding(name="cl100k_base"):
    import bytepair

    return bytepair.get_encoding(name)


def close(a, b, atol=1e-5, rtol=1e-4):
    np.testing.assert_allclose(a, b, atol=atol, rtol=rtol)


# ---------------------------------------------------------------------------------------------
# gather


@pytest.mark.parametrize("pool", ["mean", "sum", "max", "none"])
@pytest.mark.parametrize("normalize", [False, True])
@pytest.mark.parametrize("dtype", [np.float32, np.float16])
@pytest.mark.parametrize("use_weights", [False, True])
def test_gather_offsets_matches_reference(pool, normalize, dtype, use_weights):
    V, D = 500, 77
    T = RNG.standard_normal((V, D)).astype(dtype)
    ids = RNG.integers(0, V, 400)
    offsets = np.array([0, 0, 5, 5, 100, 399])  # empty bags included
    w = RNG.standard_normal(400).astype(np.float32) if use_weights else None
    got = embed.gather(T, ids, offsets, pool=pool, weights=w, normalize=normalize)
    want = ref.gather(T, ids, offsets, pool=pool, weights=w, normalize=normalize)
    assert got.dtype == np.float32
    assert got.shape == ((400 if pool == "none" else 6), D)
    close(got, want)


@pytest.mark.parametrize("id_dtype", ["i8", "i4", "u4", "u2", "u1", "i2", "u8"])
def test_gather_2d_ids_and_id_dtypes(id_dtype):
    V, D = 200, 32
    T = RNG.standard_normal((V, D)).astype(np.float32)
    ids = RNG.integers(0, V, (16, 9)).astype(id_dtype)
    close(embed.gather(T, ids), ref.gather(T, ids))
    close(
        embed.gather(T, ids, pool="max", normalize=True),
        ref.gather(T, ids, pool="max", normalize=True),
    )
    assert embed.gather(T, ids, pool="none").shape == (16 * 9, D)


def test_gather_realistic_size_and_layouts():
    V, D = 50257, 768
    T = RNG.standard_normal((V, D), dtype=np.float32)
    ids = RNG.integers(0, V, (32, 256))
    close(embed.gather(T, ids), T[ids].mean(1), atol=1e-5)
    # Non-contiguous, big-endian and float64 inputs are converted, not rejected.
    Ts = T[:1000, ::2]
    small = ids % 1000
    close(embed.gather(Ts, small), ref.gather(Ts, small))
    close(
        embed.gather(T[:100].astype(">f4"), small % 100),
        ref.gather(T[:100], small % 100),
    )
    close(
        embed.gather(T[:100].astype(np.float64), small % 100),
        ref.gather(T[:100], small % 100),
    )


def test_gather_single_bag_and_empty_inputs():
    T = np.arange(12, dtype=np.float32).reshape(4, 3)
    close(embed.gather(T, [0, 1, 2, 3]), T.mean(0, keepdims=True))
    assert embed.gather(T, np.zeros((0, 5), dtype=np.int64)).shape == (0, 3)
    close(
        embed.gather(T, np.array([], dtype=np.int64), np.array([0, 0])),
        np.zeros((2, 3)),
    )
    assert embed.gather(T, np.array([], dtype=np.int64), pool="none").shape == (0, 3)


def test_gather_nan_semantics():
    T = np.array([[1.0, np.nan], [np.nan, 2.0], [np.nan, np.nan]], dtype=np.float32)
    out = embed.gather(T, np.array([[0, 1], [2, 2]]), pool="max")
    close(out[0], [1.0, 2.0])
    assert np.isnan(out[1]).all()
    assert np.isnan(embed.gather(T, np.array([[0, 1]]), pool="sum")).all()


def test_gather_weighted_mean_zero_weights():
    T = np.ones((3, 2), dtype=np.float32)
    out = embed.gather(T, np.array([[0, 1]]), weights=np.array([[1.0, -1.0]]))
    close(out, np.zeros((1, 2)))


@settings(max_examples=60, deadline=None)
@given(
    V=st.integers(1, 40),
    D=st.integers(1, 40),
    sizes=st.lists(st.integers(0, 12), min_size=0, max_size=8),
    pool=st.sampled_from(["mean", "sum", "max", "none"]),
    normalize=st.booleans(),
    seed=st.integers(0, 2**32 - 1),
)
def test_gather_property(V, D, sizes, pool, normalize, seed):
    rng = np.random.default_rng(seed)
    T = rng.standard_normal((V, D)).astype(np.float32)
    ids = rng.integers(0, V, sum(sizes))
    offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64) if sizes else np.zeros(0, np.int64)
    if not sizes and len(ids) == 0:
        offsets = np.zeros(0, np.int64)
    got = embed.gather(T, ids, offsets, pool=pool, normalize=normalize)
    want = ref.gather(T, ids, offsets, pool=pool, normalize=normalize)
    close(got, want.reshape(got.shape), atol=1e-5, rtol=1e-4)


def test_gather_errors():
    T = np.zeros((10, 4), dtype=np.float32)
    with pytest.raises(IndexError, match="out of range"):
        embed.gather(T, np.array([[1, 10]]))
    with pytest.raises(IndexError, match="-1"):
        embed.gather(T, np.array([-1, 2]), np.array([0]))
    # The id as given, also past the int64 range.
    with pytest.raises(IndexError, match=r"ids\[1\] = 9223372036854775808 is out of range"):
        embed.gather(T, np.array([[1, 2**63]], dtype=np.uint64))
    with pytest.raises(ValueError, match="non-decreasing"):
        embed.gather(T, np.array([1, 2, 3]), np.array([0, 2, 1]))
    with pytest.raises(ValueError, match="offsets\\[0\\]"):
        embed.gather(T, np.array([1, 2, 3]), np.array([1, 2]))
    with pytest.raises(ValueError, match="outside"):
        embed.gather(T, np.array([1, 2, 3]), np.array([0, 4]))
    with pytest.raises(ValueError, match="empty"):
        embed.gather(T, np.array([1, 2, 3]), np.array([], dtype=np.int64))
    with pytest.raises(TypeError):
        embed.gather(T, np.array([1.0, 2.0]))
    with pytest.raises(TypeError):
        embed.gather(T, np.array([True, False]))
    with pytest.raises(TypeError):
        embed.gather(T, np.array([1]), np.array([0.0]))
    with pytest.raises(TypeError):
        embed.gather(np.zeros((10, 4), dtype=np.int32), np.array([[1]]))
    with pytest.raises(ValueError, match="2-D"):
        embed.gather(np.zeros(10, dtype=np.float32), np.array([[1]]))
    with pytest.raises(ValueError, match="1-D"):
        embed.gather(T, np.zeros((2, 2, 2), dtype=np.int64))
    with pytest.raises(ValueError, match="pool"):
        embed.gather(T, np.array([[1]]), pool="median")
    with pytest.raises(ValueError, match="weights"):
        embed.gather(T, np.array([[1, 2]]), weights=np.ones(3))
    with pytest.raises(ValueError, match="offsets"):
        embed.gather(T, np.array([[1, 2]]), np.array([0]))
    with pytest.raises(TypeError):
        embed.gather(T, np.array([[1]]), None, "sum")  # options are keyword-only


# ---------------------------------------------------------------------------------------------
# topk


def check_topk(got, want, tol=2e-5):
    (gs, gi), (ws, wi) = got, want
    assert gs.dtype == np.float32 and gi.dtype == np.int64 and gs.shape == ws.shape
    close(gs, ws, atol=tol, rtol=0)
    assert (np.diff(gs, axis=1) <= 0).all()
    # Indices must agree except between scores that are equal within tolerance.
    S = ref.scores  # noqa: F841  (documenting which reference produced ws)
    mismatch = gi != wi
    if mismatch.any():
        assert np.abs(gs[mismatch] - ws[mismatch]).max() <= tol


@pytest.mark.parametrize("metric", ["cosine", "dot"])
@pytest.mark.parametrize("shape", [(1, 1, 1), (3, 10, 5), (32, 3001, 64), (7, 1000, 768), (200, 500, 33)])
def test_topk_matches_reference(metric, shape):
    B, N, D = shape
    Q = RNG.standard_normal((B, D)).astype(np.float32)
    K = RNG.standard_normal((N, D)).astype(np.float32)
    for k in sorted({1, min(10, N), N}):
        tol = 2e-5 if metric == "cosine" else 2e-5 * D
        check_topk(embed.topk(Q, K, k, metric=metric), ref.topk(Q, K, k, metric=metric), tol)


def test_topk_f16_keys_and_ties():
    K = RNG.standard_normal((1000, 48)).astype(np.float16)
    Q = RNG.standard_normal((4, 48)).astype(np.float32)
    check_topk(embed.topk(Q, K, 10), ref.topk(Q, K.astype(np.float32), 10), 1e-4)
    same = np.ones((30000, 8), dtype=np.float32)
    s, i = embed.topk(np.ones((2, 8), dtype=np.float32), same, 5)
    assert (i == np.arange(5)).all()


def test_topk_nan_and_zero():
    K = RNG.standard_normal((20, 6)).astype(np.float32)
    K[3, 0] = np.nan
    K[7] = 0
    s, i = embed.topk(RNG.standard_normal((2, 6)).astype(np.float32), K, 20)
    assert (i[:, -1] == 3).all() and np.isnan(s[:, -1]).all()
    assert (s[i == 7] == 0).all()
    s, i = embed.topk(np.full((1, 6), np.nan, dtype=np.float32), K, 4)
    assert (i == np.arange(4)).all()


def test_topk_errors():
    K = np.zeros((5, 4), dtype=np.float32)
    Q = np.zeros((2, 4), dtype=np.float32)
    with pytest.raises(ValueError, match="larger than the number of keys"):
        embed.topk(Q, K, 6)
    with pytest.raises(ValueError, match="dimension"):
        embed.topk(np.zeros((2, 3), dtype=np.float32), K, 1)
    with pytest.raises(ValueError, match="2-D"):
        embed.topk(np.zeros(4, dtype=np.float32), K, 1)
    with pytest.raises(ValueError):
        embed.topk(Q, K, -1)
    with pytest.raises(TypeError):
        embed.topk(Q, K, 1.5)
    with pytest.raises(TypeError):
        embed.topk(Q.astype(np.int64), K, 1)
    with pytest.raises(ValueError, match="metric"):
        embed.topk(Q, K, 1, metric="l2")
    s, i = embed.topk(Q, K, 0)
    assert s.shape == (2, 0) and i.shape == (2, 0)


# ---------------------------------------------------------------------------------------------
# Index


@pytest.mark.parametrize("metric", ["cosine", "dot"])
@pytest.mark.parametrize("dtype", ["float32", "float16", "int8"])
def test_index_recall_and_scores(metric, dtype):
    N, D, B, k = 20000, 128, 25, 10
    K = RNG.standard_normal((N, D)).astype(np.float32)
    Q = RNG.standard_normal((B, D)).astype(np.float32)
    ix = embed.Index(K[:1234], metric=metric, dtype=dtype)
    ix.add(K[1234:])
    assert len(ix) == N and ix.dim == D and ix.dtype == dtype and ix.metric == metric
    ws, wi = ref.topk(Q, K, k, metric=metric)
    s, i = ix.search(Q, k)
    assert ref.recall(i, wi) >= 0.99
    scale = 1.0 if metric == "cosine" else float(np.sqrt(D))
    close(s, ws, atol=(2e-5 if dtype == "float32" else 2e-3) * scale, rtol=0)
    if dtype == "float32":
        check_topk((s, i), (ws, wi), 2e-5 * scale)
    # float keys: an int8 sketch (1 byte a value, 8 a key); int8 keys: 4 bits (whole blocks of
    # 128 values, 4 bytes a key).
    sketch = N * D + 8 * N if dtype != "int8" else N * (-(-D // 128) * 64) + 4 * N
    assert ix.sketch
    assert ix.nbytes == {"float32": 4 * N * D, "float16": 2 * N * D, "int8": 2 * N * D + 12 * N}[dtype] + sketch


def _sketch_keys(kind, n, d):
    rng = np.random.default_rng(len(kind))
    r = rng.standard_normal((n, d)).astype(np.float32)
    if kind == "clustered":  # scores within the int8 error of each other
        return rng.standard_normal((8, d)).astype(np.float32)[np.arange(n) % 8] + 0.01 * r
    if kind == "duplicates":  # ties that only the index breaks
        return r[np.arange(n) % 97]
    return r


@pytest.mark.parametrize("kind", ["random", "clustered", "duplicates"])
@pytest.mark.parametrize("metric", ["cosine", "dot"])
@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_index_sketch_gives_the_full_scans_results_bit_for_bit(kind, metric, dtype):
    K = _sketch_keys(kind, 8000, 72)
    Q = 0.3 * RNG.standard_normal((97, 72)).astype(np.float32) + K[RNG.integers(0, 8000, 97)]
    ix = embed.Index(K, metric=metric, dtype=dtype)
    full = embed.Index(K, metric=metric, dtype=dtype, sketch=False)
    assert ix.sketch and not full.sketch
    for nq, k in [(1, 1), (1, 10), (1, 200), (5, 10), (97, 10)]:
        for a, b in zip(ix.search(Q[:nq], k), full.search(Q[:nq], k)):
            np.testing.assert_array_equal(a, b, err_msg=f"nq={nq} k={k}")
    if dtype == "float32":
        ws, wi = ref.topk(Q[:5], K, 10, metric=metric)
        assert ref.recall(ix.search(Q[:5], 10)[1], wi) == 1.0


@pytest.mark.parametrize("kind", ["random", "clustered", "duplicates"])
def test_int8_index_recall_on_close_scores(kind):
    # Clustered keys put hundreds of scores within the int8 rounding error of the top 10: a
    # fixed shortlist of the best int8 scores found 4-5 of the 10 there. Their top 10 also lie
    # within 1e-5 of each other, closer than the two int8 levels (about 14 bits) can order, so
    # recall there stays near 0.98 whatever the candidates.
    K = _sketch_keys(kind, 20000, 200)
    Q = 0.5 * RNG.standard_normal((24, 200)).astype(np.float32) + K[RNG.integers(0, 20000, 24)]
    ws, wi = ref.topk(Q, K, 10)
    want = 0.95 if kind == "clustered" else 0.99
    got = {}
    for sketch in (True, False):
        ix = embed.Index(K, dtype="int8", sketch=sketch)
        one = np.concatenate([ix.search(Q[j : j + 1], 10)[1] for j in range(len(Q))])
        assert ref.recall(one, wi) >= want
        assert ref.recall(ix.search(Q, 10)[1], wi) >= want
        got[sketch] = one
    # Single queries through the 4-bit sketch find what the int8 scan finds.
    assert (got[True] != got[False]).any(axis=1).sum() <= 1


@pytest.mark.parametrize("dtype", ["float32", "float16", "int8"])
@pytest.mark.parametrize("metric", ["cosine", "dot"])
def test_index_edge_queries_with_and_without_the_sketch(dtype, metric):
    # Zero, tiny and huge queries, and (int8) keys whose scores overflow float32: every search
    # returns k results, the same with the sketch as without. Overflowing int8 scores used to
    # leave the candidate lists empty (a ValueError from the result's shape).
    K = RNG.standard_normal((5000, 64)).astype(np.float32)
    ix, plain = (embed.Index(K, metric=metric, dtype=dtype, sketch=s) for s in (True, False))
    for q in (
        np.zeros((1, 64), np.float32),
        np.zeros((3, 64), np.float32),
        np.full((1, 64), 1e-30, np.float32),
        np.full((2, 64), 1e30, np.float32),
    ):
        got, want = ix.search(q, 5), plain.search(q, 5)
        assert got[1].shape == (len(q), 5)
        if dtype != "int8":
            for a, b in zip(got, want):
                np.testing.assert_array_equal(a, b)
    if dtype == "int8" and metric == "dot":
        big = embed.Index(K * 1e19, metric="dot", dtype="int8")
        for q in (K[:1] * 1e19, K[:3] * 1e19):
            s, i = big.search(q, 5)
            assert i.shape == (len(q), 5) and np.isinf(s).all()


def test_index_can_be_weakly_referenced():
    import weakref

    ix = embed.Index(np.eye(2, 4, dtype=np.float32))
    ref = weakref.ref(ix)
    assert ref() is ix
    del ix
    assert ref() is None


@pytest.mark.parametrize("dtype", ["float32", "float16", "int8"])
def test_index_pickles(dtype):
    import pickle

    K = RNG.standard_normal((5000, 24)).astype(np.float32)
    Q = RNG.standard_normal((3, 24)).astype(np.float32)
    for sketch in (True, False):
        ix = embed.Index(K, metric="dot", dtype=dtype, sketch=sketch)
        back = pickle.loads(pickle.dumps(ix))
        assert (len(back), back.dim, back.dtype, back.metric, back.sketch) == (5000, 24, dtype, "dot", sketch)
        for a, b in zip(ix.search(Q, 7), back.search(Q, 7)):
            np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match="not a bytepair index"):
        embed._index_from_bytes(b"BPEMBIX\0" + bytes(30))


def test_index_sketch_switch_and_save(tmp_path):
    K = RNG.standard_normal((5000, 16)).astype(np.float32)
    Q = RNG.standard_normal((3, 16)).astype(np.float32)
    ix = embed.Index(K)
    want = ix.search(Q, 5)
    n = ix.nbytes
    ix.sketch = False
    assert not ix.sketch and ix.nbytes == n - (5000 * 16 + 8 * 5000)
    ix.save(tmp_path / "off.bin")
    ix.sketch = True
    assert ix.sketch and ix.nbytes == n
    ix.save(tmp_path / "on.bin")
    assert not embed.Index.load(tmp_path / "off.bin").sketch
    back = embed.Index.load(tmp_path / "on.bin")
    assert back.sketch and "sketch=True" in repr(back)
    for a, b in zip(want, back.search(Q, 5)):
        np.testing.assert_array_equal(a, b)
    # int8 keys keep a 4-bit one, which turns off the same way.
    i8 = embed.Index(K, dtype="int8")
    n8 = i8.nbytes
    i8.sketch = False
    assert not i8.sketch and i8.nbytes == n8 - 5000 * 64 - 4 * 5000
    # A NaN query or key: the same answer as without the sketch (NaN ranks last).
    Kn = K.copy()
    Kn[7, 3] = np.nan
    a, b = embed.Index(Kn), embed.Index(Kn, sketch=False)
    for x, y in zip(a.search(Q, 5), b.search(Q, 5)):
        np.testing.assert_array_equal(x, y)
    Qn = Q.copy()
    Qn[1, 0] = np.nan
    for x, y in zip(a.search(Qn, 5), b.search(Qn, 5)):
        np.testing.assert_array_equal(x, y)


@pytest.mark.parametrize("dtype", ["float32", "float16", "int8", np.float16, np.int8])
def test_index_save_load(tmp_path, dtype):
    K = RNG.standard_normal((300, 20)).astype(np.float32)
    Q = RNG.standard_normal((5, 20)).astype(np.float32)
    ix = embed.Index(K, dtype=dtype)
    p = tmp_path / "ix.bin"
    ix.save(p)
    back = embed.Index.load(str(p))
    assert (len(back), back.dim, back.dtype, back.metric) == (
        300,
        20,
        ix.dtype,
        "cosine",
    )
    for a, b in zip(ix.search(Q, 7), back.search(Q, 7)):
        np.testing.assert_array_equal(a, b)
    good = p.read_bytes()
    # One changed bit anywhere in the keys is caught by the file's CRC-32, on load and unpickling.
    for at in (40, len(good) // 2, len(good) - 6):
        bad = bytearray(good)
        bad[at] ^= 0x01
        p.write_bytes(bytes(bad))
        with pytest.raises(ValueError, match="corrupted"):
            embed.Index.load(p)
        with pytest.raises(ValueError, match="corrupted"):
            pickle.loads(pickle.dumps(ix).replace(good, bytes(bad)))
    p.write_bytes(good[:-3])
    with pytest.raises(ValueError, match="not a bytepair index"):
        embed.Index.load(p)
    with pytest.raises(OSError):
        embed.Index.load(tmp_path / "missing.bin")
    with pytest.raises(IsADirectoryError):
        embed.Index.load(tmp_path)
    ix.save(os.fsencode(p))  # bytes paths, as open() takes them
    assert len(embed.Index.load(os.fsencode(p))) == 300


def test_index_errors_and_empty():
    with pytest.raises(ValueError, match="dtype"):
        embed.Index(np.zeros((2, 3), np.float32), dtype="int4")
    with pytest.raises(TypeError):
        embed.Index(np.zeros((2, 3), np.float32), dtype=object())
    ix = embed.Index(np.zeros((0, 3), np.float32), dtype="int8")
    assert len(ix) == 0
    with pytest.raises(ValueError, match="larger"):
        ix.search(np.zeros((1, 3), np.float32), 1)
    with pytest.raises(ValueError, match="dimension"):
        ix.add(np.zeros((1, 4), np.float32))
    with pytest.raises(ValueError, match="dimension"):
        ix.search(np.zeros((1, 4), np.float32), 0)
    with pytest.raises(ValueError, match="at least one dimension"):
        embed.Index(np.zeros((3, 0), np.float32))
    ix.add(np.array([[1, 0, 0], [0, 1, 0]], np.float32))
    assert ix.search(np.array([[0, 1, 0]], np.float32), 1)[1].tolist() == [[1]]
    assert "int8" in repr(ix)
    with pytest.raises(ValueError, match="float16 range"):
        embed.Index(np.array([[1e6, 0.0]], np.float32), metric="dot", dtype="float16")
    assert len(embed.Index(np.array([[1e6, 0.0]], np.float32), dtype="float16")) == 1


def test_index_concurrent_search_and_add():
    K = RNG.standard_normal((5000, 32)).astype(np.float32)
    ix = embed.Index(K, dtype="int8")
    Q = RNG.standard_normal((8, 32)).astype(np.float32)
    want = ix.search(Q, 5)[1]
    errors = []

    def worker():
        try:
            for _ in range(20):
                got = ix.search(Q, 5)[1]
                # Added keys are far away from Q's neighbours only by chance; check the shape.
                assert got.shape == want.shape
        except Exception as e:  # pragma: no cover
            errors.append(e)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for _ in range(5):
        ix.add(RNG.standard_normal((100, 32)).astype(np.float32))
    for t in threads:
        t.join()
    assert not errors and len(ix) == 5500


# ---------------------------------------------------------------------------------------------
# embed_texts


def test_embed_texts_matches_tiktoken_plus_reference():
    pytest.importorskip("tiktoken")
    enc = ref.tiktoken_encoding("cl100k_base")
    rng = np.random.default_rng(5)
    words = [
        "the",
        "quick",
        "brown",
        "fox",
        "naïve",
        "日本語",
        "42",
        "\n",
        "  ",
        "don't",
        "🙂",
    ]
    texts = [" ".join(rng.choice(words, rng.integers(0, 60))) for _ in range(40)] + [
        "",
        "x",
    ]
    T = rng.standard_normal((enc.n_vocab, 16)).astype(np.float32)
    ids = [enc.encode_ordinary(t) for t in texts]
    flat = np.array([i for x in ids for i in x], dtype=np.int64)
    offsets = np.cumsum([0] + [len(x) for x in ids[:-1]])
    for pool in ["mean", "sum", "max"]:
        for normalize in [False, True]:
            got = embed.embed_texts(_encoding(), T, texts, pool=pool, normalize=normalize)
            close(got, ref.gather(T, flat, offsets, pool=pool, normalize=normalize))
    got16 = embed.embed_texts(_encoding(), T.astype(np.float16), texts)
    close(
        got16,
        ref.gather(T.astype(np.float16), flat, offsets, normalize=True),
        atol=1e-4,
    )


def test_embed_texts_with_surrogates_encode_as_encode_does():
    enc = _encoding()
    T = np.random.default_rng(2).standard_normal((enc.n_vocab, 8)).astype(np.float32)
    texts = ["a \ud83d\ude00 b", "lone \udc80", "fine"]
    got = embed.embed_texts(enc, T, texts, normalize=False)
    for row, t in zip(got, texts):
        close(row[None], T[enc.encode_ordinary(t)].mean(0)[None])


def test_embed_texts_errors():
    T = np.zeros((10, 4), np.float32)
    with pytest.raises(IndexError, match="out of range"):
        embed.embed_texts(_encoding(), T, ["hello world"])
    with pytest.raises(TypeError):
        embed.embed_texts(_encoding(), T, "hello")
    with pytest.raises(TypeError):
        embed.embed_texts(_encoding(), T, [b"hello"])
    with pytest.raises(ValueError, match="pool"):
        embed.embed_texts(_encoding(), T, ["a"], pool="none")
    with pytest.raises(TypeError, match="Encoding"):
        embed.embed_texts(object(), T, ["a"])
    assert embed.embed_texts(_encoding(), T, []).shape == (0, 4)


# ---------------------------------------------------------------------------------------------
# Other SIMD levels and the examples


def test_generic_and_avx2_levels_agree():
    code = (
        "import numpy as np, bytepair.embed as e;"
        "r=np.random.default_rng(0);T=r.standard_normal((300,50)).astype('f4');"
        "ids=r.integers(0,300,(9,7));K=r.standard_normal((999,50)).astype('f4');"
        "s,i=e.topk(T[:5],K,4);ix=e.Index(K,dtype='int8');s2,i2=ix.search(T[:5],4);"
        "print(e.simd_level(), e.gather(T,ids,pool='max').tobytes().hex()[:64], i.tolist(), i2.tolist())"
    )
    outs = {}
    for level in ["generic", "avx2", "avx512-novnni", "best"]:
        env = dict(os.environ, BYTEPAIR_SIMD=level)
        outs[level] = subprocess.run(
            [sys.executable, "-c", code],
            env=env,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.split(" ", 1)
    assert outs["generic"][0] == "generic"
    assert outs["avx512-novnni"][0] in ("avx512", "avx2", "generic")
    assert len({o[1] for o in outs.values()}) == 1


def test_docstring_examples(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the Index.save example writes a file
    res = doctest.testmod(embed, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert res.failed == 0 and res.attempted > 10


def test_inputs_are_used_in_place(tmp_path):
    T = RNG.standard_normal((300, 16)).astype(np.float32)
    assert embed._float_matrix(T, "t", allow_f16=True) is T
    T16 = T.astype(np.float16)
    assert embed._float_matrix(T16, "t", allow_f16=True) is T16
    # A read-only memory-mapped table (how static-embedding tables are often loaded).
    np.save(tmp_path / "t.npy", T)
    M = np.load(tmp_path / "t.npy", mmap_mode="r")
    ids = RNG.integers(0, 300, (5, 7))
    close(embed.gather(M, ids, normalize=True), ref.gather(T, ids, normalize=True))
    s, i = embed.topk(T[:3], M, 4)
    assert (i[:, 0] == np.arange(3)).all()
    out = embed.gather(T, ids)
    assert out.flags.c_contiguous and out.flags.writeable


# ---------------------------------------------------------------------------------------------
# Ctrl-C


def _interrupted_soon(call, after=0.3, within=2.0):
    """Sends this process a real SIGINT `after` seconds into `call()` and checks that the call
    raises KeyboardInterrupt less than `within` seconds after it started."""
    import signal
    import time

    timer = threading.Timer(after, lambda: os.kill(os.getpid(), signal.SIGINT))
    t0 = time.perf_counter()
    timer.start()
    try:
        with pytest.raises(KeyboardInterrupt):
            call()
            time.sleep(5)  # the signal came after the call: the handler runs here
    finally:
        timer.cancel()
    elapsed = time.perf_counter() - t0
    assert elapsed < within, f"KeyboardInterrupt after {elapsed:.2f} s"


def _interruptible_calls():
    """(name, calibrate(scale) -> seconds, full(scale)) for each long call: `scale` multiplies the
    work, so a measured small call tells how big a call takes several seconds."""
    rng = np.random.default_rng(7)
    keys = rng.standard_normal((50_000, 128), dtype=np.float32)
    index = embed.Index(keys, dtype="int8")
    table = rng.standard_normal((1000, 4096), dtype=np.float32)
    enc = _encoding()
    small_table = rng.standard_normal((enc.n_vocab, 8), dtype=np.float32)
    text = "Ctrl-C stops this text. " * 400

    def topk(scale):
        q = rng.standard_normal((64 * scale, 128), dtype=np.float32)
        return lambda: embed.topk(q, keys, 10)

    def search(scale):
        q = rng.standard_normal((64 * scale, 128), dtype=np.float32)
        return lambda: index.search(q, 10)

    def gather(scale):
        ids = rng.integers(0, 1000, (8 * scale, 4096), dtype=np.int32)
        return lambda: embed.gather(table, ids)

    def texts(scale):
        docs = [text] * (16 * scale)
        return lambda: embed.embed_texts(enc, small_table, docs)

    def topk_large_k(scale):
        # One query block, keys growing with `scale`, k half of them: a few long tasks (large
        # chunks), each of which once ran to its end before looking for Ctrl-C.
        many = rng.standard_normal((100_000 * scale, 16), dtype=np.float32)
        q = rng.standard_normal((8, 16), dtype=np.float32)
        return lambda: embed.topk(q, many, len(many) // 2)

    def search_large_k(scale):
        ix = embed.Index(rng.standard_normal((100_000 * scale, 16), dtype=np.float32))
        q = rng.standard_normal((8, 16), dtype=np.float32)
        return lambda: ix.search(q, len(ix) // 2)

    return {
        "topk": topk,
        "search": search,
        "gather": gather,
        "embed_texts": texts,
        "topk large k": topk_large_k,
        "search large k": search_large_k,
    }


@pytest.mark.parametrize("name", ["topk", "search", "gather", "embed_texts", "topk large k", "search large k"])
def test_sigint_stops_long_native_work(name):
    """A real SIGINT while a kernel runs detached from the interpreter raises KeyboardInterrupt
    long before the call would have finished, and the next call works."""
    import time

    if sys.platform == "win32":
        pytest.skip("POSIX signals")
    make = _interruptible_calls()[name]
    small = make(4)
    small()
    t0 = time.perf_counter()
    small()
    per_scale = (time.perf_counter() - t0) / 4
    scale = max(4, int(4.0 / max(per_scale, 1e-6)))  # about 4 s of work
    if scale * 4 > 1 << 16:  # guard against a mis-measured tiny call eating the memory
        scale = 1 << 14
    if "large k" in name:
        scale = min(scale, 160)  # 16M keys of 16 floats at most (1 GB)
    _interrupted_soon(make(scale))
    small()  # the pool and the kernels still work


@pytest.mark.parametrize("dtype", ["float32", "int8"])
def test_sigint_stops_index_building_and_leaves_the_index_as_it_was(dtype):
    """Ctrl-C while keys are added (or an index is built) raises KeyboardInterrupt soon, and the
    index keeps exactly the keys it had: an add happens whole or not at all."""
    import time

    if sys.platform == "win32":
        pytest.skip("POSIX signals")
    rng = np.random.default_rng(5)
    d = 64
    ix = embed.Index(rng.standard_normal((5000, d), dtype=np.float32), dtype=dtype)
    q = rng.standard_normal((3, d), dtype=np.float32)
    scores, ids = ix.search(q, 5)
    small = rng.standard_normal((20_000, d), dtype=np.float32)
    embed.Index(small, dtype=dtype)
    t0 = time.perf_counter()
    embed.Index(small, dtype=dtype)
    per_key = (time.perf_counter() - t0) / len(small)
    reps = max(2, int(4.0 / max(per_key, 1e-9)) // len(small))  # about 4 s of work
    big = np.tile(small, (min(reps, 2**28 // (d * len(small))), 1))  # 1 GB at most
    for call in (lambda: ix.add(big), lambda: embed.Index(big, dtype=dtype)):
        _interrupted_soon(call, after=0.2)
        assert len(ix) == 5000
        again = ix.search(q, 5)
        np.testing.assert_array_equal(again[0], scores)
        np.testing.assert_array_equal(again[1], ids)
    ix.add(small)
    assert len(ix) == 25_000


def test_sigint_stops_building_a_sketch():
    """Ctrl-C while ``index.sketch = True`` builds the sketch raises KeyboardInterrupt soon and
    leaves the index without one (its searches give the same results)."""
    import time

    if sys.platform == "win32":
        pytest.skip("POSIX signals")
    rng = np.random.default_rng(6)
    d = 64
    small = rng.standard_normal((20_000, d), dtype=np.float32)
    ix = embed.Index(small, sketch=False)
    t0 = time.perf_counter()
    ix.sketch = True
    per_key = (time.perf_counter() - t0) / len(small)
    reps = max(2, int(4.0 / max(per_key, 1e-9)) // len(small))  # about 4 s of work
    ix = embed.Index(np.tile(small, (min(reps, 2**28 // (d * len(small))), 1)), sketch=False)
    q = small[:3]
    scores, ids = ix.search(q, 5)

    def build_sketch():
        ix.sketch = True

    _interrupted_soon(build_sketch, after=0.2)
    assert not ix.sketch
    again = ix.search(q, 5)
    np.testing.assert_array_equal(again[0], scores)
    np.testing.assert_array_equal(again[1], ids)


def test_zero_size_id_arrays_of_any_length_and_huge_outputs():
    T = np.ones((4, 3), np.float32)
    # [B, 0] ids: B empty bags, however many, without building anything per bag.
    out = embed.gather(np.zeros((4, 0), np.float32), np.zeros((2**40, 0), np.int64))
    assert out.shape == (2**40, 0)
    assert embed.gather(T, np.zeros((5, 0), np.int64)).tolist() == [[0.0] * 3] * 5
    # An output that cannot be allocated is a MemoryError, as numpy gives, not an abort.
    with pytest.raises(MemoryError):
        embed.gather(T, np.zeros((2**40, 0), np.int64))
    # embed_texts too: 1024 texts x 2^40 dimensions (a table of no rows).
    enc = bytepair.get_encoding("cl100k_base")
    wide = np.lib.stride_tricks.as_strided(np.zeros(1, np.float32), (0, 2**40), (4, 4))
    with pytest.raises(MemoryError):
        embed.embed_texts(enc, np.ascontiguousarray(wide), [""] * 1024)


def test_very_large_k_is_a_value_error():
    K = RNG.standard_normal((5, 4)).astype(np.float32)
    with pytest.raises(ValueError, match="larger than the number of keys"):
        embed.topk(K[:1], K, 2**70)
    with pytest.raises(ValueError, match="larger than the number of keys"):
        embed.Index(K).search(K[:1], 2**70)


@pytest.mark.parametrize("scale", [1e-37, 1e-30, 1e-25, 1e25, 1e30])
def test_results_do_not_depend_on_the_scale_of_the_vectors(scale):
    # Squared norms of such rows underflow or overflow float32.
    x = np.array([[3.0, -4.0, 0.0, 12.0]], np.float32)
    got = embed.gather(x * np.float32(scale), np.array([0]), normalize=True)
    np.testing.assert_allclose(got, x / 13.0, rtol=1e-4)
    K = RNG.standard_normal((300, 16)).astype(np.float32)
    q = RNG.standard_normal((3, 16)).astype(np.float32)
    want = embed.topk(q, K, 10)
    s = np.float32(scale)
    for qq, kk in ((q * s, K), (q, K * s), (q * s, K * s)):
        scores, idx = embed.topk(qq, kk, 10)
        np.testing.assert_array_equal(idx, want[1])
        np.testing.assert_allclose(scores, want[0], atol=1e-5)
    for dtype in ("float32", "int8") if abs(np.log10(scale)) < 37 else ("int8",):
        ix = embed.Index(K * s, dtype=dtype)
        np.testing.assert_array_equal(ix.search(q, 10)[1], embed.Index(K, dtype=dtype).search(q, 10)[1])


def test_int8_dot_index_keeps_the_sign_of_tiny_vectors():
    K = np.array([[1e-37, 0], [-1e-37, 0], [5e-38, 0]], np.float32)
    scores, idx = embed.Index(K, metric="dot", dtype="int8").search(np.ones((1, 2), np.float32), 3)
    assert idx.tolist() == [[0, 2, 1]]
    assert scores[0, 0] > 0 > scores[0, 2]
    K = RNG.standard_normal((2000, 32)).astype(np.float32)
    q = RNG.standard_normal((1, 32)).astype(np.float32) * np.float32(1e-37)
    got = embed.Index(K, metric="dot", dtype="int8").search(q, 10)[1]
    want = embed.topk(q.astype(np.float64).astype(np.float32) * np.float32(1e30), K, 10, metric="dot")[1]
    assert len(set(got[0]) & set(want[0])) >= 9


def test_embed_texts_checks_ids_with_a_zero_width_table():
    enc = _encoding()
    with pytest.raises(IndexError, match="out of range"):
        embed.embed_texts(enc, np.zeros((0, 0), np.float32), ["hello world"])
    assert embed.embed_texts(enc, np.zeros((enc.n_vocab, 0), np.float32), ["hello world"]).shape == (1, 0)


def test_index_files_errors_name_the_file(tmp_path):
    missing = tmp_path / "nope" / "x.index"
    with pytest.raises(FileNotFoundError) as e:
        embed.Index.load(missing)
    assert e.value.filename == str(missing) and e.value.errno is not None
    with pytest.raises(FileNotFoundError) as e:
        embed.Index(np.eye(2, dtype=np.float32)).save(missing)
    assert e.value.filename == str(missing)
    with pytest.raises(TypeError, match="not None"):
        embed.Index(np.eye(2, dtype=np.float32), dtype=None)


def test_a_failed_index_save_keeps_the_old_file(tmp_path):
    p = tmp_path / "keep.index"
    embed.Index(np.ones((100, 64), np.float32)).save(p)
    before = p.read_bytes()
    # A save that fails partway (here the file size limit; a full disk alike) leaves the old file.
    code = f"""
import resource, numpy as np, bytepair.embed as embed
resource.setrlimit(resource.RLIMIT_FSIZE, ({len(before) + 4096}, resource.RLIM_INFINITY))
try:
    embed.Index(np.ones((5000, 64), np.float32)).save({str(p)!r})
except OSError as e:
    print("OSError", e.errno)
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False)
    assert proc.stdout.startswith("OSError"), (proc.stdout, proc.stderr)
    assert p.read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ["keep.index"]  # no temporary file left
    assert len(embed.Index.load(p)) == 100
    # A link is followed and kept; a directory is refused naming it.
    os.symlink(p, tmp_path / "link.index")
    embed.Index(np.ones((7, 64), np.float32)).save(tmp_path / "link.index")
    assert os.path.islink(tmp_path / "link.index") and len(embed.Index.load(p)) == 7
    with pytest.raises(IsADirectoryError) as e:
        embed.Index(np.ones((7, 64), np.float32)).save(tmp_path)
    assert e.value.filename == str(tmp_path)


def test_byte_swapped_uint64_ids_report_their_value():
    T = np.ones((4, 2), np.float32)
    with pytest.raises(IndexError, match=str(2**63 + 5)):
        embed.gather(T, np.array([2**63 + 5], dtype=">u8"))
    assert embed.gather(T, np.array([3], dtype=">u8")).tolist() == [[1.0, 1.0]]


def test_index_dtype_takes_numpy_spellings():
    K = RNG.standard_normal((20, 8)).astype(np.float32)
    for spelling, name in [
        ("f4", "float32"),
        ("half", "float16"),
        ("<f2", "float16"),
        ("i1", "int8"),
        (np.int8, "int8"),
    ]:
        ix = embed.Index(K, dtype=spelling)
        assert f"dtype={name!r}" in repr(ix)
        assert ix.search(K[:2], 3)[1][:, 0].tolist() == [0, 1]
    for bad in ("f8", "float", "bogus"):
        with pytest.raises(ValueError, match="dtype must be one of"):
            embed.Index(K, dtype=bad)


def test_index_readers_writers_and_searches_at_once_do_not_deadlock():
    """A search holds the index's read lock while it re-attaches to the interpreter to look for
    Ctrl-C; `add` (waiting for the write lock) and `len` from other threads once deadlocked it
    for good (`len` waited for the lock while holding the interpreter). Run in a subprocess, so a
    hang fails the test instead of stopping the suite."""
    code = """
import threading, numpy as np
from bytepair import embed
rng = np.random.default_rng(0)
ix = embed.Index(rng.standard_normal((100_000, 128)).astype(np.float32))
Q = rng.standard_normal((256, 128)).astype(np.float32); one = Q[:1].copy()
stop = False
def adder():
    while not stop: ix.add(one)
def reader():
    while not stop: len(ix); ix.dim; ix.nbytes
for f in (adder, reader, reader):
    threading.Thread(target=f, daemon=True).start()
for i in range(5):
    s, idx = ix.search(Q, 10)
    assert idx.shape == (256, 10)
stop = True
print("done", len(ix) > 100_000)
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0 and proc.stdout.split() == ["done", "True"], proc.stderr


def test_ids_written_by_another_thread_during_a_gather_never_panic():
    """numpy lets another thread write to an array a gather is reading; an id changed after the
    check to one out of range once indexed past the table (a Rust panic). The result is then
    unspecified, but the call must return."""
    code = """
import threading, numpy as np
from bytepair import embed
T = np.zeros((1000, 64), np.float32); ids = np.zeros(2_000_000, np.int64)
stop = False
def writer():
    while not stop:
        ids[-1] = 10**6; ids[-1] = 0; ids[1000] = -5; ids[1000] = 0
threading.Thread(target=writer, daemon=True).start()
raised = 0
for _ in range(100):
    try:
        embed.gather(T, ids, pool="sum"); embed.gather(T, ids.reshape(1000, 2000), pool="max")
    except IndexError:
        raised += 1  # the check saw the bad id: fine
stop = True
print("ok", raised)
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0 and proc.stdout.startswith("ok"), proc.stderr[-2000:]


def test_a_header_with_an_absurd_dimension_is_a_value_error(tmp_path):
    """A 36-byte file claiming 0 keys of 2**56 dimensions (a valid checksum) once reached a Rust
    panic when the index built its sketch; it is refused like any other bad header."""
    import struct
    import zlib

    def blob(flags: int, dim: int) -> bytes:
        b = b"BPEMBIX\0" + struct.pack("<I", 1) + bytes([0, 0, flags, 0]) + struct.pack("<QQ", 0, dim)
        return b + struct.pack("<I", zlib.crc32(b))

    for dim in (2**56, 2**40, 2**32):
        path = tmp_path / f"evil{dim}.idx"
        path.write_bytes(blob(2, dim))
        with pytest.raises(ValueError, match="dimension"):
            embed.Index.load(path)
        with pytest.raises(ValueError, match="dimension"):
            embed._index_from_bytes(blob(3, dim))  # saved with the sketch off
    # At the limit itself a header is read (and the sketch built) without trouble.
    ok = embed._index_from_bytes(blob(2, 2**32 - 1))
    assert len(ok) == 0 and ok.dim == 2**32 - 1
    # Keys that wide cannot be given to the constructor either.
    with pytest.raises(ValueError, match="dimensions"):
        embed.Index(np.zeros((0, 2**32), np.float32))


@pytest.mark.parametrize("nq", [1, 7, 40])
def test_cosine_of_keys_of_tiny_norm_is_by_direction(nq):
    """Keys of subnormal values still score by their direction (numpy normalises them to unit
    vectors): their factor 1/|k| is beyond float32, so they are scored in f64."""
    K = np.array([[1e-39, 0], [0.6, 0.8], [0, 3e-39], [1e-36, 1e-36]], np.float32)
    Q = np.tile(np.array([[1, 0]], np.float32), (nq, 1))
    scores, idx = embed.topk(Q, K, 4)
    unit = K.astype(np.float64) / np.linalg.norm(K.astype(np.float64), axis=1, keepdims=True)
    want = unit @ np.array([1.0, 0.0])
    for s, i in zip(scores, idx):
        assert i.tolist() == [0, 3, 1, 2]
        np.testing.assert_allclose(s, want[[0, 3, 1, 2]], rtol=1e-6, atol=1e-7)
    ix_scores, ix_idx = embed.Index(K).search(Q, 4)
    assert ix_idx.tolist() == idx.tolist()
    np.testing.assert_allclose(ix_scores, scores, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("nq", [1, 7, 40])
def test_cosine_of_keys_of_huge_norm_is_by_direction(nq):
    """Keys whose norm is beyond float32 (finite values near its largest) score by their direction
    too: their dot product with a unit query would overflow float32 before the factor 1/|k| scales
    it down, so they are scored in f64 (they scored +-inf, out of order)."""
    K = np.array([[3e38, 2.5e38], [1, 1], [-3e38, -2.5e38], [0.6, -0.8], [2e37, -1e37]], np.float32)
    Q = np.tile(np.array([[1, 1]], np.float32), (nq, 1))
    scores, idx = embed.topk(Q, K, 5)
    unit = K.astype(np.float64) / np.linalg.norm(K.astype(np.float64), axis=1, keepdims=True)
    want = unit @ (np.array([1.0, 1.0]) / np.sqrt(2))
    order = np.argsort(-want, kind="stable")
    for s, i in zip(scores, idx):
        assert np.isfinite(s).all()
        assert i.tolist() == order.tolist()
        np.testing.assert_allclose(s, want[order], rtol=1e-6, atol=1e-7)
    ix_scores, ix_idx = embed.Index(K).search(Q, 5)
    assert ix_idx.tolist() == idx.tolist()
    np.testing.assert_allclose(ix_scores, scores, rtol=1e-6, atol=1e-7)
    # Wide rows too (every value large, none beyond float32).
    W = np.full((3, 768), 1.3e37, np.float32)
    W[1] *= -1
    s, i = embed.topk(np.ones((nq, 768), np.float32), W, 3)
    np.testing.assert_allclose(s, np.tile([1.0, 1.0, -1.0], (nq, 1)), rtol=1e-5)
    assert i[:, 2].tolist() == [1] * nq


def test_int8_dot_index_scores_near_the_float_range_do_not_overflow():
    K = np.array([[1, 0], [0, 1]], np.float32)
    Q = np.array([[1e37, 2e37], [3e38, -3e38], [1, 2]], np.float32)
    scores, idx = embed.Index(K, metric="dot", dtype="int8").search(Q, 2)
    exact_scores, exact_idx = embed.Index(K, metric="dot", dtype="float32").search(Q, 2)
    assert np.isfinite(scores).all()
    assert idx.tolist() == exact_idx.tolist()
    np.testing.assert_allclose(scores, exact_scores, rtol=1e-5)


def test_weighted_mean_with_weights_summing_to_a_subnormal_value():
    out = embed.gather(np.ones((1, 4), np.float32), [0, 0], pool="mean", weights=[1e-39, 1e-39])
    np.testing.assert_allclose(out, [[1, 1, 1, 1]], rtol=1e-5)
    out = embed.gather(np.full((1, 2), 1e30, np.float32), [0], pool="mean", weights=[1e-39])
    np.testing.assert_allclose(out, [[1e30, 1e30]], rtol=1e-5)


_INDEX_IN_A_HANDLER = r"""
import signal, sys, threading, time
import numpy as np
from bytepair import embed

rng = np.random.default_rng(0)
K = rng.standard_normal((100_000, 64)).astype(np.float32)
ix = embed.Index(K, sketch=False)
Q = rng.standard_normal((64, 64)).astype(np.float32)
ix.search(Q, 10)
t0 = time.perf_counter()
ix.search(Q, 10)
reps = max(2, int(1.5 / max(time.perf_counter() - t0, 1e-3)))  # about 1.5 s of search
Q = np.concatenate([Q] * reps)
seen = []
if sys.argv[1] == "add":
    # The handler itself changes the index while the search holds its snapshot.
    signal.signal(signal.SIGALRM, lambda *_: (ix.add(K[:1]), seen.append(len(ix))))
else:
    # Another thread's add, then the handler reads.
    threading.Timer(0.1, lambda: ix.add(K[:1])).start()
    signal.signal(signal.SIGALRM, lambda *_: seen.append(len(ix)))
signal.setitimer(signal.ITIMER_REAL, 0.3)
s, i = ix.search(Q, 10)
assert seen == [100_001], seen
assert len(ix) == 100_001 and (ix.search(K[:1], 1)[1] == 0).all()
print("ok")
"""


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
@pytest.mark.parametrize("case", ["add", "len"])
def test_python_code_run_during_a_search_may_use_the_index(case):
    """A search looks for signals every 20 ms, which runs Python code (a handler) in the middle of
    it: that code may add to the index or read it, also while another thread adds, without a
    deadlock."""
    p = subprocess.run([sys.executable, "-c", _INDEX_IN_A_HANDLER, case], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0 and p.stdout.strip() == "ok", p.stderr[-2000:]


def test_int8_dot_index_scores_beyond_float32_as_float32_keys_do():
    """A finite query near the float range against keys near it: scores that pass float32's range
    are inf (not NaN), as float32 keys give, and equal scores come out lowest index first."""
    rng = np.random.default_rng(5)
    K = rng.standard_normal((300, 16)).astype(np.float32)
    K[[20, 9]] = np.abs(K[[20, 9]]) * np.float32(1e37)  # scores near 1e68: beyond float32
    q = np.abs(rng.standard_normal((1, 16))).astype(np.float32) * np.float32(1e31)
    want_s, want_i = embed.topk(q, K, 300, metric="dot")
    assert want_s[0, :3].tolist()[:2] == [np.inf, np.inf] and np.isfinite(want_s[0, 2:]).all()
    s, i = embed.Index(K, metric="dot", dtype="int8").search(q, 300)
    assert not np.isnan(s).any()
    assert s[0, :2].tolist() == [np.inf, np.inf] and i[0, :2].tolist() == [9, 20]
    assert np.isfinite(s[0, 2:]).all() and len(set(i[0, 2:12]) & set(want_i[0, 2:12])) >= 9
