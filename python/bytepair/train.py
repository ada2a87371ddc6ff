"""Byte-level BPE training: ``train``, ``train_from_counts``, ``WordCounts``, and saving/loading.

The work runs in Rust: word counting reads files without the interpreter (or takes documents from
any Python iterable in batches) and counts in parallel; the merge loop uses a lazily revalidated
priority queue. Ranks follow tiktoken: bytes 0..255 are ranks 0..255, merge ``i`` creates rank
``256 + i``, special tokens come after the last merge in the order given. Ties between pairs with
equal counts go to the smallest ``(left id, right id)``, so merge lists equal rustbpe's.

>>> import bytepair
>>> enc = bytepair.train(["hello hello world"] * 10, vocab_size=260, progress=False)
>>> enc.n_vocab
260
"""

from __future__ import annotations

import base64
import contextlib
import json
import operator
import os
import re
import sys
import tempfile
import warnings
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path, PurePath
from typing import Any, Callable, Optional, Union

from bytepair import _native
from bytepair._files import write_atomically

TYPE_CHECKING = False
if TYPE_CHECKING:
    from bytepair.core import Encoding

__all__ = ["WordCounts", "load", "train", "train_from_counts"]

_META_FILE = "bytepair.json"

PathLike = Union[str, "os.PathLike[str]"]


# ------------------------------------------------------------------------------------------------
# Progress bars


class _Progress:
    """Progress bars for both phases (tqdm), called from the native code between chunks."""

    def __init__(self, enabled: Optional[bool]) -> None:
        if enabled is None:
            enabled = bool(getattr(sys.stderr, "isatty", lambda: False)())
        self._tqdm: Any = None
        if enabled:
            try:
                from tqdm.auto import tqdm

                self._tqdm = tqdm
            except ImportError:  # pragma: no cover - tqdm is optional
                self._tqdm = None
        self._bars: dict[str, Any] = {}

    @property
    def callback(self) -> Optional[Callable[..., None]]:
        return self if self._tqdm is not None else None

    def __call__(self, phase: str, done: int, total: Optional[int], docs: Optional[int]) -> None:
        bar = self._bars.get(phase)
        if bar is None:
            if phase == "read":
                bar = self._tqdm(
                    total=total or None,
                    unit="B",
                    unit_scale=True,
                    unit_divisor=1024,
                    desc="counting words",
                    dynamic_ncols=True,
                )
            else:
                bar = self._tqdm(total=total, unit="merge", desc="learning merges", dynamic_ncols=True)
            self._bars[phase] = bar
        if phase == "read" and docs is not None:
            bar.set_postfix(docs=docs, refresh=False)
        bar.update(done - bar.n)

    def close(self) -> None:
        for bar in self._bars.values():
            bar.close()
        self._bars.clear()


# ------------------------------------------------------------------------------------------------
# Inputs


def _is_parquet(path: str) -> bool:
    p = path.lower()
    for ext in (".gz", ".zst", ".zstd"):
        p = p.removesuffix(ext)
    return p.endswith(".parquet")


