"""The benchmark engine behind ``bytepair bench``.

Every number is measured side by side in the same process (or, for load time, in fresh processes
started the same way) and reported as a ratio to a baseline peer, because the machines this runs
on are shared and noisy. Text is *fresh*: each implementation encodes each document exactly once,
so a cache that remembers whole documents or re-encodes the same text cannot inflate a number.

Workloads live in a registry, so other parts of the project (training, embeddings) slot in with
:func:`register_workload`; the table, ``results.json`` and the chart are generic over
:class:`Result` rows.

>>> from bytepair import bench
>>> sorted(bench.workloads())[:2]
['batch', 'count']
"""

from __future__ import annotations

import contextlib
import gc
import gzip
import hashlib
import html.parser
import importlib
import io
import json
import os
import platform
import statistics
import subprocess
import sys
import sysconfig
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "BenchContext",
    "Corpus",
    "CorpusError",
    "Result",
    "Workload",
    "default_corpus",
    "load_corpus",
    "prepare_tiktoken_cache",
    "register_workload",
    "render_table",
    "run",
    "split_documents",
    "workloads",
]

DOC_BYTES = 4096
# Documents per turn in the throughput workloads (`bytepair bench --turn-docs`). Short turns
# spread machine noise evenly over the implementations, but every turn starts with the caches
# holding the previous implementation's tables, which charges a fast encoder a fixed cost per
# turn; long turns (256 documents, about 1 MB) measure a tokenizer running over a stream of
# documents by itself. Both encode every document once, fresh, in the same run.
TURN_DOCS = 16
"""Target size of one benchmark document, in UTF-8 bytes."""

# Official SHA-256 of each rank file (the values in tiktoken's own registry).
RANK_SHA256 = {
    "r50k_base": "306cd27f03c1a714eca7108e03d66b7dc042abe8c258b44c199a7ed9838dd930",
    "p50k_base": "94b5ca7dff4d00767bc256fdd1b27e5b17361d7b8a5f968547f9f23eb70d2069",
    "cl100k_base": "223921b76ee99bde995b7ff738513eef100fb51d18c93597a113bcffe865b2a7",
    "o200k_base": "446a9538cb6c348e3516120d7c08b09f57c36495e2acfffe59a5bf8b0cfb1a2d",
}
# Which rank file tiktoken reads for each encoding name.
_RANK_FILE_FOR = {
    "r50k_base": "r50k_base",
    "p50k_base": "p50k_base",
    "p50k_edit": "p50k_base",
    "cl100k_base": "cl100k_base",
    "o200k_base": "o200k_base",
    "o200k_harmony": "o200k_base",
}
_RANK_URL = "https://openaipublic.blob.core.windows.net/encodings/{}.tiktoken"

# Peers with tiktoken's API (``get_encoding(name)`` -> object with ``encode_ordinary`` ...): the
# fast forks bpe-openai and riptoken are measured whenever they are installed (the bench extra).
BASELINE = "tiktoken"
PEER_MODULES = {"tiktoken": "tiktoken", "bpe-openai": "bpe_openai", "riptoken": "riptoken"}
# The baselines of the training and embedding workloads (never left out by ``peers``).
_EXTRA_BASELINES = ("rustbpe", "numpy")


class CorpusError(ValueError):
    """A corpus file that cannot be read, with file and line in the message."""


# ---------------------------------------------------------------------------------- tiktoken cache


def prepare_tiktoken_cache(directory: str | os.PathLike[str], encodings: Iterable[str]) -> Path:
    """Makes tiktoken work offline by writing bytepair's bundled rank files where it looks.

    tiktoken downloads rank files on first use and caches them under ``TIKTOKEN_CACHE_DIR`` as
    ``sha1(url)``. If the user already set ``TIKTOKEN_CACHE_DIR`` it is left alone; otherwise the
    files are written to ``directory`` (each checked against the official SHA-256) and the
    variable is set for this process and its children. Call it before tiktoken loads anything.

    >>> import tempfile
    >>> d = prepare_tiktoken_cache(tempfile.mkdtemp(), ["cl100k_base"])  # doctest: +SKIP
    """
    if os.environ.get("TIKTOKEN_CACHE_DIR"):
        return Path(os.environ["TIKTOKEN_CACHE_DIR"])
    import bytepair

    target = Path(directory)
    target.mkdir(parents=True, exist_ok=True)
    for name in sorted({_RANK_FILE_FOR[e] for e in encodings if e in _RANK_FILE_FOR}):
        path = target / hashlib.sha1(_RANK_URL.format(name).encode()).hexdigest()
        if path.exists() and hashlib.sha256(path.read_bytes()).hexdigest() == RANK_SHA256[name]:
            continue
        data = bytepair.get_encoding(name)._core_bpe.to_tiktoken_bytes()
        digest = hashlib.sha256(data).hexdigest()
        if digest != RANK_SHA256[name]:
            raise RuntimeError(
                f"bytepair's bundled {name} ranks hash to {digest}, not the official "
                f"{RANK_SHA256[name]}: the package is broken"
            )
        tmp = path.with_suffix(".tmp")
        tmp.write_bytes(data)
        tmp.replace(path)
    os.environ["TIKTOKEN_CACHE_DIR"] = str(target)
    return target


# ------------------------------------------------------------------------------------------ corpus


@dataclass
class Corpus:
    """Benchmark documents (~4 KB each) by category, with where they came from."""

    docs: dict[str, list[str]] = field(default_factory=dict)
    sources: dict[str, list[str]] = field(default_factory=dict)

    def summary(self) -> dict[str, dict[str, Any]]:
        return {
            cat: {
                "docs": len(docs),
                "bytes": sum(len(d.encode("utf-8", "surrogatepass")) for d in docs),
                "sources": self.sources.get(cat, [])[:50],
                "n_sources": len(self.sources.get(cat, [])),
            }
            for cat, docs in self.docs.items()
        }


def split_documents(texts: Iterable[str], *, doc_bytes: int = DOC_BYTES, cap_bytes: int | None = None) -> list[str]:
    """Cuts a stream of texts into documents of about ``doc_bytes`` UTF-8 bytes, at line ends.

    Texts are joined as one stream (a document may span two files); a line longer than four
    documents is cut by characters. Stops once ``cap_bytes`` have been emitted.

    >>> docs = split_documents(["a\\n" * 3000], doc_bytes=4096)
    >>> [len(d) for d in docs]
    [4096, 1904]
    """
    docs: list[str] = []
    parts: list[str] = []
    size = total = 0
    for text in texts:
        for line in text.splitlines(keepends=True):
            pieces = [line]
            if len(line) > 4 * doc_bytes:
                pieces = [line[i : i + doc_bytes] for i in range(0, len(line), doc_bytes)]
            for piece in pieces:
                parts.append(piece)
                size += len(piece.encode("utf-8", "surrogatepass"))
                if size >= doc_bytes:
                    docs.append("".join(parts))
                    total += size
                    parts, size = [], 0
                    if cap_bytes is not None and total >= cap_bytes:
                        return docs
    if parts and "".join(parts).strip():
        docs.append("".join(parts))
    return docs


def _letter_ratio(text: str) -> float:
    visible = [c for c in text if not c.isspace()]
    return sum(c.isalpha() for c in visible) / max(1, len(visible))


