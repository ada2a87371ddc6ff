"""Embedding kernels: fused gather/pool, exact top-k, quantised flat indexes, text embedding.

Everything runs natively with the interpreter released, in parallel, and returns new numpy
arrays without a copy. Inputs are used in place when they are C-contiguous with a supported dtype
(float32 or float16 tables, float32 queries and keys, int8/16/32/64 or uint8/16/32/64 ids);
anything else is converted once (for example a float64 table to float32).

Conventions shared by all functions:

- An empty bag pools to a row of zeros, for ``"mean"``, ``"sum"`` and ``"max"`` alike (as
  torch's ``EmbeddingBag`` does).
- ``normalize=True`` scales rows to unit L2 norm, however small or large their values (norms
  that float32 cannot square are taken in float64); a zero row stays zero. Cosine scores
  likewise do not depend on the scale of keys and queries, up to float32 rounding: keys that
  are scaled copies of one vector score within a few units in the last place of each other, so
  their order among themselves follows that rounding, not their index.
- NaN: tables and keys are not scanned for NaN. In ``gather``, NaN propagates through ``"sum"`` and
  ``"mean"``; ``"max"`` ignores it like ``np.fmax``. In ``topk`` and ``Index.search``, a NaN value
  gives NaN scores, which rank below every number (so they come last, and only when fewer than
  ``k`` keys score a number); with ``metric="cosine"`` so does an infinite value. With
  ``metric="dot"``, infinite values follow IEEE arithmetic in ``topk`` and in float32 indexes
  (a score of ``inf`` ranks first, ``inf - inf`` is NaN); a float16 index refuses keys beyond
  float16's range (``ValueError``), and an int8 index, which cannot hold them, scores such a key
  NaN. Cosine gives zero vectors a score of 0.
- Ties (equal float32 scores) go to the lower key index; results are the same whatever the
  thread count. The SIMD level (below) sums in another order, which may change a score's last
  bits and so the order of keys whose scores differ only there.
- Errors: a wrong dtype is a ``TypeError``; a wrong rank, mismatched dimension, bad offsets or
  ``k`` larger than the number of keys is a ``ValueError``; an id outside the table is an
  ``IndexError``.
- Ctrl-C: ``gather``, ``topk``, ``Index.search`` and ``embed_texts`` check for signals every
  20 ms while they run and stop with ``KeyboardInterrupt`` (nothing is returned or modified).
- SIMD: AVX-512 (int8 searches with VNNI) or AVX2 with FMA and F16C, chosen at run time, else
  portable code; ``simd_level()`` says which. ``BYTEPAIR_SIMD=avx2`` or ``generic`` lowers it.
"""

from __future__ import annotations

import errno
import operator
import os
import sys
from typing import Any, Iterable, Tuple, Union

import numpy as np

from bytepair import _native
from bytepair._files import write_atomically

__all__ = ["gather", "topk", "Index", "embed_texts", "simd_level"]

_POOLS = ("mean", "sum", "max", "none")
_METRICS = ("cosine", "dot")
_INDEX_DTYPES = ("float32", "float16", "int8")
_ID_DTYPES = tuple(np.dtype(t) for t in ("i8", "i4", "u4", "u2", "u1", "i2", "i1", "u8"))

PathLike = Union[str, "os.PathLike[str]"]


def _float_matrix(a: Any, name: str, *, allow_f16: bool) -> np.ndarray:
    """A 2-D, C-contiguous, aligned float32 (or float16) array; copies only when needed."""
    a = np.asarray(a)
    if a.dtype.kind != "f":
        if a.size == 0 and a.dtype.kind in "iu":
            a = a.astype(np.float32)
        else:
            raise TypeError(f"{name} must hold floats, not {a.dtype}")
    if a.ndim != 2:
        raise ValueError(f"{name} must be 2-D, got shape {a.shape}")
    want = np.float16 if (allow_f16 and a.dtype == np.float16) else np.float32
    return np.require(a, dtype=want, requirements=["C", "A"])


def _choice(value: str, options: Tuple[str, ...], name: str) -> str:
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a str, not {type(value).__name__}")
    if value not in options:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, options))}, not {value!r}")
    return value