def _display(path: str) -> str:
    """``path`` for messages: bytes of a file name that are not UTF-8 as ``\\xff`` escapes."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")


def _maybe_path(s: str) -> bool:
    return bool(s) and len(s) <= 4096 and "\n" not in s and "\0" not in s


def _glob_matches(s: str) -> bool:
    import glob

    return glob.has_magic(s) and bool(glob.glob(s, recursive=True))


def _looks_like_path(s: str) -> bool:
    """Whether ``s`` names an existing file or directory, or is a glob that matches something."""
    return _maybe_path(s) and (os.path.exists(s) or _glob_matches(s))


# A corpus file name: what a path with a typo in it still looks like.
_CORPUS_NAME = re.compile(r"\.(?:txt|jsonl|ndjson|parquet)(?:\.(?:gz|zst|zstd))?\Z", re.IGNORECASE)


def _looks_like_file_name(s: str) -> bool:
    """Whether ``s`` looks like the name of a corpus file: a known suffix (``.txt``, ``.jsonl``,
    ``.parquet``, optionally ``.gz``/``.zst``) and no whitespace."""
    return bool(_CORPUS_NAME.search(s)) and _maybe_path(s) and not any(c.isspace() for c in s)


def _as_paths(data: Any) -> Optional[list[str]]:
    """The list of paths `data` names, or None when it is an iterable of documents.

    A ``str`` or ``os.PathLike`` is a path. A list or tuple of ``os.PathLike`` items (``str``
    ones among them or not) is a list of paths. A list or tuple of ``str`` is a list of paths when every item names an
    existing file or directory or is a glob that matches something. When at least half do (but
    not all), or when an item looks like a corpus file name (no whitespace, ending in ``.txt``,
    ``.jsonl`` or ``.parquet``, optionally followed by ``.gz``/``.zst``), it is a list of paths
    with a mistake in it: ``FileNotFoundError`` names the missing items. Otherwise its items are
    documents.
    """
    if isinstance(data, (str, PurePath)) or isinstance(data, os.PathLike):
        return [os.fspath(data)]
    if not isinstance(data, (list, tuple)) or not data:
        return None
    if all(isinstance(p, (str, PurePath, os.PathLike)) for p in data) and not all(isinstance(p, str) for p in data):
        return [os.fspath(p) for p in data]  # a path object is never a document: all are paths
    if not all(isinstance(p, str) for p in data):
        return None
    if all(_looks_like_path(p) for p in data):
        return list(data)
    # Documents that happen to name something here ("data", "src") stay documents: a list of
    # paths with a mistake in it names mostly things that exist.
    if not any(_looks_like_file_name(p) for p in data) and 2 * _existing_count(data) < len(data):
        return None
    missing = []
    for p in data:
        if not _looks_like_path(p) and p not in missing:
            missing.append(p)
            if len(missing) > 3:
                break
    shown = ", ".join(repr(_display(p)) for p in missing[:3]) + (", ..." if len(missing) > 3 else "")
    raise FileNotFoundError(
        f"no such file or directory: {shown} (a list of str where some items name files, or look "
        "like file names, is read as a list of paths; to pass such strings as documents, pass an "
        "iterator over them, e.g. iter(docs))"
    )


def _existing_count(items: Sequence[str]) -> int:
    """How many items name an existing file or directory, or are a glob (without whitespace: a
    document with a "?" in it is not a glob) that matches something. Fast for long lists of
    documents: it looks names up in directory listings, one listing per directory, instead of
    making a system call per item."""
    listings: dict[str, Optional[set[str]]] = {}
    by_dir: dict[str, dict[str, int]] = {}
    for p in items:
        if _maybe_path(p):
            head, tail = os.path.split(p) if _SEP.search(p) else ("", p)
            tails = by_dir.setdefault(head, {})
            tails[tail] = tails.get(tail, 0) + 1
    n = 0
    for head, tails in by_dir.items():
        names = _listing(head, listings)
        if names is not None:
            n += sum(c for t, c in tails.items() if t in names or t in ("", ".", ".."))
    globs = [p for p in items if _maybe_path(p) and _MAGIC.search(p) and not _SPACE.search(p)]
    return n + sum(1 for p in globs if _glob_matches(p))


_MAGIC = re.compile(r"[*?\[]")
_SPACE = re.compile(r"\s")
_SEP = re.compile("[/\\\\]" if os.altsep else "/")


def _listing(d: str, cache: dict[str, Optional[set[str]]]) -> Optional[set[str]]:
    """The names in the directory ``d`` ("" is the current one), or None if there is none. A
    directory is listed only when its parent's listing holds its name, so that words with a
    slash in them ("and/or") cost no system call."""
    chain = []
    cur = d
    while cur not in cache:
        parent, name = os.path.split(cur)
        chain.append((cur, parent, name))
        if not name or parent == cur:
            break
        cur = parent
    for cur, parent, name in reversed(chain):
        if name and name not in (".", "..") and parent != cur:
            up = cache.get(parent)
            if up is None or name not in up:
                cache[cur] = None
                continue
        try:
            cache[cur] = set(os.listdir(cur or "."))
        except OSError:
            cache[cur] = None
    return cache[d]


def _expand_paths(paths: Sequence[Any]) -> list[str]:
    """The files that ``paths`` (files, directories, globs) name, in order, as the native reader
    expands them; names that are not UTF-8 come back as ``os.fsdecode`` gives them (undecodable
    bytes as surrogates), so that they can be opened. (A glob does not match such names.)"""
    return [os.fsdecode(f) for f in _native._expand_paths([os.fsdecode(p) for p in paths])]


_STRING_TYPES = ("is_string", "is_large_string", "is_string_view", "is_binary", "is_large_binary", "is_null")


def _text_type(pa: Any, t: Any) -> bool:
    if pa.types.is_dictionary(t):
        t = t.value_type
    return any(getattr(pa.types, f, lambda _: False)(t) for f in _STRING_TYPES)


def _named_error(e: BaseException, path: str) -> Exception:
    """``e`` with a message that names ``path``: the same class for an ``OSError``, else
    ``ValueError`` (the file's data is bad)."""
    msg = str(e) or type(e).__name__
    shown = _display(path)
    if shown not in msg and path not in msg:
        msg = f"{shown}: {msg}"
    if isinstance(e, OSError):
        try:
            return type(e)(msg)
        except Exception:  # pragma: no cover - an OSError subclass with another constructor
            return OSError(msg)
    return ValueError(msg)


def _parquet_documents(
    files: Sequence[str], field: str, on_error: str = "fail", errors: Optional[list[str]] = None
) -> Iterator[Union[str, bytes]]:
    """The documents of the column ``field`` of parquet files (nulls left out). A file that cannot
    be read, or whose column is missing or does not hold text, raises an error naming it
    (``on_error="fail"``), or is skipped, its message added to ``errors``."""
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError as e:
        raise ImportError("reading .parquet files needs pyarrow (pip install pyarrow)") from e
    for f in files:
        try:
            with _parquet_source(pa, f) as source:
                yield from _parquet_column(pa, pq, source, f, field)
        except (OSError, ValueError, TypeError, KeyError, IndexError, NotImplementedError, pa.ArrowException) as e:
            err = _named_error(e, f)
            if on_error == "fail":
                raise err from e
            if errors is not None:
                errors.append(str(err))


@contextlib.contextmanager
def _parquet_source(pa: Any, path: str) -> Iterator[Any]:
    """``path``, or for a ``.gz``/``.zst`` file its parquet file decompressed into an anonymous
    temporary file (parquet is read out of order, so it needs the whole file; memory stays
    small)."""
    lower = path.lower()
    codec = "gzip" if lower.endswith(".gz") else "zstd" if lower.endswith((".zst", ".zstd")) else None
    if codec is None:
        yield path
        return
    with tempfile.TemporaryFile() as tmp, pa.input_stream(path, compression=codec) as src:
        while chunk := src.read(1 << 22):
            tmp.write(chunk)
        tmp.seek(0)
        yield tmp


def _parquet_column(pa: Any, pq: Any, source: Any, f: str, field: str) -> Iterator[Union[str, bytes]]:
    """The non-null values of the text column ``field`` of the parquet file ``source`` (named
    ``f`` in errors)."""
    pf = pq.ParquetFile(source)
    names = pf.schema_arrow.names
    if field not in names:
        raise ValueError(f"{_display(f)}: no column {field!r} (columns: {names})")
    t = pf.schema_arrow.field(field).type
    if not _text_type(pa, t):
        raise ValueError(f"{_display(f)}: column {field!r} holds {t}, not text")
    for batch in pf.iter_batches(columns=[field], batch_size=8192):
        for doc in batch.column(0).to_pylist():
            if doc is not None:
                yield doc


_U64 = 1 << 64  # the native side's integers are 64-bit


def _index(value: Any) -> Any:
    """``value`` as an ``int`` when it is an integer of another type (``np.int64``, anything with
    ``__index__``, as ``range`` and numpy take them); bools and everything else unchanged."""
    if isinstance(value, bool) or isinstance(value, int) or not hasattr(type(value), "__index__"):
        return value
    try:
        return operator.index(value)
    except TypeError:
        return value


def _check_int(name: str, value: Any, *, minimum: int, optional: bool = False) -> None:
    """``value`` is an int from ``minimum`` to 2**64 - 1 (or None when ``optional``): else a
    ``ValueError`` naming the parameter."""
    if value is None and optional:
        return
    value = _index(value)
    if not isinstance(value, int) or not minimum <= value < _U64:
        kind = {0: "a non-negative int", 1: "a positive int"}.get(minimum, f"an int of at least {minimum}")
        raise ValueError(f"{name} must be {kind} below 2**64{' or None' if optional else ''}, got {value!r}")


def _check_pattern(pattern: Any) -> None:
    if not isinstance(pattern, str):
        raise TypeError(f"pattern must be a str (an encoding name or a regex), not {type(pattern).__name__}")
    if not pattern:
        # As a regex, "" matches only empty pieces: training would learn nothing.
        raise ValueError("pattern must not be empty: give a built-in encoding name or a regex")


def _check_name(name: Any) -> None:
    if not isinstance(name, str):
        raise TypeError(f"name must be a str, not {type(name).__name__}")
    if not name:
        raise ValueError("name must not be empty")


def _check_count_args(num_threads: Any, max_memory: Any, on_error: Any, field: Any) -> None:
    if on_error not in ("fail", "skip"):
        raise ValueError(f"on_error must be 'fail' or 'skip', not {on_error!r}")
    _check_int("num_threads", num_threads, minimum=0, optional=True)
    _check_int("max_memory", max_memory, minimum=1, optional=True)
    if not isinstance(field, str):
        raise TypeError(f"field must be a str, not {type(field).__name__}")


def _specials(special_tokens: Any) -> list[str]:
    if special_tokens is None:
        return []
    if isinstance(special_tokens, str):
        special_tokens = [special_tokens]
    out: list[str] = []
    for s in special_tokens:
        if not isinstance(s, str) or not s:
            raise ValueError(f"special tokens must be non-empty strings, got {s!r}")
        if s in out:
            raise ValueError(f"duplicate special token {s!r}")
        try:
            s.encode("utf-8")
        except UnicodeEncodeError:
            raise ValueError(f"special token {s!r} is not valid text (it holds a lone surrogate)") from None
        out.append(s)
    return out


# ------------------------------------------------------------------------------------------------
# WordCounts


def _restore(cls: type[WordCounts], blob: bytes) -> WordCounts:
    obj = cls.__new__(cls)
    obj._load_bytes(blob)
    return obj


class WordCounts(_native.WordCounts):
    """The distinct pieces ("words") of a corpus with 64-bit counts: training's phase 1.

    Counts depend on the split ``pattern`` (a built-in encoding name or a regex) and on the
    ``special_tokens``, which are cut out of the text before splitting. Counts can be updated,
    merged (``a.merge(b)``, ``a + b``) — e.g. counted on many machines — saved, loaded and
    pickled (as a compact binary blob), and trained on with :func:`train_from_counts`.
    ``data``, if given, is counted at once, as :meth:`update` counts it (the same rule tells
    paths from documents).

    >>> wc = WordCounts(["the cat", "the hat"], pattern="cl100k_base", progress=False)
    >>> len(wc), wc.total(), wc["the"]
    (3, 4, 2)
    >>> wc.most_common(1)
    [(b'the', 2)]
    """

    def __init__(
        self,
        data: Any = None,
        *,
        pattern: str = "cl100k_base",
        special_tokens: Optional[Sequence[str]] = None,
        num_threads: Optional[int] = None,
        max_memory: Optional[int] = None,
        progress: Optional[bool] = None,
        on_error: str = "fail",
        field: str = "text",
    ) -> None:
        if data is not None:
            self.update(
                data, num_threads=num_threads, max_memory=max_memory, progress=progress, on_error=on_error, field=field
            )

    def __new__(
        cls, data: Any = None, *, pattern: str = "cl100k_base", special_tokens: Optional[Sequence[str]] = None, **_: Any
    ) -> WordCounts:
        _check_pattern(pattern)
        return super().__new__(cls, pattern=pattern, special_tokens=_specials(special_tokens))  # type: ignore[return-value]

    def update(
        self,
        data: Any,
        *,
        num_threads: Optional[int] = None,
        max_memory: Optional[int] = None,
        progress: Optional[bool] = None,
        on_error: str = "fail",
        field: str = "text",
    ) -> WordCounts:
        """Counts more data: an iterable of ``str``/``bytes`` documents, a path, or a list of paths
        (files, directories, globs; ``.txt`` = one document per file, ``.jsonl`` with a ``text``
        field, ``.parquet`` with a ``text`` column via pyarrow, ``.gz``/``.zst`` variants).
        ``field`` names the JSON field / parquet column that holds the text.

        Paths or documents: a ``str`` or ``os.PathLike`` is a path, and so is a list (or tuple)
        of ``os.PathLike``. A list of ``str`` is a list of paths when every item names an
        existing file or directory or is a glob that matches something. When at least half of
        them do (but not all), or when an item looks like a corpus file name (no whitespace and
        a ``.txt``, ``.jsonl`` or ``.parquet`` suffix, optionally followed by ``.gz``/``.zst``),
        it is taken for a list of paths with a mistake in it: ``FileNotFoundError`` names the
        missing items.
        Otherwise the items are documents. To count such strings as documents, pass an iterator
        (``iter(docs)``).

        ``max_memory`` (bytes) bounds the counting table: beyond it, sorted runs are spilled to
        disk and merged exactly later (in the system temporary directory; a spill that cannot be
        written or read back raises ``OSError`` naming the file, and the counts stay as they
        were). ``on_error="skip"`` skips bad JSON lines and unreadable files (with a warning)
        instead of raising. Returns ``self``.

        An error part-way (a bad input under ``on_error="fail"``, an iterable that raises,
        Ctrl-C) leaves the documents counted before it counted, as ``collections.Counter.update``
        does: to retry, start from a copy (``wc.copy()``) made before the call.

        >>> wc = WordCounts(pattern="cl100k_base")
        >>> wc.update(["hello world", "hello there"])
        <WordCounts: 3 words, total 4>
        >>> wc["hello"]
        2
        """
        self._update(
            data, num_threads=num_threads, max_memory=max_memory, progress=progress, on_error=on_error, field=field
        )
        return self

    def _update(
        self,
        data: Any,
        *,
        num_threads: Optional[int],
        max_memory: Optional[int],
        progress: Optional[bool],
        on_error: str,
        field: str,
        errors_out: Optional[list[str]] = None,
    ) -> int:
        """:meth:`update`; returns how many bad inputs were skipped. Their messages go to
        ``errors_out`` when it is given (no warning: a Dask worker running several tasks on
        threads could not tell their warnings apart), else into a warning."""
        _check_count_args(num_threads, max_memory, on_error, field)
        self._configure(num_threads=num_threads, max_memory=max_memory)
        if isinstance(data, _native.WordCounts):
            self.merge(data)
            return 0
        bars = _Progress(progress)
        skipped = 0
        try:
            paths = _as_paths(data)
            if paths is not None:
                errors: list[str] = []
                files = _expand_paths(paths)
                if not files:
                    # A glob that matches nothing is a FileNotFoundError already; so is a folder
                    # with no file in it (training on nothing is a mistake, not 256 tokens).
                    shown = ", ".join(os.fsdecode(p) for p in list(paths)[:3])
                    raise FileNotFoundError(f"no input files under {shown}")
                parquet = [f for f in files if _is_parquet(f)]
                rest = [f for f in files if not _is_parquet(f)]
                if rest:
                    n, native_errors = self._count_files(rest, on_error=on_error, field=field, callback=bars.callback)
                    skipped += n
                    errors.extend(native_errors)
                if parquet:
                    before = len(errors)
                    self._count_iter(_parquet_documents(parquet, field, on_error, errors), callback=bars.callback)
                    skipped += len(errors) - before
                if errors_out is not None:
                    errors_out.extend(errors)
                elif skipped:
                    shown = "; ".join(errors[:3])
                    warnings.warn(f"skipped {skipped} bad input(s): {shown}", stacklevel=3)
            elif isinstance(data, (bytes, bytearray, memoryview)):
                raise TypeError("data must be an iterable of documents or a path; wrap a single document in a list")
            elif isinstance(data, Iterable):
                self._count_iter(data, callback=bars.callback)
            else:
                raise TypeError(
                    f"cannot count {type(data).__name__}: expected an iterable of "
                    "str/bytes documents, a path or a list of paths"
                )
        finally:
            bars.close()
        return skipped

    def merge(self, other: _native.WordCounts) -> WordCounts:
        """Adds the counts of ``other`` (same pattern and special tokens) in place; returns self.

        >>> a = WordCounts().update(["hello"])
        >>> b = WordCounts().update(["hello world"])
        >>> a.merge(b)["hello"]
        2
        """
        if not isinstance(other, _native.WordCounts):
            raise TypeError(f"can only merge WordCounts, not {type(other).__name__}")
        self._merge(other)
        return self

    def copy(self) -> WordCounts:
        new = type(self).__new__(type(self), pattern=self.pattern, special_tokens=self.special_tokens)
        new._assign(self)
        return new

    def __add__(self, other: Any) -> WordCounts:
        if not isinstance(other, _native.WordCounts):
            return NotImplemented
        return self.copy().merge(other)

    def __iadd__(self, other: Any) -> WordCounts:
        if not isinstance(other, _native.WordCounts):
            return NotImplemented
        return self.merge(other)

    def __iter__(self) -> Iterator[bytes]:
        return (w for w, _ in self.items())

    def __reduce__(self) -> tuple:
        return (_restore, (type(self), self.to_bytes()))

    def save(self, path: PathLike) -> None:
        """Writes the compact binary form to ``path`` (atomically).

        >>> wc = WordCounts().update(["hi"])
        >>> wc.save("counts.bin")
        >>> WordCounts.load("counts.bin") == wc
        True
        """
        data = self.to_bytes()

        def write(name: str) -> None:
            with open(name, "wb") as f:
                f.write(data)

        write_atomically(path, write)

    @classmethod
    def load(cls, path: PathLike) -> WordCounts:
        """Reads counts written by :meth:`save`. Their closing CRC-32 is checked: a corrupted
        file is a ``ValueError``.

        >>> WordCounts().update(["hi"]).save("counts.bin")
        >>> WordCounts.load("counts.bin")["hi"]
        1
        """
        return cls.from_bytes(Path(path).read_bytes())

    @classmethod
    def from_bytes(cls, data: bytes) -> WordCounts:
        """Counts from the blob of :meth:`to_bytes`."""
        return _restore(cls, bytes(data))

    @classmethod
    def from_dict(
        cls,
        counts: Union[Mapping[Any, int], Iterable[tuple[Any, int]]],
        *,
        pattern: str = "cl100k_base",
        special_tokens: Optional[Sequence[str]] = None,
    ) -> WordCounts:
        """Counts from ``{word: count}`` (or ``(word, count)`` pairs); words are str or bytes,
        counts any non-negative int below 2**64.

        >>> WordCounts.from_dict({"ab": 2**40, b"cd": 1}).total()
        1099511627777
        """
        if isinstance(counts, (str, bytes, bytearray, memoryview)):
            raise TypeError(f"counts must map words to counts (or be (word, count) pairs), not {type(counts).__name__}")
        wc = cls(pattern=pattern, special_tokens=special_tokens)
        items = counts.items() if isinstance(counts, Mapping) else counts
        for item in items:
            try:
                w, c = item
            except (TypeError, ValueError):
                raise TypeError(f"counts must be (word, count) pairs, got {item!r:.80}") from None
            c = _index(c)
            if not isinstance(c, int) or not 0 <= c < _U64:
                raise ValueError(f"counts must be ints from 0 to 2**64 - 1, got {c!r} for {w!r}")
            wc._add(w, c)
        return wc

    def __repr__(self) -> str:
        return f"<WordCounts: {len(self)} words, total {self.total()}>"


# ------------------------------------------------------------------------------------------------
# Training


def _encoding_class() -> Any:
    import bytepair

    cls = getattr(bytepair, "Encoding", None)
    if cls is None:  # until the tokenizer is merged in: tiktoken's class takes the same arguments
        try:
            import tiktoken

            cls = tiktoken.Encoding
        except ImportError as e:  # pragma: no cover
            raise ImportError("bytepair.Encoding is not available") from e
    return cls


def _make_encoding(name: str, pattern: str, ranks: dict[bytes, int], specials: dict[str, int]) -> Any:
    return _encoding_class()(name, pat_str=pattern, mergeable_ranks=ranks, special_tokens=specials)


def train(
    data: Any,
    *,
    vocab_size: int,
    pattern: str = "cl100k_base",
    special_tokens: Optional[Sequence[str]] = None,
    min_frequency: int = 1,
    max_token_length: Optional[int] = None,
    num_threads: Optional[int] = None,
    progress: Optional[bool] = None,
    name: str = "trained",
    max_memory: Optional[int] = None,
    on_error: str = "fail",
    field: str = "text",
) -> Encoding:
    """Trains a byte-level BPE tokenizer and returns it as an ``Encoding``.

    ``data`` is an iterable of ``str``/``bytes`` documents, or a path / list of paths (files,
    directories, globs; ``.txt``, ``.jsonl`` with a ``text`` field, ``.parquet`` with a ``text``
    column when pyarrow is installed, rows where it is null skipped; ``.gz``/``.zst`` variants;
    ``field`` names another JSON field / parquet column). A list holding a ``pathlib.Path`` is a
    list of paths. A list of ``str`` is a list of paths when every item names an
    existing file or directory or is a glob that matches something; when at least half do (but
    not all), or when an item looks like a corpus file name (no whitespace and a ``.txt``,
    ``.jsonl`` or ``.parquet`` suffix, optionally followed by ``.gz``/``.zst``),
    ``FileNotFoundError`` names the missing items; otherwise the items are documents (pass ``iter(docs)`` to train on
    strings that look like file names). ``on_error="skip"`` skips bad JSON lines and unreadable
    files with a warning instead of raising an error that names them (``ValueError`` when every
    input was skipped and nothing is left to train on). ``pattern`` is a built-in
    encoding name whose split pattern to use, or a regex. ``special_tokens`` never take part in
    merges (they are cut out of the text) and get the ids after the last merge, in order.
    ``min_frequency`` stops training when the best pair occurs fewer times; ``max_token_length``
    (bytes) bounds token length. Training also stops when no pair is left to merge, so the
    result can have fewer than ``vocab_size`` tokens (``n_vocab`` says how many). ``num_threads`` defaults to one per core, and more than that is
    capped to it; ``progress`` shows bars (default: when stderr is a terminal); ``max_memory``
    (bytes) spills counts to disk.

    >>> enc = train(["low lower lowest"] * 3, vocab_size=258, progress=False)
    >>> sorted(enc._mergeable_ranks.items(), key=lambda kv: kv[1])[256:]
    [(b'lo', 256), (b'low', 257)]
    """
    if isinstance(data, _native.WordCounts):
        raise TypeError("use train_from_counts() to train on WordCounts")
    counts = _check_train_call(
        vocab_size=vocab_size,
        pattern=pattern,
        special_tokens=special_tokens,
        min_frequency=min_frequency,
        max_token_length=max_token_length,
        num_threads=num_threads,
        name=name,
        max_memory=max_memory,
        on_error=on_error,
        field=field,
    )
    specials = list(counts.special_tokens)
    skipped = counts._update(
        data, num_threads=num_threads, max_memory=max_memory, progress=progress, on_error=on_error, field=field
    )
    if skipped and not len(counts):
        # Every input was bad: a vocabulary of the 256 bytes would hide that.
        raise ValueError(f"nothing to train on: every input was skipped ({skipped} bad input(s))")
    return _train_from_counts(
        counts,
        vocab_size=vocab_size,
        special_tokens=specials,
        min_frequency=min_frequency,
        max_token_length=max_token_length,
        num_threads=num_threads,
        progress=progress,
        name=name,
        consume=True,
    )


def _check_train_call(
    *,
    vocab_size: Any,
    pattern: Any,
    special_tokens: Any,
    min_frequency: Any,
    max_token_length: Any,
    num_threads: Any,
    name: Any,
    max_memory: Any,
    on_error: Any,
    field: Any,
) -> WordCounts:
    """Checks the arguments of :func:`train` (all but ``data``) before any work, and returns the
    empty counts to fill. Bad arguments raise ``ValueError`` or ``TypeError`` naming the
    parameter; the command line checks its options with this."""
    specials = _specials(special_tokens)
    _check_train_args(vocab_size, specials, min_frequency, max_token_length, num_threads)
    _check_name(name)
    _check_count_args(num_threads, max_memory, on_error, field)
    return WordCounts(pattern=pattern, special_tokens=specials)


def _check_train_args(
    vocab_size: Any, specials: list[str], min_frequency: Any, max_token_length: Any, num_threads: Any
) -> int:
    vocab_size = _index(vocab_size)
    if not isinstance(vocab_size, int) or isinstance(vocab_size, bool):
        raise TypeError(f"vocab_size must be an int, got {type(vocab_size).__name__}")
    if vocab_size < 256 + len(specials):
        raise ValueError(
            f"vocab_size must be at least 256 + the number of special tokens ({256 + len(specials)}), got {vocab_size}"
        )
    if vocab_size >= _U64:
        raise ValueError(f"vocab_size must be below 2**64, got {vocab_size}")
    _check_int("min_frequency", min_frequency, minimum=0)
    _check_int("max_token_length", max_token_length, minimum=1, optional=True)
    _check_int("num_threads", num_threads, minimum=0, optional=True)
    for sp in specials:
        if len(sp.encode("utf-8", "surrogatepass")) == 1:
            raise ValueError(
                f"special token {sp!r} is a single byte, which is always an ordinary token: "
                "a special token needs two bytes or more"
            )
    return int(_native._num_merges(vocab_size, len(specials)))


def train_from_counts(
    counts: Any,
    *,
    vocab_size: int,
    special_tokens: Optional[Sequence[str]] = None,
    min_frequency: int = 1,
    max_token_length: Optional[int] = None,
    num_threads: Optional[int] = None,
    progress: Optional[bool] = None,
    name: str = "trained",
    pattern: Optional[str] = None,
) -> Encoding:
    """Trains on word counts: a :class:`WordCounts`, or ``{word: count}`` / ``(word, count)``
    pairs (words str or bytes, counts up to 2**64 - 1; then ``pattern`` names the split
    pattern of the result, default ``"cl100k_base"``). ``special_tokens`` default to those the
    counts were made with. Returns an ``Encoding``.

    >>> enc = train_from_counts({"ab": 2**40, "bc": 2**40 - 1}, vocab_size=257)
    >>> enc.decode_single_token_bytes(256)
    b'ab'
    """
    _check_name(name)
    consume = False
    if not isinstance(counts, _native.WordCounts):
        pattern = "cl100k_base" if pattern is None else pattern
        counts = WordCounts.from_dict(counts, pattern=pattern, special_tokens=special_tokens)
        consume = True
    elif pattern is not None and _native._resolve_pattern(pattern) != counts.pattern:
        raise ValueError("pattern differs from the pattern the counts were made with")
    return _train_from_counts(
        counts,
        vocab_size=vocab_size,
        special_tokens=special_tokens,
        min_frequency=min_frequency,
        max_token_length=max_token_length,
        num_threads=num_threads,
        progress=progress,
        name=name,
        consume=consume,
    )


def _train_from_counts(
    counts: Any,
    *,
    vocab_size: int,
    special_tokens: Optional[Sequence[str]],
    min_frequency: int,
    max_token_length: Optional[int],
    num_threads: Optional[int],
    progress: Optional[bool],
    name: str,
    consume: bool,
) -> Encoding:
    specials = _specials(special_tokens) if special_tokens is not None else list(counts.special_tokens)
    num_merges = _check_train_args(vocab_size, specials, min_frequency, max_token_length, num_threads)
    bars = _Progress(progress)
    try:
        pairs, _ = _native._train_merges(
            counts,
            num_merges,
            min_frequency=max(min_frequency, 1),
            max_token_length=max_token_length,
            num_threads=num_threads,
            callback=bars.callback,
            consume=consume,
        )
    finally:
        bars.close()
    ranks = _ranks_from_merges(pairs)
    clash = [sp for sp in specials if sp.encode("utf-8", "surrogatepass") in ranks]
    if clash:
        # Text is counted with its special tokens cut out, so only counts made without them
        # (or given by hand) can learn one: the two ids would then disagree between libraries.
        raise ValueError(
            f"special token(s) {', '.join(map(repr, clash))} were also learned as ordinary tokens: "
            "count the text with these special_tokens, so that they are cut out of it"
        )
    n = len(ranks)
    special_ids = {s: n + i for i, s in enumerate(specials)}
    return _make_encoding(name, counts.pattern, ranks, special_ids)


def _ranks_from_merges(pairs: Sequence[tuple[int, int]]) -> dict[bytes, int]:
    tokens = [bytes([i]) for i in range(256)]
    for a, b in pairs:
        tokens.append(tokens[a] + tokens[b])
    return {t: i for i, t in enumerate(tokens)}


# ------------------------------------------------------------------------------------------------
# Saving and loading


def _safe_name(name: str) -> str:
    s = "".join(c if c.isalnum() or c in "-_." else "_" for c in name).strip(".")
    return s or "encoding"


def _save(enc: Any, path: PathLike) -> None:
    """Writes ``enc`` to the directory ``path``: ``<name>.tiktoken`` (tiktoken's rank format)
    and ``bytepair.json`` (name, pattern, special tokens, vocabulary size)."""
    d = Path(path)
    d.mkdir(parents=True, exist_ok=True)
    ranks_file = _safe_name(enc.name) + ".tiktoken"
    lines = [
        base64.b64encode(t) + b" " + str(r).encode()
        for t, r in sorted(enc._mergeable_ranks.items(), key=lambda kv: kv[1])
    ]
    meta = {
        "format": "bytepair-encoding",
        "version": 1,
        "name": enc.name,
        "pattern": enc._pat_str,
        "special_tokens": dict(enc._special_tokens),
        "ranks_file": ranks_file,
        "n_vocab": enc.n_vocab,
    }
    # Both files are written in full next to their final names before either is renamed into
    # place: a failed save (a full disk, Ctrl-C) leaves an earlier save in the directory as it
    # was, never the ranks of one encoding with the special tokens of another.
    ranks_data = b"\n".join(lines) + b"\n"
    meta_data = (json.dumps(meta, ensure_ascii=False, indent=2) + "\n").encode("utf-8")

    def write_ranks(tmp: str) -> None:
        Path(tmp).write_bytes(ranks_data)

    def write_meta_then_ranks(tmp: str) -> None:
        Path(tmp).write_bytes(meta_data)
        write_atomically(d / ranks_file, write_ranks)

    write_atomically(d / _META_FILE, write_meta_then_ranks)


def load(path: PathLike) -> Encoding:
    """Loads an ``Encoding`` saved with ``Encoding.save(path)`` (a directory, or its
    ``bytepair.json``).

    >>> import bytepair
    >>> enc = bytepair.train(["hello world"] * 20, vocab_size=260, progress=False)
    >>> enc.save("my-tokenizer")
    >>> load("my-tokenizer").encode("hello world") == enc.encode("hello world")
    True
    """
    p = Path(path)
    meta_path = p / _META_FILE if p.is_dir() else p
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise FileNotFoundError(f"{meta_path}: not a saved bytepair encoding (no {_META_FILE})") from None
    except json.JSONDecodeError as e:
        raise ValueError(f"{meta_path}: invalid JSON: {e}") from None
    except UnicodeDecodeError as e:
        raise ValueError(f"{meta_path}: not UTF-8 text: {e}") from None
    if not isinstance(meta, dict) or meta.get("format") != "bytepair-encoding":
        raise ValueError(f"{meta_path}: not a bytepair encoding description")
    version = meta.get("version", 1)
    if version != 1 or isinstance(version, bool):
        # A later format could mean something these fields do not say: refused, not guessed at.
        raise ValueError(f"{meta_path}: format version {version!r}; this bytepair reads version 1")
    for key in ("ranks_file", "name", "pattern"):
        if not isinstance(meta.get(key), str):
            raise ValueError(f"{meta_path}: {key!r} is missing or not a string")
    if not meta["ranks_file"]:
        raise ValueError(f"{meta_path}: 'ranks_file' is empty")
    n_vocab = meta.get("n_vocab")
    if n_vocab is not None and (not isinstance(n_vocab, int) or isinstance(n_vocab, bool)):
        raise ValueError(f"{meta_path}: 'n_vocab' must be an int, not {n_vocab!r}")
    special = meta.get("special_tokens", {})
    if not isinstance(special, dict) or not all(isinstance(v, int) for v in special.values()):
        raise ValueError(f"{meta_path}: 'special_tokens' must map strings to ints")
    if Path(meta["ranks_file"]).name != meta["ranks_file"]:
        raise ValueError(f"{meta_path}: 'ranks_file' must name a file next to it, not {meta['ranks_file']!r}")
    ranks_path = meta_path.parent / meta["ranks_file"]
    ranks: dict[bytes, int] = {}
    for i, line in enumerate(ranks_path.read_bytes().splitlines(), 1):
        if not line.strip():
            continue
        try:
            tok, rank = line.split()
            r = int(rank)
            if not 0 <= r < 2**32:
                raise ValueError(f"rank {r} is not in 0..2**32-1")
            ranks[base64.b64decode(tok, validate=True)] = r
        except ValueError as e:
            raise ValueError(f"{ranks_path}, line {i}: invalid rank line: {e}") from None
    if not ranks:
        raise ValueError(f"{ranks_path}: no ranks")
    specials = {str(k): int(v) for k, v in special.items()}
    taken = set(ranks.values())
    for name, v in specials.items():
        if not 0 <= v < 2**32:
            raise ValueError(f"{meta_path}: special token {name!r} has id {v}, not in 0..2**32-1")
        if v in taken:
            raise ValueError(f"{meta_path}: special token {name!r} has id {v}, which {ranks_path.name} gives a token")
    try:
        enc = _make_encoding(meta["name"], meta["pattern"], ranks, specials)
    except ValueError as e:  # two tokens of one rank, a bad pattern: say which save it is
        raise ValueError(f"{meta_path.parent}: {e}") from None
    if n_vocab is not None and n_vocab != enc.n_vocab:
        raise ValueError(
            f"{meta_path}: n_vocab {n_vocab} does not match {ranks_path.name} and the special tokens "
            f"({enc.n_vocab}); the two files are from different saves"
        )
    return enc


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's byte-level alphabet: printable bytes map to themselves, the rest to U+0100 on."""
    keep = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAD)) + list(range(0xAE, 0x100))
    out = {b: chr(b) for b in keep}
    n = 0
    for b in range(256):
        if b not in out:
            out[b] = chr(256 + n)
            n += 1
    return out