class _HTMLText(html.parser.HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.out: list[str] = []
        self._skip = 0

    def handle_starttag(self, tag: str, attrs: Any) -> None:
        if tag in ("script", "style"):
            self._skip += 1

    def handle_endtag(self, tag: str) -> None:
        if tag in ("script", "style"):
            self._skip = max(0, self._skip - 1)
        elif tag in ("p", "div", "h1", "h2", "h3", "li", "pre", "dd", "dt"):
            self.out.append("\n")

    def handle_data(self, data: str) -> None:
        if not self._skip:
            self.out.append(data)


def _read_text(path: Path) -> str | None:
    try:
        return path.read_text("utf-8")
    except (OSError, UnicodeDecodeError):
        return None


def _stdlib_root() -> Path:
    return Path(sysconfig.get_paths()["stdlib"])


def _site_dirs() -> list[Path]:
    dirs = []
    for key in ("purelib", "platlib"):
        p = Path(sysconfig.get_paths()[key])
        if p.is_dir() and p not in dirs:
            dirs.append(p)
    return dirs


def _stdlib_files(root: Path, pattern: str) -> list[Path]:
    return sorted(p for p in root.rglob(pattern) if "site-packages" not in p.parts and p.is_file())


def _code_texts(root: Path, sources: list[str]) -> Iterator[str]:
    for path in _stdlib_files(root, "*.py"):
        text = _read_text(path)
        if text:
            sources.append(str(path.relative_to(root)))
            yield text


def _prose_texts(root: Path, sources: list[str]) -> Iterator[str]:
    # 1. The library reference's topic pages, shipped for pydoc.
    try:
        from pydoc_data.topics import topics

        sources.append("pydoc_data/topics.py")
        for key in sorted(topics):
            yield topics[key]
    except ImportError:
        pass
    # 2. Text files in the standard library that read as prose (not number tables).
    candidates = [
        p
        for p in _stdlib_files(root, "*")
        if (p.suffix in (".txt", ".rst") or p.name.startswith("README") or p.name == "NEWS")
        and "cjkencodings" not in p.parts
    ]
    for path in candidates:
        text = _read_text(path)
        if text and len(text) > 200 and _letter_ratio(text) >= 0.6:
            sources.append(str(path.relative_to(root)))
            yield text
    # 3. HTML help pages (IDLE's help), as text.
    for path in _stdlib_files(root, "*.html"):
        text = _read_text(path)
        if text:
            parser = _HTMLText()
            parser.feed(text)
            body = "".join(parser.out)
            if _letter_ratio(body) >= 0.6:
                sources.append(str(path.relative_to(root)))
                yield body
    # 4. Package descriptions and licenses of installed distributions.
    for site in _site_dirs():
        for info in sorted(site.glob("*.dist-info")):
            for name in ("METADATA", "LICENSE", "LICENSE.txt", "LICENSE.md"):
                text = _read_text(info / name)
                if not text:
                    continue
                if name == "METADATA":
                    text = text.partition("\n\n")[2]  # drop the header block
                if len(text) > 200 and _letter_ratio(text) >= 0.6:
                    sources.append(str(info / name))
                    yield text


def _multilingual_texts(root: Path, sources: list[str]) -> Iterator[str]:
    # 1. The CJK codec test texts (Chinese, Japanese, Korean), once each.
    cjk = root / "test" / "cjkencodings"
    if cjk.is_dir():
        utf8 = sorted(cjk.glob("*-utf8.txt"))
        done = {p.name[: -len("-utf8.txt")] for p in utf8}
        for path in utf8:
            text = _read_text(path)
            if text:
                sources.append(str(path.relative_to(root)))
                yield text
        for path in sorted(cjk.glob("*.txt")):
            codec = path.stem
            if codec in done or codec.endswith("-utf8"):
                continue
            try:
                text = path.read_bytes().decode(codec)
            except (LookupError, UnicodeDecodeError, OSError):
                continue
            sources.append(str(path.relative_to(root)))
            yield text
    # 2. Modules written in legacy encodings, and every line of the test suite that is mostly
    #    non-ASCII letters (test_unicode, test_codecs, email tests ...), each line once.
    seen: set[str] = set()
    tests = root / "test"
    files = sorted(tests.rglob("*.py")) if tests.is_dir() else []
    files += sorted((tests / "encoded_modules").glob("*.py")) if tests.is_dir() else []
    for path in files:
        if "encoded_modules" in path.parts:
            try:
                import tokenize

                with tokenize.open(path) as f:
                    text = f.read()
            except (OSError, SyntaxError, UnicodeDecodeError):
                continue
        else:
            text = _read_text(path) or ""
        lines = []
        for line in text.splitlines():
            letters = sum(c.isalpha() for c in line)
            foreign = sum(1 for c in line if ord(c) > 127 and c.isalpha())
            if foreign >= 4 and foreign >= 0.3 * letters and line not in seen:
                seen.add(line)
                lines.append(line.strip() + "\n")
        if lines:
            sources.append(str(path.relative_to(root)))
            yield "".join(lines)
    # 3. Translations installed on the machine (gettext catalogs), when there are any.
    yield from _translation_texts(sources)


def _locale_dirs() -> list[Path]:
    dirs = [
        Path(sys.base_prefix) / "share" / "locale",
        Path("/usr/local/share/locale"),
        Path("/usr/share/locale"),
    ]
    out: list[Path] = []
    for d in dirs:
        with contextlib.suppress(OSError):
            if d.is_dir() and d.resolve() not in [o.resolve() for o in out]:
                out.append(d)
    return out


def _translation_texts(sources: list[str]) -> Iterator[str]:
    """Translated messages of the gettext catalogs installed on the machine (Linux has many).

    Ordered by catalog, then language, so a capped corpus still spans many languages.
    """
    import gettext

    files = []
    for d in _locale_dirs():
        for mo in d.glob("*/LC_MESSAGES/*.mo"):
            lang = mo.parent.parent.name
            if lang.split("_")[0] in ("en", "C"):
                continue
            files.append((mo.name, lang, mo))
    for _, _, mo in sorted(files):
        try:
            with open(mo, "rb") as f:
                catalog = gettext.GNUTranslations(f)._catalog  # type: ignore[attr-defined]
        except Exception:  # noqa: BLE001, S112 (a broken catalog is not ours to report)
            continue
        texts = [v for k, v in catalog.items() if k and isinstance(v, str) and v.strip()]
        if texts:
            sources.append(str(mo))
            yield "\n".join(texts) + "\n"


def default_corpus(*, cap_bytes: int = 4_000_000) -> Corpus:
    """The corpus found on every machine: this Python's standard library and installed docs.

    Categories: ``prose`` (library reference topics, text and help files, package
    descriptions), ``code`` (``*.py`` of the standard library) and ``multilingual`` (the test
    suite's CJK sample texts and its non-ASCII lines, then the machine's installed gettext
    translations, e.g. ``/usr/share/locale``). Deterministic order; each capped at
    ``cap_bytes``. A category that finds nothing is left out.
    """
    root = _stdlib_root()
    corpus = Corpus()
    for cat, gen in (
        ("prose", _prose_texts),
        ("code", _code_texts),
        ("multilingual", _multilingual_texts),
    ):
        sources: list[str] = []
        docs = split_documents(gen(root, sources), cap_bytes=cap_bytes)
        if docs:
            corpus.docs[cat] = docs
            corpus.sources[cat] = sources
    return corpus


def _open_text(path: Path) -> io.TextIOBase:
    name = path.name
    if name.endswith(".gz"):
        return gzip.open(path, "rt", encoding="utf-8")  # type: ignore[return-value]
    if name.endswith(".zst"):
        try:
            import zstandard
        except ImportError as e:
            raise CorpusError(f"{path}: reading .zst needs the 'zstandard' package") from e
        raw = zstandard.ZstdDecompressor().stream_reader(open(path, "rb"))  # noqa: SIM115
        return io.TextIOWrapper(raw, encoding="utf-8")
    return open(path, encoding="utf-8")


def _documents_in(path: Path) -> Iterator[str]:
    name = path.name.removesuffix(".gz").removesuffix(".zst")
    try:
        if name.endswith(".jsonl"):
            with _open_text(path) as f:
                for lineno, line in enumerate(f, 1):
                    if not line.strip():
                        continue
                    try:
                        record = json.loads(line)
                        text = record["text"]
                    except (json.JSONDecodeError, KeyError, TypeError) as e:
                        raise CorpusError(f"{path}:{lineno}: {type(e).__name__}: {e}") from e
                    if not isinstance(text, str):
                        raise CorpusError(f"{path}:{lineno}: 'text' is not a string")
                    yield text
        elif name.endswith(".parquet"):
            try:
                import pyarrow.parquet as pq
            except ImportError as e:
                raise CorpusError(f"{path}: reading .parquet needs 'pyarrow'") from e
            for batch in pq.ParquetFile(path).iter_batches(columns=["text"]):
                yield from (t for t in batch.column(0).to_pylist() if t)
        else:
            with _open_text(path) as f:
                yield f.read()
    except UnicodeDecodeError as e:
        raise CorpusError(f"{path}: not valid UTF-8 ({e})") from e
    except OSError as e:
        raise CorpusError(f"{path}: {e}") from e


_CORPUS_SUFFIXES = (".txt", ".jsonl", ".parquet", ".md", ".rst")


def _corpus_files(path: Path) -> list[Path]:
    if path.is_file():
        return [path]
    if path.is_dir():
        return sorted(
            p
            for p in path.rglob("*")
            if p.is_file() and p.name.removesuffix(".gz").removesuffix(".zst").endswith(_CORPUS_SUFFIXES)
        )
    raise CorpusError(f"{path}: no such file or directory")


def load_corpus(paths: Sequence[str | os.PathLike[str]], *, cap_bytes: int = 4_000_000) -> Corpus:
    """The user's own corpus: one category per path (named after it), cut into ~4 KB documents.

    Files: ``.txt`` (and ``.md``/``.rst``), ``.jsonl`` with a ``text`` field, ``.parquet`` with a
    ``text`` column (needs pyarrow), each optionally ``.gz`` or ``.zst``; a directory means the
    files under it.
    """
    corpus = Corpus()
    for raw in paths:
        path = Path(raw)
        files = _corpus_files(path)
        if not files:
            raise CorpusError(f"{path}: no .txt/.jsonl/.parquet files found")
        cat = path.name
        for suffix in (".gz", ".zst", ".jsonl", ".parquet", ".txt"):
            cat = cat.removesuffix(suffix)
        base, n = cat or str(path), 2
        while cat in corpus.docs:
            cat, n = f"{base}-{n}", n + 1
        texts = (doc for f in files for doc in _documents_in(f))
        docs = split_documents(texts, cap_bytes=cap_bytes)
        if not docs:
            raise CorpusError(f"{path}: no text found")
        corpus.docs[cat] = docs
        corpus.sources[cat] = [str(f) for f in files]
    return corpus


# ----------------------------------------------------------------------------------------- results


@dataclass
class Result:
    """One measured number: a workload on one case (encoding / category ...) by one implementation.

    ``value`` is ``None`` when the implementation failed or could not run the case (``detail``
    says why). ``agree`` is whether its output matched the baseline's (``None``: not checked).
    """

    workload: str
    case: str
    impl: str
    value: float | None
    unit: str
    higher_is_better: bool = True
    agree: bool | None = None
    detail: dict[str, Any] = field(default_factory=dict)


@dataclass
class Mismatch:
    workload: str
    case: str
    impl: str
    what: str


@dataclass
class Workload:
    """A registered benchmark: ``fn(ctx)`` returns :class:`Result` rows."""

    name: str
    fn: Callable[[BenchContext], list[Result]]
    description: str = ""
    baseline: str = BASELINE
    units: Callable[[BenchContext], int] | None = None


_WORKLOADS: dict[str, Workload] = {}


def register_workload(
    name: str,
    fn: Callable[[BenchContext], list[Result]],
    *,
    description: str = "",
    baseline: str = BASELINE,
    units: Callable[[BenchContext], int] | None = None,
) -> None:
    """Adds a workload to ``bytepair bench`` (runs in registration order).

    ``fn(ctx)`` measures and returns rows; it calls ``ctx.advance()`` after each of its ``units``
    (default: one per encoding) for the progress display, and ``ctx.mismatch(...)`` when
    bytepair's output differs from the baseline's. ``baseline`` names the implementation the
    ratio column divides by.

    >>> def noop(ctx):
    ...     return [Result("noop", "-", "bytepair", 1.0, "x")]
    >>> register_workload("noop", noop, description="does nothing")
    >>> "noop" in workloads()
    True
    >>> _ = _WORKLOADS.pop("noop")
    """
    _WORKLOADS[name] = Workload(name, fn, description, baseline, units)


def workloads() -> dict[str, Workload]:
    """The registered workloads, by name, in run order."""
    return dict(_WORKLOADS)


# ----------------------------------------------------------------------------------------- context


class _Progress:
    """rich or tqdm progress on a terminal, nothing otherwise."""

    def __init__(self, total: int, enabled: bool) -> None:
        self._rich = self._tqdm = None
        if not enabled:
            return
        try:
            from rich.progress import (
                BarColumn,
                Progress,
                TextColumn,
                TimeElapsedColumn,
            )

            self._rich = Progress(
                TextColumn("[bold]{task.description:<40}"),
                BarColumn(),
                TextColumn("{task.completed}/{task.total}"),
                TimeElapsedColumn(),
                transient=True,
            )
            self._rich.start()
            self._task = self._rich.add_task("bench", total=total)
            return
        except ImportError:
            pass
        try:
            from tqdm import tqdm

            self._tqdm = tqdm(total=total, leave=False, dynamic_ncols=True)
        except ImportError:
            pass

    def describe(self, text: str) -> None:
        if self._rich is not None:
            self._rich.update(self._task, description=text)
        elif self._tqdm is not None:
            self._tqdm.set_description_str(text)

    def advance(self) -> None:
        if self._rich is not None:
            self._rich.advance(self._task)
        elif self._tqdm is not None:
            self._tqdm.update(1)

    def close(self) -> None:
        if self._rich is not None:
            self._rich.stop()
        elif self._tqdm is not None:
            self._tqdm.close()


# A short text in several scripts, for the untimed first call of each encoder (not from any
# corpus, so no measured document is seen twice).
_WARM_TEXT = "The quick brown fox's 1234 jumps: def f(x):\n\treturn x  # ok\r\n Привет мир, 中文 😀"


class BenchContext:
    """What a workload sees: corpus, encodings, peers, fresh-document pools and reporting."""

    def __init__(
        self,
        corpus: Corpus,
        encodings: Sequence[str],
        *,
        quick: bool = False,
        peers: Sequence[str] | None = None,
        progress: _Progress | None = None,
        turn_docs: int = TURN_DOCS,
    ) -> None:
        self.corpus = corpus
        self.encodings = list(encodings)
        self.quick = quick
        # Documents each implementation encodes per turn in the throughput workloads.
        self.turn_docs = turn_docs
        self.progress = progress or _Progress(0, False)
        self.mismatches: list[Mismatch] = []
        self.notes: list[str] = []
        self.modules: dict[str, Any] = {}
        self._encoders: dict[tuple[str, str], Any] = {}
        self._cursor: dict[tuple[str, str], int] = {}
        self.shared: dict[str, Any] = {}  # for workloads to hand numbers to each other
        self.peers = None if peers is None else list(peers)
        # Peers with their own API (trainers, numpy, faiss), imported by the workloads that
        # use them; recorded here for the machine info.
        self.extra_modules: dict[str, Any] = {}
        self._missing: set[str] = set()
        import bytepair

        self.modules["bytepair"] = bytepair
        for impl, module in PEER_MODULES.items():
            if peers is not None and impl not in peers and impl != BASELINE:
                continue
            try:
                self.modules[impl] = importlib.import_module(module)
            except ImportError:
                if impl == BASELINE:
                    raise
                self.notes.append(f"{impl}: not installed (pip install {impl} to compare)")

    @property
    def impls(self) -> list[str]:
        return list(self.modules)

    def peer(self, impl: str, module: str, install: str | None = None) -> Any:
        """An optional peer's module (``impl`` names it in the results), or ``None`` when it is
        not installed (a note says so, once) or left out by ``peers``."""
        if self.peers is not None and impl not in self.peers and impl not in _EXTRA_BASELINES:
            return None
        if impl in self.extra_modules:
            return self.extra_modules[impl]
        if impl in self._missing:
            return None
        try:
            mod = importlib.import_module(module)
        except Exception as e:  # noqa: BLE001 (ImportError, or a broken install)
            self._missing.add(impl)
            why = "not installed" if isinstance(e, ImportError) else f"{type(e).__name__}: {e}"
            self.notes.append(f"{impl}: {why} (pip install {install or impl} to compare); skipped")
            return None
        self.extra_modules[impl] = mod
        return mod

    def encoders(self, encoding: str) -> dict[str, Any]:
        """Each available implementation's encoder for ``encoding`` (bytepair first)."""
        out = {}
        for impl, module in self.modules.items():
            key = (impl, encoding)
            if key not in self._encoders:
                try:
                    enc = module.get_encoding(encoding)
                    # One untimed call on a short text of its own: the first call's one-time work
                    # (lazily built tables, their first page faults) belongs to the cold-load
                    # rows, not to the throughput of whichever workload happens to run first.
                    enc.encode_ordinary(_WARM_TEXT)
                    self._encoders[key] = enc
                except Exception as e:  # noqa: BLE001 (a peer without this encoding)
                    self._encoders[key] = None
                    self.notes.append(f"{impl}: no {encoding} ({type(e).__name__}: {e})")
            if self._encoders[key] is not None:
                out[impl] = self._encoders[key]
        return out

    def take(self, encoding: str, category: str, max_bytes: float) -> list[str]:
        """The next documents of ``category`` not yet handed out for ``encoding``.

        Workloads draw from one pool per encoding, so no encoder object sees a document twice in
        timed code. Returns at least one document while any are left; may return fewer bytes than
        asked when the category runs out (then a note says so).
        """
        docs = self.corpus.docs[category]
        start = self._cursor.get((encoding, category), 0)
        end, size = start, 0
        while end < len(docs) and (size < max_bytes or end == start):
            size += len(docs[end].encode("utf-8", "surrogatepass"))
            end += 1
        self._cursor[(encoding, category)] = end
        return docs[start:end]

    def remaining_bytes(self, encoding: str, category: str) -> int:
        docs = self.corpus.docs[category][self._cursor.get((encoding, category), 0) :]
        return sum(len(d.encode("utf-8", "surrogatepass")) for d in docs)

    def mismatch(self, workload: str, case: str, impl: str, what: str) -> None:
        self.mismatches.append(Mismatch(workload, case, impl, what))

    def advance(self, text: str | None = None) -> None:
        self.progress.advance()
        if text:
            self.progress.describe(text)


# -------------------------------------------------------------------------------------- measuring


def _nbytes(docs: Sequence[str]) -> int:
    return sum(len(d.encode("utf-8", "surrogatepass")) for d in docs)


@contextlib.contextmanager
def _no_gc() -> Iterator[None]:
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _first_difference(a: Any, b: Any) -> str:
    if isinstance(a, list) and isinstance(b, list):
        for i, (x, y) in enumerate(zip(a, b)):
            if x != y:
                return f"first difference at token {i}: {x} vs {y}"
        return f"lengths {len(a)} vs {len(b)}"
    return f"{a!r:.80} vs {b!r:.80}"


def interleaved(
    fns: Mapping[str, Callable[..., list[Any]]],
    docs: Sequence[str],
    *,
    chunk: int = 16,
) -> tuple[dict[str, float], dict[str, list[Any]], dict[str, str]]:
    """Times each function on the same documents, chunk by chunk, rotating who goes first.

    Each function sees every document once. Returns seconds per function, outputs per function
    (one per document) and errors (a function that raises is dropped from later chunks).
    """
    seconds = {name: 0.0 for name in fns}
    outputs: dict[str, list[Any]] = {name: [] for name in fns}
    errors: dict[str, str] = {}
    order = list(fns)
    for ci, start in enumerate(range(0, len(docs), chunk)):
        part = list(docs[start : start + chunk])
        k = ci % len(order)
        for name in order[k:] + order[:k]:
            if name in errors:
                continue
            fn = fns[name]
            try:
                with _no_gc():
                    t0 = time.perf_counter()
                    out = fn(part)
                    seconds[name] += time.perf_counter() - t0
            except (KeyboardInterrupt, SystemExit):
                raise
            except BaseException as e:  # noqa: BLE001 (a Rust panic in a peer is a BaseException)
                errors[name] = f"{type(e).__name__}: {e}"[:300]
                continue
            outputs[name].extend(out)
    return seconds, outputs, errors


def _compare(
    ctx: BenchContext,
    workload: str,
    case: str,
    outputs: dict[str, list[Any]],
    baseline: str,
    errors: dict[str, str],
) -> dict[str, bool | None]:
    agree: dict[str, bool | None] = {}
    base = outputs.get(baseline)
    for impl, outs in outputs.items():
        if impl == baseline or base is None or impl in errors or baseline in errors:
            agree[impl] = None
            continue
        bad = [i for i, (x, y) in enumerate(zip(outs, base)) if x != y]
        if len(outs) != len(base):
            bad = bad or [min(len(outs), len(base))]
        agree[impl] = not bad
        if bad:
            i = bad[0]
            x = outs[i] if i < len(outs) else None
            y = base[i] if i < len(base) else None
            ctx.mismatch(
                workload,
                case,
                impl,
                f"{len(bad)} of {len(base)} outputs differ from {baseline}; item {i}: {_first_difference(x, y)}",
            )
    return agree


def _throughput_rows(
    ctx: BenchContext,
    workload: str,
    case: str,
    fns: Mapping[str, Callable[..., list[Any]]],
    docs: Sequence[str],
    *,
    chunk: int | None = None,
    baseline: str = BASELINE,
) -> list[Result]:
    seconds, outputs, errors = interleaved(fns, docs, chunk=chunk or ctx.turn_docs)
    agree = _compare(ctx, workload, case, outputs, baseline, errors)
    nbytes = _nbytes(docs)
    rows = []
    for impl in fns:
        detail: dict[str, Any] = {"docs": len(docs), "bytes": nbytes}
        value = None
        if impl in errors:
            detail["error"] = errors[impl]
        else:
            detail["seconds"] = seconds[impl]
            value = nbytes / seconds[impl] / 1e6 if seconds[impl] > 0 else None
        rows.append(Result(workload, case, impl, value, "MB/s", True, agree.get(impl), detail))
    return rows


# -------------------------------------------------------------------------------------- workloads


def _categories(ctx: BenchContext) -> list[str]:
    return list(ctx.corpus.docs)


def _share(ctx: BenchContext, encoding: str, category: str, fraction: float) -> float:
    """Bytes worth ``fraction`` of the category (capped in quick mode)."""
    total = _nbytes(ctx.corpus.docs[category])
    return total * fraction


def _encode_ordinary(ctx: BenchContext) -> list[Result]:
    rows = []
    for enc in ctx.encodings:
        encoders = ctx.encoders(enc)
        for cat in _categories(ctx):
            ctx.progress.describe(f"encode_ordinary {enc} {cat}")
            docs = ctx.take(enc, cat, _share(ctx, enc, cat, 0.4))
            fns = {impl: (lambda part, e=e: [e.encode_ordinary(d) for d in part]) for impl, e in encoders.items()}
            rows += _throughput_rows(ctx, "encode_ordinary", f"{enc} / {cat}", fns, docs)
            ctx.advance()
    return rows


def _mixed_docs(ctx: BenchContext, enc: str, fraction: float) -> list[str]:
    """Unseen documents from every category, interleaved (one of each in turn)."""
    per_cat = [ctx.take(enc, cat, _share(ctx, enc, cat, fraction)) for cat in _categories(ctx)]
    mixed = []
    for i in range(max((len(p) for p in per_cat), default=0)):
        mixed += [p[i] for p in per_cat if i < len(p)]
    return mixed


def _with_specials(docs: list[str], specials: Sequence[str]) -> list[str]:
    out = []
    for i, doc in enumerate(docs):
        lines = doc.splitlines(keepends=True)
        mid = len(lines) // 2
        tok = specials[i % len(specials)]
        out.append("".join(lines[:mid]) + tok + "".join(lines[mid:]) + specials[0])
    return out


def _encode_special(ctx: BenchContext) -> list[Result]:
    rows = []
    for enc in ctx.encodings:
        ctx.progress.describe(f"encode (specials allowed) {enc}")
        encoders = ctx.encoders(enc)
        specials = sorted(encoders["bytepair"].special_tokens_set)
        docs = _with_specials(_mixed_docs(ctx, enc, 0.125), specials)
        fns = {
            impl: (lambda part, e=e: [e.encode(d, allowed_special="all") for d in part]) for impl, e in encoders.items()
        }
        rows += _throughput_rows(ctx, "encode (specials)", f"{enc} / mixed", fns, docs)
        ctx.advance()
    return rows


def _count(ctx: BenchContext) -> list[Result]:
    rows = []
    for enc in ctx.encodings:
        ctx.progress.describe(f"count {enc}")
        encoders = ctx.encoders(enc)
        docs = _mixed_docs(ctx, enc, 0.125)
        fns = {}
        for impl, e in encoders.items():
            if hasattr(e, "count"):
                fns[impl] = lambda part, e=e: [e.count(d, disallowed_special=()) for d in part]
            else:  # peers without count(): the length of the token list
                fns[impl] = lambda part, e=e: [len(e.encode(d, disallowed_special=())) for d in part]
        rows += _throughput_rows(ctx, "count", f"{enc} / mixed", fns, docs)
        ctx.advance()
    return rows


def _batch(ctx: BenchContext) -> list[Result]:
    """encode_ordinary_batch with 1 and 2 threads on different (equal-sized) unseen documents.

    Measured twice on separate documents: interleaved (the implementations take turns call by
    call, so each call starts on cores that were idle or busy with another library; on this kind
    of virtual machine an idle core takes 0.5-2 ms to wake up, as long as a whole 32-document
    batch takes bytepair), and back to back (each implementation makes all its calls in a row,
    after one untimed call, in runs of 4 calls with the same thread count, 1-thread and 2-thread
    runs in A B B A order), which is what a busy server or pipeline sees.
    """
    rows = []
    for enc in ctx.encodings:
        ctx.progress.describe(f"batch {enc}")
        docs = _mixed_docs(ctx, enc, 0.35)
        # Alternate 64-document blocks between the two, so both see the same mix of text.
        blocks = [docs[i : i + 64] for i in range(0, len(docs), 64)]
        interleaved_docs = [d for b in blocks[0::2] for d in b]
        back_to_back_docs = [d for b in blocks[1::2] for d in b]
        rows += _batch_rows(ctx, enc, interleaved_docs, back_to_back=False)
        rows += _batch_rows(ctx, enc, back_to_back_docs, back_to_back=True)
        ctx.advance()
    return rows


# Consecutive calls with the same thread count in the back-to-back batch rows.
_BATCH_RUN = 4


def back_to_back_order(calls: list[tuple[int, int, list[str]]], threads: Sequence[int], run: int) -> list[Any]:
    """The back-to-back batch schedule: runs of ``run`` consecutive calls with one thread count,
    the thread counts taking turns in A B B A order (so neither is always the first after a
    switch), every call once.

    >>> calls = [(r, t, []) for r in range(4) for t in (1, 2)]
    >>> [t for _, t, _ in back_to_back_order(calls, (1, 2), 2)]
    [1, 1, 2, 2, 2, 2, 1, 1]
    """
    by_t = {t: [c for c in calls if c[1] == t] for t in threads}
    out = []
    for j, k in enumerate(range(0, max((len(v) for v in by_t.values()), default=0), run)):
        for t in threads if j % 2 == 0 else list(threads)[::-1]:
            out += by_t[t][k : k + run]
    return out


def _takes_num_threads(encoder: Any) -> bool:
    """Whether ``encoder.encode_ordinary_batch`` takes ``num_threads`` (riptoken's always runs on
    rayon's global pool). Native methods without a readable signature are assumed to."""
    import inspect

    try:
        params = inspect.signature(encoder.encode_ordinary_batch).parameters
    except (TypeError, ValueError, AttributeError):
        return True
    return "num_threads" in params or any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())