def _k(k: Any) -> int:
    try:
        k = operator.index(k)
    except TypeError:
        raise TypeError(f"k must be an int, not {type(k).__name__}") from None
    if k < 0:
        raise ValueError(f"k must be >= 0, got {k}")
    if k > sys.maxsize:
        raise ValueError(f"k = {k} is larger than the number of keys")
    return k


def gather(
    table: Any,
    ids: Any,
    offsets: Any = None,
    *,
    pool: str = "mean",
    weights: Any = None,
    normalize: bool = False,
) -> np.ndarray:
    """Gather rows of ``table`` for ``ids`` and pool them per bag, in one pass.

    ``table`` is ``[V, D]`` float32 or float16. Bags are given either by a 2-D ``ids`` array
    (one bag a row) or by a 1-D ``ids`` with ``offsets``, the start of each bag as in torch's
    ``EmbeddingBag`` (``offsets[0]`` must be 0; offsets must not decrease; the last bag runs to
    the end). A 1-D ``ids`` without ``offsets`` is one bag.

    ``pool`` is ``"mean"``, ``"sum"``, ``"max"`` or ``"none"``. ``weights`` (float, same shape as
    ``ids``) scales each row before pooling; ``"mean"`` with weights is the weighted average
    ``sum(w * row) / sum(w)`` (zeros where the weights sum to 0). Empty bags give zero rows.

    Returns ``[B, D]`` float32, or ``[N, D]`` for ``"none"`` (``N = ids.size``; reshape 2-D ids'
    result to ``(B, L, D)`` yourself, without a copy).

    >>> import numpy as np
    >>> from bytepair import embed
    >>> T = np.arange(12, dtype=np.float32).reshape(4, 3)
    >>> embed.gather(T, np.array([[0, 1], [2, 3]]))
    array([[1.5, 2.5, 3.5],
           [7.5, 8.5, 9.5]], dtype=float32)
    >>> embed.gather(T, np.array([3, 0, 1]), np.array([0, 1, 1]), pool="sum")
    array([[ 9., 10., 11.],
           [ 0.,  0.,  0.],
           [ 3.,  5.,  7.]], dtype=float32)
    >>> embed.gather(T, np.array([1, 2]), pool="max", weights=np.array([2.0, 1.0]))
    array([[ 6.,  8., 10.]], dtype=float32)
    """
    table = _float_matrix(table, "table", allow_f16=True)
    pool = _choice(pool, _POOLS, "pool")
    ids_a = np.asarray(ids)
    if ids_a.dtype.kind not in "iu":
        if ids_a.size == 0 and ids_a.dtype.kind == "f":
            ids_a = ids_a.astype(np.int64)
        else:
            raise TypeError(f"ids must hold integers, not {ids_a.dtype}")
    if not ids_a.dtype.isnative:  # same values, native order (uint64 must not wrap to int64)
        ids_a = ids_a.astype(ids_a.dtype.newbyteorder("="))
    if ids_a.dtype not in _ID_DTYPES:
        ids_a = ids_a.astype(np.int64)
    ids_a = np.require(ids_a, requirements=["C", "A"])
    fixed = None
    off = None
    if ids_a.ndim == 2:
        if offsets is not None:
            raise ValueError("offsets can only be given with 1-D ids")
        fixed = (int(ids_a.shape[0]), int(ids_a.shape[1]))
    elif ids_a.ndim == 1:
        if offsets is None:
            fixed = (1, int(ids_a.shape[0]))
        else:
            off = np.asarray(offsets)
            if off.dtype.kind not in "iu":
                if not (off.size == 0 and off.dtype.kind == "f"):
                    raise TypeError(f"offsets must hold integers, not {off.dtype}")
            if off.ndim != 1:
                raise ValueError(f"offsets must be 1-D, got shape {off.shape}")
            if off.dtype.kind == "u" and off.size and off.max() > np.iinfo(np.int64).max:
                raise ValueError("offsets are too large")
            off = np.require(off, dtype=np.int64, requirements=["C", "A"])
    else:
        raise ValueError(f"ids must be 1-D (with offsets) or 2-D, got shape {ids_a.shape}")
    w = None
    if weights is not None:
        w = np.asarray(weights)
        if w.dtype.kind not in "fiu":
            raise TypeError(f"weights must be numbers, not {w.dtype}")
        if w.shape != ids_a.shape:
            raise ValueError(f"weights must have the shape of ids {ids_a.shape}, got {w.shape}")
        w = np.require(w.reshape(-1), dtype=np.float32, requirements=["C", "A"])
    return _native.embed_gather(table, ids_a.reshape(-1), off, fixed, pool, w, bool(normalize))