def _derive_merges(ranks: Mapping[bytes, int]) -> list[tuple[bytes, bytes]]:
    """The merge list equivalent to tiktoken's rank-based encoding: for each multi-byte token,
    the two parts that byte-pair encoding with the lower ranks only ends with."""
    merges: list[tuple[bytes, bytes]] = []
    for token, rank in sorted(ranks.items(), key=lambda kv: kv[1]):
        if len(token) < 2:
            continue
        parts = [token[i : i + 1] for i in range(len(token))]
        while len(parts) > 2:
            best, best_i = None, -1
            for i in range(len(parts) - 1):
                r = ranks.get(parts[i] + parts[i + 1])
                if r is not None and r < rank and (best is None or r < best):
                    best, best_i = r, i
            if best is None:
                break
            parts[best_i : best_i + 2] = [parts[best_i] + parts[best_i + 1]]
        if len(parts) == 2:
            merges.append((parts[0], parts[1]))
    return merges


def _hf_regex(pattern: str) -> str:
    r"""The pattern for Oniguruma (Hugging Face), which reads some syntax otherwise:

    - ``{n,m}+`` is not possessive there but means ``({n,m})+``. A bounded repeat at the end of
      an alternative (as in cl100k's ``\p{N}{1,3}+``) matches the same greedy as possessive, so
      the ``+`` is dropped.
    - ``\pL`` (a one-letter class name without braces) is spelled ``\p{L}``.
    - Outside ``(?m)`` patterns, ``^`` and ``$`` mean the start and end of the text (Rust), not of
      a line (Oniguruma): they become ``\A`` and ``\z``.
    - Inline flags: Rust's ``s`` (``.`` matches a newline) is Oniguruma's ``m``, and Rust's ``m``
      (``^`` and ``$`` at lines) is Oniguruma's default, so ``(?s)`` becomes ``(?m)`` and ``(?m)``
      is dropped (``(?sm:`` becomes ``(?m:``).

    Other differences are caught by :func:`_check_hf_export`."""
    import re

    pattern = re.sub(r"(\{\d+(?:,\d*)?\})\+", r"\1", pattern)
    multiline = re.search(r"\(\?[a-zA-Z]*m", pattern) is not None
    out: list[str] = []
    i, depth = 0, 0  # depth: nesting of character classes
    while i < len(pattern):
        c = pattern[i]
        if c == "\\" and i + 1 < len(pattern):
            nxt = pattern[i + 1]
            if nxt in "pP" and i + 2 < len(pattern) and pattern[i + 2] not in "{":
                out.append(f"\\{nxt}{{{pattern[i + 2]}}}")
                i += 3
                continue
            out.append(pattern[i : i + 2])
            i += 2
            continue
        if c == "(" and depth == 0 and pattern.startswith("(?", i):
            flags = re.match(r"\(\?([a-zA-Z]*(?:-[a-zA-Z]*)?)([:)])", pattern[i:])
            if flags is not None:
                on, _, off = flags.group(1).partition("-")
                on, off = (f.replace("m", "").replace("s", "m") for f in (on, off))
                group = f"(?{on}-{off}" if off else f"(?{on}"
                if flags.group(2) == ":" or group != "(?":  # an empty "(?)" is left out
                    out.append(group + flags.group(2))
                i += flags.end()
                continue
        if c == "[":
            depth += 1
        elif c == "]" and depth:
            depth -= 1
        elif depth == 0 and not multiline and c in "^$":
            out.append("\\A" if c == "^" else "\\z")
            i += 1
            continue
        out.append(c)
        i += 1
    return "".join(out)