def _batch_rows(ctx: BenchContext, enc: str, docs: list[str], *, back_to_back: bool) -> list[Result]:
    rows = []
    threads = (1, 2)
    label = " (back to back)" if back_to_back else ""
    encoders = {}
    for impl, e in ctx.encoders(enc).items():
        if _takes_num_threads(e):
            encoders[impl] = e
        else:
            ctx.notes.append(f"{impl}: its encode_ordinary_batch takes no thread count; left out of the batch rows")
    per = 32
    groups = [docs[i : i + per] for i in range(0, len(docs), per)]
    if len(groups) > 1 and len(groups[-1]) < per:
        groups.pop()
    warmup = groups.pop() if back_to_back and len(groups) > 2 else []
    # Round r: 1 thread on group 2r, 2 threads on group 2r+1, swapped every other round.
    sets: dict[int, list[str]] = {t: [] for t in threads}
    seconds = {(impl, t): 0.0 for impl in encoders for t in threads}
    outputs: dict[tuple[str, int], list[Any]] = {k: [] for k in seconds}
    errors: dict[str, str] = {}
    calls: list[tuple[int, int, list[str]]] = []
    for r in range(0, len(groups) - 1, 2):
        pair = (groups[r], groups[r + 1]) if (r // 2) % 2 == 0 else (groups[r + 1], groups[r])
        for t, group in zip(threads, pair):
            sets[t] += group
            calls.append((r, t, group))
    impls = list(encoders)
    if back_to_back:
        # Runs of consecutive calls with the same thread count, as a pipeline with a fixed
        # thread count makes them; each implementation starts with one untimed call (on
        # documents not timed) so that its first timed run does not also pay for the caches
        # the previous workload left.
        runs = back_to_back_order(calls, threads, _BATCH_RUN)
        schedule = [(impl, t, group) for impl in impls for _, t, group in [(-1, 2, warmup), *runs]]
    else:
        schedule = [
            (impl, t, group)
            for r, t, group in calls
            for impl in impls[(r // 2) % len(impls) :] + impls[: (r // 2) % len(impls)]
        ]
    for impl, t, group in schedule:
        if impl in errors:
            continue
        e = encoders[impl]
        try:
            if group is warmup:
                if group:
                    e.encode_ordinary_batch(group, num_threads=t)
                continue
            with _no_gc():
                t0 = time.perf_counter()
                out = e.encode_ordinary_batch(group, num_threads=t)
                seconds[(impl, t)] += time.perf_counter() - t0
        except (KeyboardInterrupt, SystemExit):
            raise
        except BaseException as ex:  # noqa: BLE001 (a peer's Rust panic)
            errors[impl] = f"{type(ex).__name__}: {ex}"[:300]
            continue
        outputs[(impl, t)] += out
    mb_s: dict[tuple[str, int], float | None] = {}
    for t in threads:
        case = f"{enc} / {t} thread{'s' if t > 1 else ''}{label}"
        outs = {impl: outputs[(impl, t)] for impl in encoders}
        agree = _compare(ctx, "batch", case, outs, BASELINE, errors)
        nbytes = _nbytes(sets[t])
        for impl in encoders:
            s = seconds[(impl, t)]
            value = nbytes / s / 1e6 if s > 0 and impl not in errors else None
            mb_s[(impl, t)] = value
            detail: dict[str, Any] = {"docs": len(sets[t]), "bytes": nbytes, "seconds": s, "threads": t}
            if impl in errors:
                detail["error"] = errors[impl]
            rows.append(Result("batch", case, impl, value, "MB/s", True, agree.get(impl), detail))
    for impl in encoders:
        one, two = mb_s[(impl, 1)], mb_s[(impl, 2)]
        rows.append(
            Result(
                "batch",
                f"{enc} / scaling 2t/1t{label}",
                impl,
                two / one if one and two else None,
                "x",
                True,
                None,
                {"cpus": _cpu_count(), "back_to_back": back_to_back},
            )
        )
    return rows


_LOAD_SNIPPET = (
    "import time\n"
    "t0 = time.perf_counter()\n"
    "import {module} as m\n"
    "e = m.get_encoding({encoding!r})\n"
    "tokens = e.encode('hi')\n"
    "t1 = time.perf_counter()\n"
    "print(repr(t1 - t0), tokens)\n"
)


def _load_units(ctx: BenchContext) -> int:
    return len(ctx.encodings)


def _load_time(ctx: BenchContext) -> list[Result]:
    """Import + get_encoding + first encode, in a fresh interpreter; median of several runs."""
    reps = 3 if ctx.quick else 5
    rows = []
    for enc in ctx.encodings:
        ctx.progress.describe(f"cold load {enc}")
        impls = [i for i in ctx.impls if ctx.encoders(enc).get(i) is not None]
        times: dict[str, list[float]] = {i: [] for i in impls}
        walls: dict[str, list[float]] = {i: [] for i in impls}
        tokens: dict[str, str] = {}
        errors: dict[str, str] = {}
        for r in range(reps):
            for impl in impls[r % len(impls) :] + impls[: r % len(impls)]:
                if impl in errors:
                    continue
                code = _LOAD_SNIPPET.format(module=PEER_MODULES.get(impl, impl), encoding=enc)
                t0 = time.perf_counter()
                proc = subprocess.run(
                    [sys.executable, "-c", code],
                    capture_output=True,
                    text=True,
                    timeout=120,
                    check=False,
                )
                wall = time.perf_counter() - t0
                if proc.returncode != 0:
                    errors[impl] = proc.stderr.strip().splitlines()[-1:][0][:300] if proc.stderr else "failed"
                    continue
                secs, _, toks = proc.stdout.strip().partition(" ")
                times[impl].append(float(secs))
                walls[impl].append(wall)
                tokens[impl] = toks
        outs = {i: [tokens[i]] for i in tokens}
        agree = _compare(ctx, "cold load", enc, outs, BASELINE, errors)
        for impl in impls:
            detail: dict[str, Any] = {
                "runs_ms": [round(t * 1000, 2) for t in times[impl]],
                "process_wall_ms_median": round(statistics.median(walls[impl]) * 1000, 1) if walls[impl] else None,
                "measures": "import + get_encoding + encode('hi') in a fresh interpreter",
            }
            if impl in errors:
                detail["error"] = errors[impl]
            value = statistics.median(times[impl]) * 1000 if times[impl] else None
            rows.append(Result("cold load", enc, impl, value, "ms", False, agree.get(impl), detail))
        ctx.advance()
    return rows


_RUN_UNITS = [
    ("space", " "),
    ("letter", "a"),
    ("newline", "\n"),
    ("tab", "\t"),
    ("CRLF", "\r\n"),
    ("digit", "1"),
    ("punct", "."),
    ("CJK", "中"),
    ("emoji", "😀"),
    ("NBSP", "\u00a0"),
]
_QUICK_RUN_UNITS = ["space", "letter", "CJK"]


def _linearity_units(ctx: BenchContext) -> int:
    n_units = len(_QUICK_RUN_UNITS) if ctx.quick else len(_RUN_UNITS)
    return n_units * len(_linearity_encodings(ctx))


def _linearity_encodings(ctx: BenchContext) -> list[str]:
    return ctx.encodings[:1] if ctx.quick else ctx.encodings


def _linearity(ctx: BenchContext) -> list[Result]:
    """Time of a 1M-character run of one unit over its 100k-character run (10 means linear)."""
    rows = []
    units = [(k, u) for k, u in _RUN_UNITS if not ctx.quick or k in _QUICK_RUN_UNITS]
    for enc in _linearity_encodings(ctx):
        encoders = ctx.encoders(enc)
        # Per-byte cost of ordinary text for each implementation, to compare long runs against.
        # Unseen documents of the category with the most left (earlier workloads drew on them).
        want = 64_000 if ctx.quick else 512_000
        cat = max(_categories(ctx), key=lambda c: ctx.remaining_bytes(enc, c))
        if ctx.remaining_bytes(enc, cat) >= want // 4:
            text = ctx.take(enc, cat, want)
        else:
            # Every document went to earlier workloads: reuse the first ones (no implementation
            # caches whole documents, and this is only the reference cost of ordinary text).
            cat = max(_categories(ctx), key=lambda c: _nbytes(ctx.corpus.docs[c]))
            text, size = [], 0
            for d in ctx.corpus.docs[cat]:
                if size >= want:
                    break
                text.append(d)
                size += len(d.encode("utf-8", "surrogatepass"))
        text_seconds, _, _ = interleaved(
            {impl: (lambda part, e=e: [e.encode_ordinary(d) for d in part]) for impl, e in encoders.items()},  # type: ignore[misc]
            text,
        )
        text_bytes = _nbytes(text)
        for label, unit in units:
            ctx.progress.describe(f"long runs {enc} {label}")
            short = unit * (100_000 // len(unit))
            long = unit * (1_000_000 // len(unit))
            results: dict[str, dict[str, Any]] = {}
            outs: dict[str, list[Any]] = {}
            errors: dict[str, str] = {}
            for impl, e in encoders.items():
                try:
                    # Best of 3 for both runs, so that both are measured with the allocator in
                    # the same state: a first 1M run also pays for mapping fresh memory for its
                    # output (megabytes of list and token buffer), which repeated 100k runs reuse,
                    # and that alone made fast encoders' ratios look worse (bytepair's 1M emoji
                    # run under o200k: 18.6 ms once against 1.2 ms for 100k, 15.3x).
                    shorts, longs = [], []
                    toks = None
                    with _no_gc():
                        for _ in range(3):
                            t0 = time.perf_counter()
                            e.encode_ordinary(short)
                            shorts.append(time.perf_counter() - t0)
                        for _ in range(3):
                            toks = None  # the previous run's list is freed before timing
                            t0 = time.perf_counter()
                            toks = e.encode_ordinary(long)
                            longs.append(time.perf_counter() - t0)
                    short_s, long_s = min(shorts), min(longs)
                except (KeyboardInterrupt, SystemExit):
                    raise
                except BaseException as ex:  # noqa: BLE001 (a peer's Rust panic)
                    errors[impl] = f"{type(ex).__name__}: {ex}"[:300]
                    continue
                results[impl] = {
                    "seconds_100k": short_s,
                    "seconds_1M": long_s,
                    "MB/s_1M": len(long.encode()) / long_s / 1e6,
                }
                if impl == "bytepair":
                    results[impl]["decodes_back"] = e.decode(toks) == long
                    if not results[impl]["decodes_back"]:
                        ctx.mismatch("long runs", f"{enc} / {label}", impl, "decode(encode(run)) != run")
                outs[impl] = [toks]
            case = f"{enc} / {label}"
            agree = _compare(ctx, "long runs", case, outs, BASELINE, errors)
            for impl in encoders:
                r = results.get(impl)
                value = r["seconds_1M"] / r["seconds_100k"] if r and r["seconds_100k"] > 0 else None
                detail = dict(r or {})
                if impl in errors:
                    detail["error"] = errors[impl]
                rows.append(Result("long runs 1M/100k", case, impl, value, "x", False, agree.get(impl), detail))
            for impl in encoders:
                r = results.get(impl)
                per_text = text_seconds.get(impl, 0.0) / max(text_bytes, 1)
                value = None
                if r and per_text > 0:
                    value = r["seconds_1M"] / len(long.encode()) / per_text
                rows.append(
                    Result(
                        "long run cost/byte vs text",
                        case,
                        impl,
                        value,
                        "x",
                        False,
                        agree.get(impl),
                        {"text_bytes": text_bytes, "text_seconds": text_seconds.get(impl)},
                    )
                )
            ctx.advance()
    return rows


register_workload(
    "encode_ordinary",
    _encode_ordinary,
    description="encode_ordinary, one thread, fresh ~4 KB documents, per category",
    units=lambda ctx: len(ctx.encodings) * len(ctx.corpus.docs),
)
register_workload(
    "encode",
    _encode_special,
    description="encode(allowed_special='all') on documents with special tokens inserted",
)
register_workload("count", _count, description="token counts (len(encode) for peers without count)")
register_workload(
    "batch",
    _batch,
    description="encode_ordinary_batch with 1 and 2 threads, and the 2-thread/1-thread ratio",
)
register_workload(
    "load",
    _load_time,
    description="cold load: import + get_encoding + first encode in a fresh interpreter (median)",
    units=_load_units,
)
register_workload(
    "linearity",
    _linearity,
    description="time of a 1M-character run over its 100k-character run (10 = linear)",
    units=_linearity_units,
)


# --------------------------------------------------------------------------------------- training

# One trainer, one run, in a fresh interpreter: the clock starts after the imports and after the
# documents are loaded, and stops when training returns (before the tokens are read back).
# Memory is the process's peak resident size (VmHWM; not ru_maxrss, which on Linux keeps the
# parent's high-water mark from before exec), interpreter and documents included.
_TRAIN_SNIPPET = r"""
import json, sys, time

def peak_mib():
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    import resource
    r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return r / 2**20 if sys.platform == "darwin" else r / 1024

def byte_of_char():
    # The byte-level alphabet of GPT-2 / tokenizers' ByteLevel: printable bytes stand for
    # themselves, the others for chr(256 + n) in byte order.
    keep = [*range(0x21, 0x7F), *range(0xA1, 0xAD), *range(0xAE, 0x100)]
    table, n = {}, 0
    for b in range(256):
        if b in keep:
            table[chr(b)] = b
        else:
            table[chr(256 + n)] = b
            n += 1
    return table

trainer, docs_path, vocab, pattern, out_path = sys.argv[1:]
vocab = int(vocab)
with open(docs_path, encoding="utf-8") as f:
    docs = json.load(f)
if trainer == "bytepair":
    import bytepair
elif trainer == "rustbpe":
    import rustbpe
else:
    from tokenizers import Regex, Tokenizer, models, pre_tokenizers, trainers
start_mib = peak_mib()
t0 = time.perf_counter()
if trainer == "bytepair":
    enc = bytepair.train(docs, vocab_size=vocab, pattern="cl100k_base", progress=False)
elif trainer == "rustbpe":
    tok = rustbpe.Tokenizer()
    tok.train_from_iterator(iter(docs), vocab, pattern=pattern)
else:
    tok = Tokenizer(models.BPE())
    # Oniguruma reads a possessive `{1,3}+` as `({1,3})+`; the plain `{1,3}` splits the same here.
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(pattern.replace("{1,3}+", "{1,3}")), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    tok.train_from_iterator(docs, trainers.BpeTrainer(
        vocab_size=vocab, show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
seconds = time.perf_counter() - t0
peak = peak_mib()
if trainer == "bytepair":
    ranks = enc._mergeable_ranks
    tokens = sorted(ranks, key=ranks.__getitem__)
elif trainer == "rustbpe":
    tokens = [bytes(t) for t, _ in sorted(tok.get_mergeable_ranks(), key=lambda kv: kv[1])]
else:
    to_byte = byte_of_char()
    merges = json.loads(tok.to_str())["model"]["merges"]
    merges = [m.split(" ") if isinstance(m, str) else m for m in merges]
    tokens = [bytes([b]) for b in range(256)]
    tokens += [bytes(to_byte[c] for c in a + b) for a, b in merges]
with open(out_path, "w") as f:
    json.dump([t.hex() for t in tokens], f)
print(json.dumps({"seconds": seconds, "peak_mib": peak, "start_mib": start_mib}))
"""

# name in the results -> (module, pip name)
_TRAINERS = {
    "bytepair": ("bytepair", "bytepair"),
    "rustbpe": ("rustbpe", "rustbpe"),
    "tokenizers": ("tokenizers", "tokenizers"),
}


def _train_cases(ctx: BenchContext) -> list[int]:
    return [2048] if ctx.quick else [8192, 32768]


def _train_docs(ctx: BenchContext) -> list[str]:
    """Every category's documents, interleaved, up to 2 MB (quick) or 16 MB."""
    cap = 2_000_000 if ctx.quick else 16_000_000
    per_cat = list(ctx.corpus.docs.values())
    docs, size = [], 0
    for i in range(max((len(p) for p in per_cat), default=0)):
        for p in per_cat:
            if i < len(p) and size < cap:
                docs.append(p[i])
                size += len(p[i].encode("utf-8", "surrogatepass"))
    return docs


def _run_trainer(
    impl: str, docs_path: Path, vocab: int, pattern: str, out: Path
) -> tuple[dict[str, Any] | None, list[bytes] | None, str | None]:
    """(result, tokens by rank, error) of one run in a fresh interpreter."""
    try:
        proc = subprocess.run(
            [sys.executable, "-c", _TRAIN_SNIPPET, impl, str(docs_path), str(vocab), pattern, str(out)],
            capture_output=True,
            text=True,
            timeout=900,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return None, None, "timed out after 900 s"
    if proc.returncode != 0:
        lines = proc.stderr.strip().splitlines()
        return None, None, (lines[-1] if lines else f"exit status {proc.returncode}")[:300]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    tokens = [bytes.fromhex(h) for h in json.loads(out.read_text())]
    return result, tokens, None


def _training(ctx: BenchContext) -> list[Result]:
    """Trains on the same documents with bytepair, rustbpe and tokenizers, each in its own
    process; checks bytepair's ranks against rustbpe's (same tie rule: equal lists expected)."""
    import tempfile

    from bytepair import _native

    pattern = _native._resolve_pattern("cl100k_base")
    impls = ["bytepair"] + [i for i, (mod, pip) in _TRAINERS.items() if i != "bytepair" and ctx.peer(i, mod, pip)]
    if "rustbpe" not in impls:
        ctx.notes.append("training: bytepair's ranks were not checked (rustbpe is the reference)")
    docs = _train_docs(ctx)
    nbytes = _nbytes(docs)
    reps = 1 if ctx.quick else 3
    rows: list[Result] = []
    with tempfile.TemporaryDirectory(prefix="bytepair-bench-train-") as tmp:
        docs_path = Path(tmp) / "docs.json"
        docs_path.write_text(json.dumps(docs), encoding="utf-8")
        for vocab in _train_cases(ctx):
            size = f"{nbytes / 1e6:.1f} MB" if nbytes >= 100_000 else f"{nbytes / 1e3:.0f} KB"
            case = f"{size} / vocab {vocab}"
            ctx.progress.describe(f"training vocab {vocab}")
            runs: dict[str, list[dict[str, Any]]] = {i: [] for i in impls}
            tokens: dict[str, list[bytes]] = {}
            errors: dict[str, str] = {}
            for r in range(reps):
                k = r % len(impls)
                for impl in impls[k:] + impls[:k]:
                    if impl in errors:
                        continue
                    res, toks, err = _run_trainer(impl, docs_path, vocab, pattern, Path(tmp) / "t")
                    if err is not None:
                        errors[impl] = err
                        continue
                    assert res is not None
                    runs[impl].append(res)
                    if impl in tokens and tokens[impl] != toks:
                        errors[impl] = "two runs on the same documents learned different merges"
                        if impl == "bytepair":
                            ctx.mismatch("training", case, impl, errors[impl])
                    tokens[impl] = toks  # type: ignore[assignment]
            ref = tokens.get("rustbpe") if "rustbpe" not in errors else None
            agree: dict[str, bool | None] = {}
            checks: dict[str, str] = {}
            for impl in impls:
                toks = tokens.get(impl)
                if ref is None or toks is None or impl == "rustbpe" or impl in errors:
                    agree[impl] = None
                    continue
                same = toks == ref
                if impl == "bytepair":
                    agree[impl] = same
                    checks[impl] = f"ranks = rustbpe's ({len(ref)} tokens)"
                    if not same:
                        i = next(
                            (j for j, (a, b) in enumerate(zip(toks, ref)) if a != b),
                            min(len(toks), len(ref)),
                        )
                        a = toks[i] if i < len(toks) else None
                        b = ref[i] if i < len(ref) else None
                        ctx.mismatch(
                            "training",
                            case,
                            impl,
                            f"ranks differ from rustbpe's from rank {i}: {a!r} vs {b!r} "
                            f"({len(toks)} vs {len(ref)} tokens)",
                        )
                else:
                    # tokenizers breaks ties between equally frequent pairs its own way, so its
                    # merges are not expected to be rustbpe's; report how close they are.
                    agree[impl] = None
                    shared = len(set(toks) & set(ref)) / max(1, len(ref))
                    checks[impl] = f"{shared:.1%} of rustbpe's tokens, same list: {same}"
                    ctx.notes.append(
                        f"training {case}: {impl} learned {len(toks)} tokens, {shared:.1%} of "
                        f"rustbpe's (identical list: {same}); it breaks ties its own way, so it "
                        "is timed but not checked"
                    )
            for impl in impls:
                secs = [x["seconds"] for x in runs[impl]]
                peaks = [x["peak_mib"] for x in runs[impl]]
                detail: dict[str, Any] = {
                    "docs": len(docs),
                    "bytes": nbytes,
                    "vocab_size": vocab,
                    "pattern": "cl100k_base",
                    "runs_s": [round(x, 3) for x in secs],
                    "measures": "training call in a fresh interpreter (imports and loading the "
                    "documents not timed); median of runs",
                }
                if impl in tokens:
                    detail["n_tokens"] = len(tokens[impl])
                if impl in checks:
                    detail["check"] = checks[impl]
                if impl in errors:
                    detail["error"] = errors[impl]
                ok = impl not in errors and secs
                rows.append(
                    Result(
                        "training", case, impl, statistics.median(secs) if ok else None, "s", False, agree[impl], detail
                    )
                )
                mem = {
                    "runs_mib": [round(x, 1) for x in peaks],
                    "start_mib": [round(x["start_mib"], 1) for x in runs[impl]],
                    "measures": "peak resident memory (VmHWM) of the training process: "
                    "interpreter, documents and trainer; start_mib is before training",
                }
                if impl in errors:
                    mem["error"] = errors[impl]
                rows.append(
                    Result("training peak memory", case, impl, max(peaks) if ok else None, "MiB", False, None, mem)
                )
            ctx.advance()
    return rows


# ------------------------------------------------------------------------------------- embeddings

K_TOP = 10


def _embed_sizes(ctx: BenchContext) -> dict[str, Any]:
    if ctx.quick:
        return {
            "table": (20_000, 256),
            "bags": (32, 256),
            "keys": (20_000, 256),
            "rounds": 5,
            "search_rounds": 5,
            "text_docs": 50,
            "text_rounds": 2,
            "text_dim": 64,
        }
    return {
        "table": (50_257, 768),
        "bags": (32, 256),
        "keys": (200_000, 768),
        # The gather's median over 15 rounds moved by 10% between runs (a call is under 1 ms,
        # and whether the second core wakes in time varies); 41 rounds take about 2 s.
        "rounds": 41,
        "search_rounds": 10,
        "text_docs": 100,
        "text_rounds": 6,
        "text_dim": 256,
    }


def _embed_modules(ctx: BenchContext) -> tuple[Any, Any] | None:
    """(numpy, bytepair.embed), or None (with a note) when they cannot be imported."""
    np = ctx.peer("numpy", "numpy")
    if np is None:
        return None
    try:
        from bytepair import embed
    except ImportError as e:
        ctx.notes.append(f"embeddings: bytepair.embed cannot be imported ({e}); skipped")
        return None
    return np, embed


def _l3_bytes() -> int:
    """The largest CPU cache, from sysfs (32 MiB when unknown)."""
    best = 0
    for f in Path("/sys/devices/system/cpu/cpu0/cache").glob("index*/size"):
        with contextlib.suppress(OSError, ValueError):
            text = f.read_text().strip().upper()
            scale = {"K": 1 << 10, "M": 1 << 20}.get(text[-1:], 1)
            best = max(best, int(text.rstrip("KM")) * scale)
    return best or 32 << 20


def cache_evictor(np: Any) -> Callable[[], None]:
    """A function that evicts the CPU caches by reading a buffer of three times the largest cache
    (at least 64 MiB). Called, untimed, before each timed call of a workload whose input could
    otherwise stay cached from the previous call (the gather's 25 MB of rows fit in a 32 MB L3):
    every implementation then starts from memory, as it does on the first call with fresh data.
    Reading clean lines leaves nothing dirty to write back during the next call."""
    buf = np.ones(max(64 << 20, 3 * _l3_bytes()) // 8, dtype=np.float64)

    def evict() -> None:
        buf.sum()

    return evict


def _rounds(
    fns: dict[str, Callable[[int], Any]],
    rounds: int,
    *,
    pause: float = 0.0,
    before: Callable[[], None] | None = None,
) -> tuple[dict[str, list[float]], dict[str, list[Any]], dict[str, str]]:
    """Calls each function once a round (after one untimed warm-up round, ``r = -1``) on that
    round's input, rotating who goes first; ``before`` (untimed) runs before every call, after
    the pause. Returns seconds and outputs per round, and errors."""
    times: dict[str, list[float]] = {n: [] for n in fns}
    outs: dict[str, list[Any]] = {n: [] for n in fns}
    errors: dict[str, str] = {}
    order = list(fns)
    for r in range(-1, rounds):
        k = r % len(order)
        for name in order[k:] + order[:k]:
            if name in errors:
                continue
            if pause:
                time.sleep(pause)
            if before is not None:
                before()
            try:
                with _no_gc():
                    t0 = time.perf_counter()
                    out = fns[name](r)
                    dt = time.perf_counter() - t0
            except (KeyboardInterrupt, SystemExit):
                raise
            except BaseException as e:  # noqa: BLE001 (a peer's Rust panic)
                errors[name] = f"{type(e).__name__}: {e}"[:300]
                continue
            if r >= 0:
                times[name].append(dt)
                outs[name].append(out)
    return times, outs, errors


def _ms_row(
    workload: str,
    case: str,
    impl: str,
    times: list[float],
    agree: bool | None,
    detail: dict[str, Any],
    error: str | None,
) -> Result:
    detail = dict(detail)
    if times:
        detail["min_ms"] = round(min(times) * 1000, 3)
        detail["rounds"] = len(times)
    if error:
        detail["error"] = error
    value = statistics.median(times) * 1000 if times and not error else None
    return Result(workload, case, impl, value, "ms", False, agree, detail)


def _gather(ctx: BenchContext) -> list[Result]:
    """gather + mean of 32 bags of 256 random ids: numpy ``T[ids].mean(1)`` vs bytepair's fused
    kernel on a float32 and a float16 table. Fresh ids every round, the same for every
    implementation, and the caches evicted before every call: otherwise whoever runs second in a
    round finds the first one's rows in the L3 cache."""
    mods = _embed_modules(ctx)
    if mods is None:
        return []
    np, embed = mods
    sz = _embed_sizes(ctx)
    (V, D), (B, L), rounds = sz["table"], sz["bags"], sz["rounds"]
    ctx.progress.describe("embeddings: gather + mean")
    rng = np.random.default_rng(0)
    T = rng.standard_normal((V, D), dtype=np.float32)
    T16 = T.astype(np.float16)
    ids = [rng.integers(0, V, (B, L)) for _ in range(rounds + 1)]
    fns = {
        "numpy": lambda r: T[ids[r + 1]].mean(1),
        "bytepair": lambda r: embed.gather(T, ids[r + 1]),
        "bytepair f16": lambda r: embed.gather(T16, ids[r + 1]),
    }
    times, outs, errors = _rounds(fns, rounds, before=cache_evictor(np))
    rows: list[Result] = []
    base_case = f"[{V}, {D}] table, {B} bags x {L} ids"
    for variant, table, name in (("float32", T, "bytepair"), ("float16", T16, "bytepair f16")):
        case = f"{base_case} / {variant} table"
        agree: bool | None = None
        detail: dict[str, Any] = {
            "table": [V, D],
            "table_dtype": variant,
            "bags": [B, L],
            "numpy": "T[ids].mean(1) on the float32 table",
        }
        if name not in errors and "numpy" not in errors and outs[name]:
            # Against numpy on the very table bytepair read (float16 values widened to float32).
            diffs = []
            for r, got in enumerate(outs[name]):
                want = outs["numpy"][r] if variant == "float32" else (table[ids[r + 1]].astype(np.float32).mean(1))
                diffs.append(float(np.abs(got - want).max()))
            worst = max(diffs)
            agree = bool(worst <= 1e-5)
            detail["max_abs_diff"] = worst
            detail["check"] = f"max |diff| {worst:.1e} vs numpy"
            if not agree:
                ctx.mismatch(
                    "embed gather+mean", case, "bytepair", f"max |diff| {worst:.3g} from numpy's mean (allowed 1e-5)"
                )
        rows.append(_ms_row("embed gather+mean", case, "bytepair", times[name], agree, detail, errors.get(name)))
        rows.append(
            _ms_row(
                "embed gather+mean",
                case,
                "numpy",
                times["numpy"],
                None,
                {"measures": "T[ids].mean(1), float32 table"},
                errors.get("numpy"),
            )
        )
    ctx.advance()
    return rows


def _unit_rows(np: Any, n: int, d: int, seed: int) -> Any:
    x = np.random.default_rng(seed).standard_normal((n, d), dtype=np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x


def _embed_keys(ctx: BenchContext, np: Any) -> Any:
    """The unit-norm keys shared by the top-k workloads (built once)."""
    if "embed_keys" not in ctx.shared:
        N, D = _embed_sizes(ctx)["keys"]
        ctx.shared["embed_keys"] = _unit_rows(np, N, D, 1)
    return ctx.shared["embed_keys"]


def _np_topk(np: Any, q: Any, K: Any, k: int) -> tuple[Any, Any]:
    """numpy's best exact top-k: one GEMM into a [B, N] score matrix, argpartition, sort k."""
    S = q @ K.T
    part = np.argpartition(-S, k - 1, axis=1)[:, :k]
    ps = np.take_along_axis(S, part, 1)
    o = np.argsort(-ps, axis=1, kind="stable")
    return np.take_along_axis(ps, o, 1), np.take_along_axis(part, o, 1)


def _topk_check(np: Any, K: Any, q: Any, got: tuple[Any, Any], want: tuple[Any, Any]) -> str | None:
    """None when ``got`` is an exact top-k: its scores equal numpy's top-k scores within 1e-5,
    and its indices are numpy's or (ties, rounding) indices whose true scores equal numpy's
    top-k scores within 1e-5. Else what differs."""
    gs, gi = np.asarray(got[0]), np.asarray(got[1])
    ws, wi = want
    if gi.shape != wi.shape or gs.shape != ws.shape:
        return f"shape {gi.shape} vs {wi.shape}"
    for row in range(wi.shape[0]):
        if not np.allclose(gs[row], ws[row], rtol=0, atol=1e-5):
            return f"query {row}: scores {gs[row].tolist()} vs numpy's {ws[row].tolist()}"
        if np.array_equal(gi[row], wi[row]):
            continue
        if len(set(gi[row].tolist())) != gi.shape[1] or gi[row].min() < 0:
            return f"query {row}: invalid indices {gi[row].tolist()}"
        true = K[gi[row]] @ q[row]
        if not np.allclose(np.sort(true)[::-1], ws[row], rtol=0, atol=1e-5):
            return f"query {row}: indices {gi[row].tolist()} vs numpy's {wi[row].tolist()}, scores not within 1e-5"
    return None


def _recall(np: Any, got: Any, want: Any) -> float:
    hits = sum(len(set(a.tolist()) & set(b.tolist())) for a, b in zip(got, want))
    return hits / max(1, want.size)


def _faiss_index(ctx: BenchContext, K: Any) -> Any:
    if "faiss_index" not in ctx.shared:
        faiss = ctx.peer("faiss", "faiss", "faiss-cpu")
        ix = None
        if faiss is not None:
            try:
                ix = faiss.IndexFlatIP(K.shape[1])
                ix.add(K)
            except Exception as e:  # noqa: BLE001
                ctx.notes.append(f"faiss: IndexFlatIP failed ({type(e).__name__}: {e}); skipped")
                ix = None
        ctx.shared["faiss_index"] = ix
    return ctx.shared["faiss_index"]


def _bp_indexes(ctx: BenchContext, embed: Any, K: Any) -> dict[str, Any]:
    if "embed_indexes" not in ctx.shared:
        out, build = {}, {}
        for dt in ("float32", "float16", "int8"):
            t0 = time.perf_counter()
            out[dt] = embed.Index(K, dtype=dt)
            build[dt] = round(time.perf_counter() - t0, 3)
        ctx.shared["embed_indexes"] = out
        ctx.shared["embed_index_build_s"] = build
    return ctx.shared["embed_indexes"]


# The recall@10 the float16 and int8 indexes must reach against numpy's exact top-10 (#5).
_MIN_RECALL = 0.99

# OpenBLAS's threads keep spinning for a while after a matrix product and slow whatever runs
# next: every search starts from an idle machine.
_SEARCH_PAUSE = 0.15


def _search_pause(ctx: BenchContext) -> float:
    """The pause before each search call: shorter in quick mode (a smoke run with small
    matrices, whose figures are not meant to be compared)."""
    return 0.01 if ctx.quick else _SEARCH_PAUSE


def _topk32(ctx: BenchContext) -> list[Result]:
    """Exact cosine top-10 for 32 queries: numpy GEMM + argpartition, bytepair ``topk`` (raw
    keys: it normalises as it goes) and ``Index`` float32, faiss ``IndexFlatIP``; and ``Index``
    float16 and int8 (recall@10 against numpy's exact top-10)."""
    mods = _embed_modules(ctx)
    if mods is None:
        return []
    np, embed = mods
    sz = _embed_sizes(ctx)
    rounds = sz["search_rounds"]
    ctx.progress.describe("embeddings: top-10, 32 queries")
    K = _embed_keys(ctx, np)
    N, D = K.shape
    ixs = _bp_indexes(ctx, embed, K)
    ix = ixs["float32"]
    fx = _faiss_index(ctx, K)
    Qs = [_unit_rows(np, 32, D, 100 + r) for r in range(rounds + 1)]
    fns: dict[str, Callable[[int], Any]] = {
        "numpy": lambda r: _np_topk(np, Qs[r + 1], K, K_TOP),
        "bytepair": lambda r: embed.topk(Qs[r + 1], K, K_TOP),
        "bytepair Index": lambda r: ix.search(Qs[r + 1], K_TOP),
        "Index float16": lambda r: ixs["float16"].search(Qs[r + 1], K_TOP),
        "Index int8": lambda r: ixs["int8"].search(Qs[r + 1], K_TOP),
    }
    if fx is not None:
        fns["faiss"] = lambda r: fx.search(Qs[r + 1], K_TOP)
    times, outs, errors = _rounds(fns, rounds, pause=_search_pause(ctx))
    workload = "embed top-10, 32 queries"
    rows = []
    for name, case_what in (("bytepair", "topk cosine"), ("bytepair Index", "Index float32")):
        case = f"{N // 1000}k x {D} / {case_what}"
        rows += _search_rows(ctx, np, K, Qs, workload, case, name, times, outs, errors, fns)
    for dt in ("float16", "int8"):
        case = f"{N // 1000}k x {D} / Index {dt}"
        rows += _search_rows(
            ctx, np, K, Qs, workload, case, f"Index {dt}", times, outs, errors, fns, min_recall=_MIN_RECALL
        )
    ctx.advance()
    return rows


def _search_rows(
    ctx: BenchContext,
    np: Any,
    K: Any,
    Qs: list[Any],
    workload: str,
    case: str,
    name: str,
    times: dict[str, list[float]],
    outs: dict[str, list[Any]],
    errors: dict[str, str],
    fns: dict[str, Any],
    *,
    min_recall: float | None = None,
    extra: dict[str, Any] | None = None,
) -> list[Result]:
    """bytepair's row (checked against numpy) and numpy's and faiss's rows for one case."""
    rows = []
    detail: dict[str, Any] = dict(extra or {})
    agree: bool | None = None
    if name not in errors and "numpy" not in errors and outs[name]:
        problems, recalls = [], []
        for r, (got, want) in enumerate(zip(outs[name], outs["numpy"])):
            q = Qs[r + 1][: want[1].shape[0]]
            recalls.append(_recall(np, np.asarray(got[1]), want[1]))
            if min_recall is None:
                p = _topk_check(np, K, q, got, want)
                if p:
                    problems.append(f"round {r}: {p}")
        detail["recall_at_10"] = statistics.fmean(recalls)
        if min_recall is None:
            agree = not problems
            detail["check"] = "exact top-10 (= numpy)"
            if problems:
                ctx.mismatch(workload, case, "bytepair", f"{len(problems)} round(s); {problems[0]}")
        else:
            rec = detail.get("recall_at_10_32q", detail["recall_at_10"])
            agree = rec >= min_recall
            detail["check"] = f"recall@10 {rec:.3f}"
            if not agree:
                ctx.mismatch(
                    workload, case, "bytepair", f"recall@10 {rec:.3f} < {min_recall} against numpy's exact top-10"
                )
    rows.append(_ms_row(workload, case, "bytepair", times[name], agree, detail, errors.get(name)))
    rows.append(
        _ms_row(
            workload,
            case,
            "numpy",
            times["numpy"],
            None,
            {"measures": "q @ K.T + argpartition + sort (keys pre-normalised)"},
            errors.get("numpy"),
        )
    )
    if "faiss" in fns:
        fdetail: dict[str, Any] = {"measures": "IndexFlatIP on the pre-normalised keys"}
        fagree = None
        if "faiss" not in errors and "numpy" not in errors and outs["faiss"]:
            bad = [
                _topk_check(np, K, Qs[r + 1][: want[1].shape[0]], got, want)
                for r, (got, want) in enumerate(zip(outs["faiss"], outs["numpy"]))
            ]
            bad = [b for b in bad if b]
            fagree = not bad
            if bad:
                ctx.notes.append(f"faiss differs from numpy on {workload} {case}: {bad[0]}")
        rows.append(_ms_row(workload, case, "faiss", times["faiss"], fagree, fdetail, errors.get("faiss")))
    return rows


def _search1(ctx: BenchContext) -> list[Result]:
    """One query at a time (the latency case): numpy vs bytepair ``Index`` with float32, float16
    and int8 storage (recall@10 over 32 queries against numpy's exact top-10) and faiss."""
    mods = _embed_modules(ctx)
    if mods is None:
        return []
    np, embed = mods
    sz = _embed_sizes(ctx)
    rounds = sz["search_rounds"]
    ctx.progress.describe("embeddings: top-10, 1 query")
    K = _embed_keys(ctx, np)
    N, D = K.shape
    ixs = _bp_indexes(ctx, embed, K)
    fx = _faiss_index(ctx, K)
    Qs = [_unit_rows(np, 1, D, 200 + r) for r in range(rounds + 1)]
    fns: dict[str, Callable[[int], Any]] = {
        "numpy": lambda r: _np_topk(np, Qs[r + 1], K, K_TOP),
        **{f"Index {dt}": (lambda r, ix=ix: ix.search(Qs[r + 1], K_TOP)) for dt, ix in ixs.items()},  # type: ignore[misc]
    }
    if fx is not None:
        fns["faiss"] = lambda r: fx.search(Qs[r + 1], K_TOP)
    times, outs, errors = _rounds(fns, rounds, pause=_search_pause(ctx))
    # Recall over 32 more queries, one search each, against numpy's exact answer.
    Q32 = _unit_rows(np, 32, D, 300)
    exact = _np_topk(np, Q32, K, K_TOP)[1]
    workload = "embed top-10, 1 query"
    rows = []
    for dt, ix in ixs.items():
        name = f"Index {dt}"
        extra: dict[str, Any] = {
            "index_mb": round(ix.nbytes / 1e6, 1),
            "build_s": ctx.shared.get("embed_index_build_s", {}).get(dt),
        }
        if name not in errors:
            got = np.concatenate([ix.search(Q32[j : j + 1], K_TOP)[1] for j in range(32)])
            extra["recall_at_10_32q"] = _recall(np, got, exact)
        case = f"{N // 1000}k x {D} / Index {dt}"
        rows += _search_rows(
            ctx,
            np,
            K,
            Qs,
            workload,
            case,
            name,
            times,
            outs,
            errors,
            fns,
            min_recall=None if dt == "float32" else _MIN_RECALL,
            extra=extra,
        )
    ctx.advance()
    return rows


def _embed_texts(ctx: BenchContext) -> list[Result]:
    """Text -> pooled, normalised embedding: bytepair ``embed_texts`` (one native call) vs
    tiktoken ``encode_ordinary_batch`` + numpy gather, mean and normalise. Fresh documents from
    every category each round; both see the same ones."""
    mods = _embed_modules(ctx)
    if mods is None:
        return []
    np, embed = mods
    sz = _embed_sizes(ctx)
    enc_name = ctx.encodings[0]
    ctx.progress.describe(f"embeddings: embed_texts {enc_name}")
    encoders = ctx.encoders(enc_name)
    bp, tk = encoders.get("bytepair"), encoders.get(BASELINE)
    if bp is None or tk is None:
        ctx.notes.append(f"embed_texts: no {enc_name} encoder for bytepair or {BASELINE}; skipped")
        ctx.advance()
        return []
    n_docs, rounds, dim = sz["text_docs"], sz["text_rounds"], sz["text_dim"]
    # Documents of every category, interleaved; each round has its own. (The tokenizer
    # workloads may have encoded them before: neither implementation keeps a document cache.)
    per_cat = [ctx.corpus.docs[c] for c in _categories(ctx)]
    mixed = [p[i] for i in range(max(map(len, per_cat), default=0)) for p in per_cat if i < len(p)]
    n_docs = max(1, min(n_docs, len(mixed) // (rounds + 1)))
    batches = [mixed[i * n_docs : (i + 1) * n_docs] for i in range(rounds + 1)]
    batches = [b for b in batches if b]
    rounds = len(batches) - 1
    if rounds < 1:
        ctx.notes.append("embed_texts: the corpus is too small; skipped")
        ctx.advance()
        return []
    T = np.random.default_rng(2).standard_normal((bp.n_vocab, dim), dtype=np.float32)

    def numpy_pipeline(docs: list[str]) -> Any:
        ids = tk.encode_ordinary_batch(docs)
        out = np.stack([T[i].mean(0) if len(i) else np.zeros(dim, np.float32) for i in ids])
        n = np.linalg.norm(out, axis=1, keepdims=True)
        return out / np.where(n > 0, n, 1)

    fns = {
        "bytepair": lambda r: embed.embed_texts(bp, T, batches[r + 1]),
        "numpy": lambda r: numpy_pipeline(batches[r + 1]),
    }
    times, outs, errors = _rounds(fns, rounds)
    nbytes = sum(_nbytes(b) for b in batches[1:])
    case = f"{enc_name} / table [{bp.n_vocab}, {dim}], {rounds} x {n_docs} docs"
    agree: bool | None = None
    detail: dict[str, Any] = {"docs": rounds * n_docs, "bytes": nbytes, "table": [bp.n_vocab, dim]}
    if "bytepair" not in errors and "numpy" not in errors and outs["bytepair"]:
        worst = max(float(np.abs(a - b).max()) for a, b in zip(outs["bytepair"], outs["numpy"]))
        agree = worst <= 1e-5
        detail["max_abs_diff"] = worst
        detail["check"] = f"max |diff| {worst:.1e} vs tiktoken+numpy"
        if not agree:
            ctx.mismatch(
                "embed_texts", case, "bytepair", f"max |diff| {worst:.3g} from tiktoken + numpy (allowed 1e-5)"
            )
    rows = []
    for impl, d in (
        ("bytepair", detail),
        (
            "numpy",
            {"bytes": nbytes, "measures": f"{BASELINE}.encode_ordinary_batch + numpy T[ids].mean(0), L2-normalise"},
        ),
    ):
        secs = sum(times[impl])
        d = dict(d, seconds=secs)
        if impl in errors:
            d["error"] = errors[impl]
        value = nbytes / secs / 1e6 if secs > 0 and impl not in errors else None
        rows.append(Result("embed_texts", case, impl, value, "MB/s", True, agree if impl == "bytepair" else None, d))
    ctx.advance()
    return rows


register_workload(
    "training",
    _training,
    description="train a BPE (cl100k split) on the corpus: bytepair vs rustbpe vs tokenizers, "
    "time and peak memory; ranks checked against rustbpe's",
    baseline="rustbpe",
    units=lambda ctx: len(_train_cases(ctx)),
)
register_workload(
    "embed_gather",
    _gather,
    description="embeddings: gather + mean of 32 bags x 256 ids vs numpy T[ids].mean(1)",
    baseline="numpy",
    units=lambda ctx: 1,
)
register_workload(
    "embed_topk",
    _topk32,
    description="embeddings: exact cosine top-10 of 32 queries (topk, Index; float16/int8 Index with recall@10) vs numpy, faiss",
    baseline="numpy",
    units=lambda ctx: 1,
)
register_workload(
    "embed_search",
    _search1,
    description="embeddings: one-query top-10, Index float32/float16/int8 (recall@10) vs numpy, faiss",
    baseline="numpy",
    units=lambda ctx: 1,
)
register_workload(
    "embed_texts",
    _embed_texts,
    description="embeddings: embed_texts vs tiktoken encode_ordinary_batch + numpy pool/normalise",
    baseline="numpy",
    units=lambda ctx: 1,
)

WORKLOAD_GROUPS = {
    "tokenizer": ["encode_ordinary", "encode", "count", "batch", "load", "linearity"],
    "embeddings": ["embed_gather", "embed_topk", "embed_search", "embed_texts"],
}
"""Names ``--only`` accepts for several workloads at once."""


def expand_workloads(names: Iterable[str]) -> list[str]:
    """Workload names with group names (:data:`WORKLOAD_GROUPS`) replaced by their members.

    >>> expand_workloads(["training", "embeddings"])[:2]
    ['training', 'embed_gather']
    """
    out: list[str] = []
    for n in names:
        out += WORKLOAD_GROUPS.get(n, [n])
    return list(dict.fromkeys(out))


# ------------------------------------------------------------------------------------ machine info


def _cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    if sys.platform == "darwin":
        with contextlib.suppress(Exception):
            return subprocess.run(
                ["sysctl", "-n", "machdep.cpu.brand_string"],
                capture_output=True,
                text=True,
                check=False,
            ).stdout.strip()
    return platform.processor() or platform.machine()


_DISTRIBUTIONS = {"faiss": "faiss-cpu", "bpe-openai": "bpe-openai"}
_RECORDED_ENV = (
    "OPENBLAS_CORETYPE",
    "OPENBLAS_L2_SIZE",
    "OPENBLAS_NUM_THREADS",
    "OMP_NUM_THREADS",
    "MKL_NUM_THREADS",
    "RAYON_NUM_THREADS",
    "BYTEPAIR_SIMD",
)


def machine_info(modules: dict[str, Any]) -> dict[str, Any]:
    """CPU, cores, OS, Python and the versions of every implementation measured."""
    versions = {}
    for name, module in modules.items():
        version = getattr(module, "__version__", None)
        if version is None:
            with contextlib.suppress(Exception):
                import importlib.metadata

                version = importlib.metadata.version(_DISTRIBUTIONS.get(name, name))
        versions[name] = version
    with contextlib.suppress(ImportError):
        import numpy

        versions["numpy"] = numpy.__version__
    info = {
        "cpu": _cpu_model(),
        "cpus_usable": _cpu_count(),
        "cpus_total": os.cpu_count(),
        "platform": platform.platform(),
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "versions": versions,
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    with contextlib.suppress(OSError, AttributeError):
        info["loadavg_at_start"] = [round(x, 2) for x in os.getloadavg()]
    # Settings that change what numpy's BLAS or bytepair's kernels run (recorded, never changed).
    info["env"] = {k: os.environ[k] for k in _RECORDED_ENV if k in os.environ}
    with contextlib.suppress(Exception):
        import threadpoolctl

        info["threadpools"] = [
            {
                k: i.get(k)
                for k in ("user_api", "internal_api", "version", "architecture", "num_threads", "threading_layer")
            }
            for i in threadpoolctl.threadpool_info()
        ]
    if "numpy" in versions:
        with contextlib.suppress(Exception):
            from bytepair import embed

            info["embed_simd"] = embed.simd_level()
    return info


# ------------------------------------------------------------------------------------------ output


def _ratio(row_base: Result | None, row: Result | None) -> float | None:
    if row_base is None or row is None or not row_base.value or not row.value:
        return None
    if row.higher_is_better:
        return row.value / row_base.value
    return row_base.value / row.value


def _grouped(results: Sequence[Result]) -> list[tuple[str, str, dict[str, Result]]]:
    groups: dict[tuple[str, str], dict[str, Result]] = {}
    for r in results:
        groups.setdefault((r.workload, r.case), {})[r.impl] = r
    return [(w, c, rows) for (w, c), rows in groups.items()]


def _fmt(value: float | None, unit: str) -> str:
    if value is None:
        return "failed"
    if unit == "ms":
        return f"{value:.2f} ms" if value < 10 else f"{value:.1f} ms"
    if unit == "s":
        return f"{value:.2f} s"
    if unit == "MiB":
        return f"{value:.0f} MiB"
    if unit == "x":
        return f"{value:.2f}x"
    return f"{value:.1f}" if value < 100 else f"{value:.0f}"


def _agree_text(rows: dict[str, Result], agrees: list[bool]) -> str:
    if not agrees:
        return "-"
    check = rows["bytepair"].detail.get("check") if "bytepair" in rows else None
    return f"agree ({check})" if check and rows["bytepair"].agree else "agree"


def table_rows(
    results: Sequence[Result], impls: Sequence[str], baselines: dict[str, str]
) -> tuple[list[str], list[list[str]], list[bool]]:
    """Header, cells and a per-row 'has a mismatch' flag for the terminal table."""
    header = ["workload", "case", "unit", *impls, "baseline", "bytepair vs baseline", "outputs"]
    cells, bad = [], []
    for workload, case, rows in _grouped(results):
        any_row = next(iter(rows.values()))
        base = baselines.get(workload, BASELINE)
        ratio = _ratio(rows.get(base), rows.get("bytepair"))
        agrees = [r.agree for r in rows.values() if r.agree is not None]
        # A peer that differs from the baseline is a finding about the peer (riptoken on long
        # pieces, say), shown as such; MISMATCH (in red) is for bytepair's own outputs.
        mismatch = "bytepair" in rows and rows["bytepair"].agree is False
        differ = [i for i, r in rows.items() if r.agree is False and i != "bytepair"]
        if mismatch:
            outputs = "MISMATCH " + ",".join(["bytepair", *differ])
        elif differ:
            outputs = f"{_agree_text(rows, agrees)}; differs: {','.join(differ)}"
        else:
            outputs = _agree_text(rows, agrees)
        unit = any_row.unit + (" (lower better)" if not any_row.higher_is_better else "")
        cells.append(
            [
                workload,
                case,
                unit,
                *[_fmt(rows[i].value, rows[i].unit) if i in rows else "-" for i in impls],
                base if base in rows else "-",
                f"{ratio:.2f}x" if ratio is not None else "-",
                outputs,
            ]
        )
        bad.append(mismatch)
    return header, cells, bad


def render_table(
    results: Sequence[Result],
    impls: Sequence[str],
    baselines: dict[str, str] | None = None,
    *,
    file: Any = None,
    use_rich: bool | None = None,
) -> None:
    """Prints the results as one table (rich when installed and on a terminal, else plain)."""
    file = file or sys.stdout
    header, cells, bad = table_rows(results, impls, baselines or {})
    if use_rich is None:
        use_rich = file.isatty()
    if use_rich:
        try:
            from rich.console import Console
            from rich.table import Table

            table = Table(title="bytepair bench (MB/s = 10^6 bytes of UTF-8 per second)")
            for i, h in enumerate(header):
                table.add_column(h, justify="left" if i < 3 else "right")
            for row, is_bad in zip(cells, bad):
                table.add_row(*row, style="bold red" if is_bad else None)
            Console(file=file).print(table)
            return
        except ImportError:
            pass
    widths = [max(len(h), *(len(r[i]) for r in cells)) if cells else len(h) for i, h in enumerate(header)]

    def line(row: Sequence[str]) -> str:
        return "  ".join(c.ljust(w) if i < 3 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths))).rstrip()

    print(line(header), file=file)
    print("  ".join("-" * w for w in widths), file=file)
    for row in cells:
        print(line(row), file=file)


def write_chart(
    results: Sequence[Result],
    impls: Sequence[str],
    baselines: dict[str, str],
    path: Path,
    title: str,
) -> bool:
    """A horizontal bar chart of each implementation's ratio to the baseline; False without
    matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    groups = _grouped(results)
    # One bar per implementation that ran the case, as a ratio to that case's baseline.
    compared = [i for i in impls if any(i in rows and i != baselines.get(w, BASELINE) for w, _, rows in groups)]
    labels: list[str] = []
    series: dict[str, list[Any]] = {i: [] for i in compared}
    for workload, case, rows in groups:
        base = baselines.get(workload, BASELINE)
        if base not in rows:
            continue
        labels.append(f"{workload}: {case} (vs {base})")
        for impl in compared:
            ratio = _ratio(rows[base], rows[impl]) if impl in rows and impl != base else None
            series[impl].append(None if impl not in rows or impl == base else (ratio or 0.0))
    if not labels:
        return False
    height = max(3.0, 0.32 * len(labels) * max(1, len(compared)) + 1.5)
    fig, ax = plt.subplots(figsize=(11, height))
    bar = 0.8 / max(1, len(compared))
    for k, impl in enumerate(compared):
        ys = [i + k * bar - 0.4 + bar / 2 for i in range(len(labels))]
        present = [(y, v) for y, v in zip(ys, series[impl]) if v is not None]
        if not present:
            continue
        bars = ax.barh([y for y, _ in present], [v for _, v in present], height=bar, label=f"{impl} / baseline")
        for rect, (_, v) in zip(bars, present):
            ax.text(
                rect.get_width(),
                rect.get_y() + rect.get_height() / 2,
                f" {v:.2f}x" if v else " failed",
                va="center",
                fontsize=7,
            )
    ax.axvline(1.0, color="black", linewidth=1, linestyle="--")
    ax.set_yticks(range(len(labels)))
    ax.set_yticklabels(labels, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel(
        "ratio to the case's baseline (tiktoken: tokenizers, rustbpe: training, numpy: "
        "embeddings)\n> 1 is faster (or uses less memory); dashed line = equal"
    )
    ax.set_title(title, fontsize=10)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


# --------------------------------------------------------------------------------------------- run


def run(
    *,
    corpus_paths: Sequence[str] | None = None,
    encodings: Sequence[str] = ("cl100k_base", "o200k_base"),
    out: str | os.PathLike[str] = "bench-out",
    quick: bool = False,
    only: Sequence[str] | None = None,
    peers: Sequence[str] | None = None,
    progress: bool | None = None,
    stdout: Any = None,
    turn_docs: int = TURN_DOCS,
) -> int:
    """Runs the benchmark suite and writes ``results.json`` and ``bench.png`` to ``out``.

    ``turn_docs``: documents each implementation encodes per turn in the throughput workloads
    (16: short turns, every turn starting with another library's data in the caches; 256: about
    1 MB per turn, a tokenizer running by itself).

    Returns the exit status: 0 when every output agreed, 1 on any bytepair mismatch.

    >>> run(quick=True, out="/tmp/bench-out")  # doctest: +SKIP
    0
    """
    stdout = stdout or sys.stdout
    started = time.perf_counter()
    os.environ.setdefault("RUST_BACKTRACE", "0")  # a peer's panic prints one line, not a trace
    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    cache = prepare_tiktoken_cache(out_dir / "tiktoken-cache", encodings)

    cap = 1_000_000 if quick else 4_000_000
    t0 = time.perf_counter()
    corpus = load_corpus(corpus_paths, cap_bytes=cap) if corpus_paths else default_corpus(cap_bytes=cap)
    corpus_seconds = time.perf_counter() - t0

    wanted = set(expand_workloads(only)) if only else None
    selected = [w for name, w in _WORKLOADS.items() if wanted is None or name in wanted]
    if progress is None:
        progress = sys.stderr.isatty()
    bar = _Progress(0, False)
    if turn_docs < 1:
        raise ValueError(f"turn_docs must be at least 1, got {turn_docs}")
    ctx = BenchContext(corpus, encodings, quick=quick, peers=peers, progress=bar, turn_docs=turn_docs)
    total = sum((w.units or (lambda c: len(c.encodings)))(ctx) for w in selected)
    ctx.progress = bar = _Progress(total, progress)
    results: list[Result] = []
    timings: dict[str, float] = {}
    baselines = {w.name: w.baseline for w in selected}
    try:
        for w in selected:
            t = time.perf_counter()
            rows = w.fn(ctx)
            timings[w.name] = round(time.perf_counter() - t, 2)
            # Rows name the workload as displayed; map those to the baseline of their workload.
            for r in rows:
                baselines.setdefault(r.workload, w.baseline)
            results += rows
    finally:
        bar.close()

    # Columns: the implementations that produced a row, tokenizer peers first.
    seen = dict.fromkeys(r.impl for r in results)
    impls = [i for i in ctx.impls if i in seen] + [i for i in seen if i not in ctx.impls]

    info = machine_info({**ctx.modules, **ctx.extra_modules})
    render_table(results, impls, baselines, file=stdout)
    summary = corpus.summary()
    print(
        "\ncorpus: "
        + ", ".join(f"{c} {s['docs']} docs / {s['bytes'] / 1e6:.2f} MB" for c, s in summary.items())
        + ("" if corpus_paths else " (default: this Python's standard library)")
        + f"; throughput rows alternate implementations every {turn_docs} documents",
        file=stdout,
    )
    print(
        f"machine: {info['cpu']}, {info['cpus_usable']} usable CPUs, {info['python']}, "
        + ", ".join(f"{k} {v}" for k, v in info["versions"].items())
        + (f"; embed SIMD {info['embed_simd']}" if "embed_simd" in info else ""),
        file=stdout,
    )
    failures: dict[tuple[str, str, str], list[str]] = {}
    for r in results:
        if r.value is None and "error" in r.detail:
            failures.setdefault((r.impl, r.workload, r.detail["error"]), []).append(r.case)
    for (impl, workload, error), cases in failures.items():
        ctx.notes.append(f"{impl} failed on {workload} ({', '.join(cases)}): {error}")
    coretype = os.environ.get("OPENBLAS_CORETYPE")
    if coretype and "numpy" in seen:
        blas = [t for t in info.get("threadpools", []) if t.get("user_api") == "blas"]
        kernel = ", ".join(f"{t.get('internal_api')} {t.get('architecture')}" for t in blas)
        ctx.notes.append(
            f"OPENBLAS_CORETYPE={coretype} is set (numpy's BLAS kernel: {kernel or 'unknown'}); "
            "it can make numpy slower than its default kernel on this CPU. Left as set; "
            "recorded in results.json (machine.env, machine.threadpools)"
        )
    for note in dict.fromkeys(ctx.notes):
        print(f"note: {note}", file=stdout)

    bytepair_bad = [m for m in ctx.mismatches if m.impl == "bytepair"]
    peer_bad = [m for m in ctx.mismatches if m.impl != "bytepair"]
    for m in peer_bad:
        print(
            f"note: peer {m.impl} differs from {baselines.get(m.workload, BASELINE)} on "
            f"{m.workload} {m.case}: {m.what}",
            file=stdout,
        )
    for m in bytepair_bad:
        print(
            f"MISMATCH: bytepair != {baselines.get(m.workload, BASELINE)} on {m.workload} {m.case}: {m.what}",
            file=sys.stderr,
        )

    payload = {
        "command": ["bytepair", "bench", *sys.argv[2:]] if sys.argv[1:2] == ["bench"] else sys.argv,
        "machine": info,
        "config": {
            "encodings": list(encodings),
            "quick": quick,
            "doc_bytes": DOC_BYTES,
            "turn_docs": turn_docs,
            "cap_bytes_per_category": cap,
            "workloads": [w.name for w in selected],
            "baselines": baselines,
            "tiktoken_cache_dir": str(cache),
            "MB": "10^6 bytes of UTF-8",
        },
        "corpus": summary,
        "descriptions": {w.name: w.description for w in selected},
        "results": [asdict(r) for r in results],
        "ratios": [
            {
                "workload": w,
                "case": c,
                "baseline": baselines.get(w, BASELINE),
                **{
                    f"{impl}/{baselines.get(w, BASELINE)}": _ratio(rows.get(baselines.get(w, BASELINE)), rows[impl])
                    for impl in rows
                    if impl != baselines.get(w, BASELINE)
                },
            }
            for w, c, rows in _grouped(results)
        ],
        "mismatches": [asdict(m) for m in ctx.mismatches],
        "notes": list(dict.fromkeys(ctx.notes)),
        "ok": not bytepair_bad,
        "seconds": {
            "corpus": round(corpus_seconds, 2),
            **timings,
            "total": round(time.perf_counter() - started, 2),
        },
    }
    json_path = out_dir / "results.json"
    json_path.write_text(json.dumps(payload, indent=2, ensure_ascii=False) + "\n")
    png_path = out_dir / "bench.png"
    title = (
        f"bytepair {info['versions'].get('bytepair')} vs tiktoken {info['versions'].get('tiktoken')}"
        f" - {info['cpu']}, {info['cpus_usable']} CPUs"
    )
    if write_chart(results, impls, baselines, png_path, title):
        print(f"wrote {json_path} and {png_path}", file=stdout)
    else:
        print(
            f"wrote {json_path}; no chart: matplotlib is not installed "
            "(pip install matplotlib, or pip install 'bytepair[bench]')",
            file=stdout,
        )
    if bytepair_bad:
        print(
            f"MISMATCH: {len(bytepair_bad)} case(s) where bytepair's output differs from "
            "the baseline's; see above and "
            f"{json_path}",
            file=sys.stderr,
        )
        return 1
    return 0