def topk(queries: Any, keys: Any, k: int, *, metric: str = "cosine") -> Tuple[np.ndarray, np.ndarray]:
    """Exact top-``k`` keys for each query: ``(scores, indices)``, each ``[B, k]``.

    ``queries`` is ``[B, D]`` and ``keys`` ``[N, D]`` (float32; float16 keys are read as they
    are). ``metric`` is ``"cosine"`` (keys need not be normalised) or ``"dot"``. Scores are float32
    sorted descending, indices int64; ties go to the lower index. No ``[B, N]`` score matrix is
    built. ``k`` larger than ``N`` is a ``ValueError``.

    >>> import numpy as np
    >>> from bytepair import embed
    >>> K = np.array([[1, 0], [0, 1], [1, 1], [-1, 0]], dtype=np.float32)
    >>> s, i = embed.topk(np.array([[1.0, 0.2]], dtype=np.float32), K, 2)
    >>> i
    array([[0, 2]])
    >>> s.round(3)
    array([[0.981, 0.832]], dtype=float32)
    >>> embed.topk(np.array([[2.0, 1.0]], dtype=np.float32), K, 1, metric="dot")[1]
    array([[2]])
    """
    metric = _choice(metric, _METRICS, "metric")
    k = _k(k)
    q = _float_matrix(queries, "queries", allow_f16=False)
    kk = _float_matrix(keys, "keys", allow_f16=True)
    if q.shape[1] != kk.shape[1]:
        raise ValueError(f"queries have dimension {q.shape[1]} but keys have {kk.shape[1]}")
    return _native.embed_topk(q, kk, k, metric)


def _dtype_name(dtype: Any) -> str:
    if isinstance(dtype, str):
        if dtype in _INDEX_DTYPES:
            return dtype
        try:  # numpy's other spellings: "f4", "half", "i1", "<f2"
            return _choice(np.dtype(dtype).name, _INDEX_DTYPES, "dtype")
        except TypeError:
            return _choice(dtype, _INDEX_DTYPES, "dtype")
    if dtype is None:  # numpy reads None as float64; here it is a mistake
        raise TypeError(f"dtype must be one of {', '.join(_INDEX_DTYPES)}, not None")
    try:
        name = np.dtype(dtype).name
    except TypeError:
        raise TypeError(f"dtype must be one of {', '.join(_INDEX_DTYPES)}, not {dtype!r}") from None
    return _choice(name, _INDEX_DTYPES, "dtype")