# Text that runs most constructs of a split pattern: cases, contractions, digits, punctuation,
# runs of spaces, tabs and newlines (CRLF, blank lines, trailing spaces), Latin, Cyrillic, Greek,
# CJK, Arabic, combining marks and emoji.
_HF_PROBE = (
    "Hello World! It's THE day; we'LL see: 12345 apples & 7 oranges... \"quoted\" (x+y)*2\n"
    "  indented\tline\r\nnext line  \n\n\nafter blanks \u00a0nbsp déjà Ünïcödé naïve café\n"
    "Привет, мир! Ελληνικά 中文字符和标点。 日本語のテキスト 한국어 العربية e\u0301 \U0001f600\U0001f44d "
    "CamelCaseWord HTTPServer x1y2z3 __init__ a.b,c;d:e-f_g/h\\i 1,000,000.50 $9.99 100% #tag @user\n"
    "\t\t  \n   trailing   "
)


def _check_hf_export(enc: Any, path: Path) -> None:
    """Loads the exported file with ``tokenizers`` (when installed) and checks that it gives
    ``enc``'s ids on a probe text; a pattern that Oniguruma reads otherwise (or a pattern that
    leaves text unmatched, which tiktoken drops and ``tokenizers`` keeps) is a ``ValueError``
    and the file is removed."""
    try:
        from tokenizers import Tokenizer
    except ImportError:
        return
    probe = _HF_PROBE + "".join(sorted(enc._special_tokens)[:8])
    ids = enc.encode(probe, allowed_special="all")
    try:
        got = Tokenizer.from_file(str(path)).encode(probe).ids
        problem = None if got == ids else "gives other ids on a test text"
    except Exception as e:  # the file does not load: a pattern Oniguruma cannot parse
        problem = f"cannot be read by tokenizers ({str(e)[:200]})"
    if problem is not None and enc.decode(ids) != probe:
        problem += " (the pattern leaves some text unmatched, which tiktoken drops and tokenizers keeps)"
    if problem is not None:
        path.unlink(missing_ok=True)
        raise ValueError(
            f"the split pattern {enc._pat_str!r} has no equivalent for Hugging Face tokenizers: the "
            f"exported tokenizer.json {problem}; nothing was written"
        )


