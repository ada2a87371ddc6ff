"""Obviously-correct numpy references for bytepair.embed (float64, materialise everything)."""

from __future__ import annotations

import numpy as np


def bags_of(ids, offsets):
    """Split 1-D ids by torch-style offsets (bag starts), or rows of 2-D ids."""
    ids = np.asarray(ids)
    if ids.ndim == 2:
        return [ids[i] for i in range(ids.shape[0])], None
    if offsets is None:
        return [ids], None
    ends = list(offsets[1:]) + [len(ids)]
    return [ids[s:e] for s, e in zip(offsets, ends)], (list(offsets), ends)


def gather(table, ids, offsets=None, *, pool="mean", weights=None, normalize=False):
    T = np.asarray(table, dtype=np.float64)
    ids = np.asarray(ids)
    w = None if weights is None else np.asarray(weights, dtype=np.float64)
    if pool == "none":
        flat = ids.reshape(-1)
        out = T[flat]
        if w is not None:
            out = out * w.reshape(-1)[:, None]
    else:
        if ids.ndim == 2:
            groups = [(ids[b], None if w is None else w[b]) for b in range(ids.shape[0])]
        else:
            starts = [0] if offsets is None else list(offsets)
            ends = starts[1:] + [len(ids)]
            groups = [(ids[s:e], None if w is None else w[s:e]) for s, e in zip(starts, ends)]
        rows = []
        for g, gw in groups:
            if len(g) == 0:
                rows.append(np.zeros(T.shape[1]))
                continue
            R = T[g] * (1.0 if gw is None else gw[:, None])
            if pool == "sum":
                rows.append(R.sum(0))
            elif pool == "max":
                rows.append(np.fmax.reduce(R, axis=0))
            else:
                den = len(g) if gw is None else gw.sum()
                rows.append(np.zeros(T.shape[1]) if den == 0 else R.sum(0) / den)
        out = np.array(rows).reshape(len(groups), T.shape[1])
    if normalize:
        n = np.linalg.norm(out, axis=1, keepdims=True)
        out = np.divide(out, n, out=np.zeros_like(out), where=n > 0)
    return out.astype(np.float32)


def scores(queries, keys, metric="cosine"):
    Q = np.asarray(queries, dtype=np.float64)
    K = np.asarray(keys, dtype=np.float64)
    if metric == "cosine":

        def unit(X):
            n = np.linalg.norm(X, axis=1, keepdims=True)
            return np.divide(X, n, out=np.zeros_like(X), where=n > 0)

        Q, K = unit(Q), unit(K)
    return Q @ K.T


def topk(queries, keys, k, *, metric="cosine"):
    """Full score matrix, then a stable sort by (score desc, index asc); NaN last."""
    S = scores(queries, keys, metric)
    idx = np.empty((S.shape[0], k), dtype=np.int64)
    for r in range(S.shape[0]):
        s = np.where(np.isnan(S[r]), -np.inf, S[r])
        nan_last = np.isnan(S[r]).astype(np.int64)
        order = np.lexsort((np.arange(len(s)), -s, nan_last))
        idx[r] = order[:k]
    return np.take_along_axis(S, idx, 1).astype(np.float32), idx


def recall(got_idx, want_idx):
    hits = sum(len(set(g) & set(w)) for g, w in zip(got_idx.tolist(), want_idx.tolist()))
    return hits / want_idx.size


def tiktoken_encoding(name="cl100k_base"):
    """tiktoken's encoding, offline: unless ``TIKTOKEN_CACHE_DIR`` is set (the suite's conftest
    does), its cache is pointed at a private folder holding the repository's bundled rank file."""
    import hashlib
    import os
    import tempfile
    from pathlib import Path

    import tiktoken

    if not os.environ.get("TIKTOKEN_CACHE_DIR"):
        src = Path(__file__).resolve().parent.parent / "rust" / "core" / "vocab" / f"{name}.tiktoken"
        url = f"https://openaipublic.blob.core.windows.net/encodings/{name}.tiktoken"
        d = Path(tempfile.mkdtemp(prefix="bp-tiktoken-"))
        (d / hashlib.sha1(url.encode()).hexdigest()).write_bytes(src.read_bytes())
        os.environ["TIKTOKEN_CACHE_DIR"] = str(d)
    return tiktoken.get_encoding(name)