class Index:
    """An exact (flat) nearest-neighbour index with float32, float16 or int8 storage.

    Keys are normalised when added for ``metric="cosine"``, then stored as ``dtype``:

    - ``"float32"``: exact scores.
    - ``"float16"``: half the memory and half the bytes a search reads; scores move by about
      1e-5 (cosine), and the search ranks by them directly. With ``metric="dot"`` keys must
      fit float16 (``|x| <= 65504``), else ``ValueError``; values below float16's smallest
      (about 6e-8) become 0, so keys that small belong in a float32 index.
    - ``"int8"``: one scale per key; a search scans 1 byte a value, keeps as candidates every
      key whose int8 score is within 10 standard deviations of the int8 rounding error below
      the k-th best (at most an eighth of the keys, else the best ``max(4k, k + 64)``), and
      rescores them with a second int8 level that stores the quantisation residual (about 14
      bits together). No float32 copy is kept: the index takes
      2 bytes a value plus 12 bytes a key. With AVX-512 VNNI the scan quantises the query
      too and multiplies bytes directly (64 per instruction); the rescoring stays in float32.

    ``sketch`` (on by default) keeps a smaller copy of the keys that a search scans first:

    - float32 and float16 keys: int8, 1 byte a value plus 8 bytes a key (+25% memory for
      float32, +50% for float16). A search scores exactly every key that a proven bound on the
      int8 error cannot rule out, so it returns exactly what a scan of the keys would, bit for
      bit, while reading a quarter (float16: half) of the bytes. Where the bound cannot settle it
      (NaN or infinite values, ``k`` above ``len / 16``, keys so alike that more than an eighth
      are candidates, a processor without AVX2) the search scans the keys.
    - int8 keys: 4 bits, half a byte a value (rows padded to a multiple of 128 values) plus 4
      bytes a key (+25% at 768 dimensions), scanned by single
      queries on processors with AVX-512 VNNI. Keys within 7 standard deviations of the 4-bit
      rounding error below the k-th best go on to the int8 codes; in our tests the results
      equal the int8 scan's.

    ``sketch=False``, or setting ``index.sketch = False``, saves the memory; :meth:`save`
    records the choice and :meth:`load` rebuilds the sketch.

    >>> import numpy as np
    >>> from bytepair import embed
    >>> K = np.eye(4, dtype=np.float32)
    >>> ix = embed.Index(K, dtype="int8")
    >>> len(ix), ix.dim, ix.dtype
    (4, 4, 'int8')
    >>> ix.search(np.array([[0.1, 0.9, 0.0, 0.0]], dtype=np.float32), 2)[1]
    array([[1, 0]])
    >>> ix.add(np.ones((1, 4), dtype=np.float32)); len(ix)
    5
    """

    __slots__ = ("_inner", "__weakref__")

    def __init__(self, keys: Any, *, metric: str = "cosine", dtype: Any = "float32", sketch: bool = True) -> None:
        metric = _choice(metric, _METRICS, "metric")
        name = _dtype_name(dtype)
        keys = _float_matrix(keys, "keys", allow_f16=False)
        self._inner = _native.EmbedIndex(keys.shape[1], metric, name, bool(sketch))
        if keys.shape[0]:
            self._inner.add(keys)

    def add(self, keys: Any) -> None:
        """Append keys ``[n, dim]`` (normalised and converted like the first ones).

        Ctrl-C stops it with ``KeyboardInterrupt`` and leaves the index as it was.

        >>> index = Index(np.eye(3, 8, dtype=np.float32))
        >>> index.add(np.ones((2, 8), dtype=np.float32))
        >>> len(index)
        5
        """
        keys = _float_matrix(keys, "keys", allow_f16=False)
        if keys.shape[1] != self.dim:
            raise ValueError(f"keys have dimension {keys.shape[1]} but the index has {self.dim}")
        self._inner.add(keys)

    def search(self, queries: Any, k: int) -> Tuple[np.ndarray, np.ndarray]:
        """``(scores, indices)``, each ``[B, k]``, best first; see :func:`topk`.

        >>> index = Index(np.eye(4, 8, dtype=np.float32))
        >>> scores, ids = index.search(np.eye(1, 8, dtype=np.float32), 2)
        >>> ids[0, 0]
        np.int64(0)
        """
        q = _float_matrix(queries, "queries", allow_f16=False)
        if q.shape[1] != self.dim:
            raise ValueError(f"queries have dimension {q.shape[1]} but the index has {self.dim}")
        return self._inner.search(q, _k(k))

    def __len__(self) -> int:
        return len(self._inner)

    @property
    def dim(self) -> int:
        """The dimension of the keys."""
        return self._inner.dim

    @property
    def metric(self) -> str:
        """``"cosine"`` or ``"dot"``."""
        return self._inner.metric

    @property
    def dtype(self) -> str:
        """How keys are stored: ``"float32"``, ``"float16"`` or ``"int8"``."""
        return self._inner.dtype

    @property
    def nbytes(self) -> int:
        """Bytes held by the stored keys and the sketch."""
        return self._inner.nbytes

    @property
    def sketch(self) -> bool:
        """Whether searches scan a sketch of the keys first (int8 for float keys, 4-bit for int8).

        Setting it builds the sketch or frees it. For float keys the results are the same either
        way. Ctrl-C stops the build with ``KeyboardInterrupt`` and leaves the index without one.

        >>> index = Index(np.eye(4, 8, dtype=np.float32))
        >>> index.sketch, index.nbytes
        (True, 192)
        >>> index.sketch = False; index.nbytes
        128
        """
        return self._inner.sketch

    @sketch.setter
    def sketch(self, on: bool) -> None:
        self._inner.sketch = bool(on)

    def save(self, path: PathLike) -> None:
        """Write the index to ``path`` (a versioned little-endian binary file that ends with a
        CRC-32 of its contents, checked by :meth:`load`). The file is written under a temporary
        name and renamed when complete, so a save that fails (a full disk) or is interrupted
        leaves the file that was there before.

        >>> import tempfile
        >>> path = os.path.join(tempfile.mkdtemp(), "keys.index")
        >>> index = Index(np.eye(4, 8, dtype=np.float32), dtype="int8")
        >>> index.save(path)
        >>> len(Index.load(path))
        4
        """
        write_atomically(path, self._inner.save)

    @classmethod
    def load(cls, path: PathLike) -> "Index":
        """Read an index written by :meth:`save`. A file of another format, or one whose contents
        no longer match its CRC-32 (corrupted), is a ``ValueError``."""
        path = os.fsdecode(path)
        if os.path.isdir(path):
            raise IsADirectoryError(errno.EISDIR, "Is a directory", path)
        with open(path, "rb"):  # a missing or unreadable file fails here as open() reports it
            pass
        obj = cls.__new__(cls)
        obj._inner = _native.EmbedIndex.load(path)
        return obj

    def __reduce__(self) -> Tuple[Any, Tuple[bytes]]:
        """Pickles as the bytes :meth:`save` writes (the sketch is rebuilt on unpickling).

        >>> import pickle
        >>> index = Index(np.eye(4, 8, dtype=np.float32))
        >>> len(pickle.loads(pickle.dumps(index)))
        4
        """
        return _index_from_bytes, (self._inner.to_bytes(),)

    def __repr__(self) -> str:
        return (
            f"Index(len={len(self)}, dim={self.dim}, metric={self.metric!r}, dtype={self.dtype!r}, "
            f"sketch={self.sketch})"
        )