def _to_huggingface(enc: Any, path: PathLike) -> Path:
    """Writes a Hugging Face ``tokenizer.json`` for ``enc`` (byte-level BPE with the split
    regex). ``path`` is a directory (the file goes inside) or a ``.json`` file name. Returns the
    file written."""
    p = Path(path)
    if p.suffix.lower() != ".json":
        p.mkdir(parents=True, exist_ok=True)
        p = p / "tokenizer.json"
    else:
        p.parent.mkdir(parents=True, exist_ok=True)
    b2u = _bytes_to_unicode()

    def sym(b: bytes) -> str:
        return "".join(b2u[x] for x in b)

    ranks = enc._mergeable_ranks
    vocab = {sym(t): r for t, r in sorted(ranks.items(), key=lambda kv: kv[1])}
    # `tokenizers` keeps an added token's "id" only when the model's vocabulary maps its text to
    # that id; otherwise it gives the token the next free id (cl100k's <|endoftext|> would become
    # 100256's neighbour, and every special after a gap in the ids would move). So the special
    # tokens go into the vocabulary too. No merge makes them, and `tokenizers` matches added
    # tokens before the model sees the text.
    # Where several special tokens share an id (o200k_harmony's <|endofprompt|> and
    # <|reserved_200018|>), `tokenizers` keeps one text per id: the first, which `decode` gives.
    specials: dict[str, int] = {}
    for s, i in enc._special_tokens.items():
        if i not in specials.values():
            specials[s] = i
    dropped = sorted(set(enc._special_tokens) - set(specials))
    if dropped:
        warnings.warn(
            f"tokenizer.json holds one special token per id; left out {dropped} (same ids as "
            f"{sorted(s for s, i in specials.items() if i in {enc._special_tokens[d] for d in dropped})})",
            stacklevel=3,
        )
    u2b = {c: b for b, c in b2u.items()}
    for s, i in specials.items():
        clash = vocab.get(s)
        if clash is not None:
            raise ValueError(
                f"special token {s!r} (id {i}) has the text that Hugging Face's byte-level "
                f"vocabulary uses for token {clash}; tokenizer.json cannot give both their ids"
            )
        # The model looks a whole piece up in its vocabulary first, in byte-level letters: a
        # special token spelled in those letters would be what other text maps to (ĀĀ is the
        # bytes 00 00), and tokenizers would give its id for that text.
        if all(c in u2b for c in s):
            spelled = bytes(u2b[c] for c in s)
            try:
                other = spelled.decode("utf-8")  # bytes that are not UTF-8 are no text's
            except UnicodeDecodeError:
                other = s
            if other != s:
                raise ValueError(
                    f"special token {s!r} (id {i}) is spelled in Hugging Face's byte-level "
                    f"letters: tokenizers would also give its id for the text {other!r}"
                )
        vocab[s] = i
    merges = [f"{sym(a)} {sym(b)}" for a, b in _derive_merges(ranks)]
    added = [
        {
            "id": i,
            "content": s,
            "single_word": False,
            "lstrip": False,
            "rstrip": False,
            "normalized": False,
            "special": True,
        }
        for s, i in sorted(specials.items(), key=lambda kv: kv[1])
    ]
    doc = {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": added,
        "normalizer": None,
        "pre_tokenizer": {
            "type": "Sequence",
            "pretokenizers": [
                {
                    "type": "Split",
                    "pattern": {"Regex": _hf_regex(enc._pat_str)},
                    "behavior": "Isolated",
                    "invert": False,
                },
                {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": False},
            ],
        },
        "post_processor": None,
        "decoder": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True},
        "model": {
            "type": "BPE",
            "dropout": None,
            "unk_token": None,
            "continuing_subword_prefix": None,
            "end_of_word_suffix": None,
            "fuse_unk": False,
            "byte_fallback": False,
            "ignore_merges": True,
            "vocab": vocab,
            "merges": merges,
        },
    }
    p.write_text(json.dumps(doc, ensure_ascii=False), encoding="utf-8")
    builtin = {_native.builtin_pattern(n) for n in ("r50k_base", "cl100k_base", "o200k_base")}
    if enc._pat_str not in builtin:  # the built-in ones are tested against tokenizers
        _check_hf_export(enc, p)
    return p


class _CallableModule(type(sys)):  # type: ignore[misc]
    """Lets ``bytepair.train`` be both this module and the function ``bytepair.train(data, ...)``
    of the contract."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return train(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