def _index_from_bytes(data: bytes) -> Index:
    """Unpickles an :class:`Index` (see ``Index.__reduce__``)."""
    obj = Index.__new__(Index)
    obj._inner = _native.EmbedIndex.from_bytes(data)
    return obj


def embed_texts(
    encoding: Any,
    table: Any,
    texts: Iterable[str],
    *,
    pool: str = "mean",
    normalize: bool = True,
) -> np.ndarray:
    """Embed texts as pooled rows of their token ids, in one native parallel call.

    Each text is encoded with ``encoding`` (ordinary tokens: special-token text is encoded as
    plain text), its ids gather rows of ``table`` (``[V, D]`` float32 or float16), and the rows are
    pooled (``"mean"``, ``"sum"`` or ``"max"``) and, by default, L2-normalised: the static
    embedding pipeline of model2vec-style models, with no Python lists of ids. Returns
    ``[len(texts), D]`` float32; an empty text gives a zero row. A token id ``>= V`` is an
    ``IndexError``.

    >>> import numpy as np
    >>> from bytepair import embed
    >>> enc = embed._doctest_encoding()
    >>> T = np.random.default_rng(0).standard_normal((100_277, 8)).astype(np.float32)
    >>> E = embed.embed_texts(enc, T, ["hello world", "", "hello world"])
    >>> E.shape, bool(np.allclose(E[0], E[2])), float(np.abs(E[1]).sum())
    ((3, 8), True, 0.0)
    """
    pool = _choice(pool, _POOLS[:3], "pool")
    if isinstance(texts, (str, bytes)):
        raise TypeError("texts must be a sequence of str, not a single string")
    texts = list(texts)
    for i, t in enumerate(texts):
        if not isinstance(t, str):
            raise TypeError(f"texts[{i}] must be a str, not {type(t).__name__}")
    table = _float_matrix(table, "table", allow_f16=True)
    core = getattr(encoding, "_core_bpe", encoding)
    try:
        return _native.embed_texts(core, table, texts, pool, bool(normalize))
    except UnicodeEncodeError:  # surrogates: encoded as encode() does (tiktoken's rule)
        from bytepair.core import _fix_surrogates

        return _native.embed_texts(core, table, [_fix_surrogates(t) for t in texts], pool, bool(normalize))


def simd_level() -> str:
    """The SIMD version the kernels run: ``"avx512+vnni"``, ``"avx512"``, ``"avx2"`` or
    ``"generic"``.

    Set ``BYTEPAIR_SIMD`` to ``generic``, ``avx2`` or ``avx512-novnni`` before the first call to
    lower it (for testing).

    >>> simd_level() in ("avx512+vnni", "avx512", "avx2", "generic")
    True
    """
    return _native.embed_simd_level()


def _doctest_encoding() -> Any:
    """The encoding the examples use."""
    import bytepair

    return bytepair.get_encoding("cl100k_base")
