"""Corpus to token shards, and corpus token counts: the engine of ``bytepair encode`` / ``count``.

Reading, decoding and encoding run in Rust: one thread reads (files, ``.gz``/``.zst``, JSON
lines), the others encode batches of documents in parallel, and the results are written in
input order, so memory stays bounded by a few batches plus the largest single document.

**Shard layout.** ``out/shard_00000.npy``, ``shard_00001.npy``, ...: numpy ``.npy`` files, 1-D,
``uint16`` when every id of the encoding fits in 16 bits (else ``uint32``). Each document's tokens
are followed by the encoding's end-of-text token, documents in input order. Shard ``k`` holds
documents ``k*D`` to ``(k+1)*D - 1`` (``D = docs_per_shard``), a plan known before anything is
encoded: it is what makes runs resumable and lets :mod:`bytepair.distributed` write any range of
shards on its own, byte for byte the same.

**Resuming.** Each shard is written under a temporary name and renamed once complete; then
``out/manifest.json`` (settings, inputs, and the documents and tokens of each completed shard) is
rewritten atomically. Running the same command again on the same ``out`` continues after the
last completed shard (the documents before it are read but not encoded); a shard that was
being written is started over. A finished run is not redone.

A *document* is a ``.txt`` file (read whole) or a non-blank line of a ``.jsonl`` file whose
``text`` field is a string. With ``on_error="skip"``, bad JSON lines, lines without the field,
unreadable files and files that are not UTF-8 are skipped (and reported); with ``"fail"`` the
first one raises ``ValueError``/``OSError`` naming the file and line.

>>> import bytepair.corpus as corpus
>>> corpus.encode_to_shards(["data/"], encoding="cl100k_base", out="shards")["documents"]  # doctest: +SKIP
1200
>>> corpus.count_files(["data/a.jsonl"], encoding="cl100k_base")  # doctest: +SKIP
{'data/a.jsonl': 51234}
"""

from __future__ import annotations

import contextlib
import errno
import json
import operator
import os
import re
import sys
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, Union

from bytepair import _native

__all__ = ["DEFAULT_DOCS_PER_SHARD", "MANIFEST", "count_files", "encode_to_shards", "read_shards"]

#: Documents per shard by default: about 100M tokens (200 MB as uint16) for web-page-sized
#: documents of ~1k tokens.
DEFAULT_DOCS_PER_SHARD = 100_000
#: The manifest's file name, inside the output directory.
MANIFEST = "manifest.json"

PathLike = Union[str, "os.PathLike[str]"]
_SHARD_RE = re.compile(r"^shard_(\d{5,})\.npy(\.tmp)?$")
_SURROGATE = re.compile("[\ud800-\udfff]")


class ShardsError(ValueError):
    """The output directory holds shards of a different run (and ``overwrite`` was not given)."""


def _encoding(encoding: Any) -> Any:
    """An Encoding from a name, a saved-encoding directory, or an Encoding."""
    import bytepair

    if isinstance(encoding, (str, os.PathLike)):
        s = os.fspath(encoding)
        if s in bytepair.list_encoding_names():
            return bytepair.get_encoding(s)
        if os.path.exists(s):
            return bytepair.load(s)
        return bytepair.get_encoding(s)  # raises the registry's error for unknown names
    if not isinstance(getattr(encoding, "_core_bpe", None), _native.CoreBPE):
        raise TypeError(
            "encoding must be an encoding name, a saved encoding directory or a "
            f"bytepair.Encoding, not {type(encoding).__name__}"
        )
    return encoding


def _eot(enc: Any, eot_token: int | None) -> int:
    if eot_token is not None:
        eot = operator.index(eot_token)
        # A bool is an int to operator.index, but never meant as an id.
        if isinstance(eot_token, bool) or not 0 <= eot < 1 << 32:
            raise ValueError(f"eot_token must be a token id from 0 to 2**32 - 1, not {eot_token!r}")
        return eot
    eot = enc._special_tokens.get("<|endoftext|>")
    if eot is None:
        raise ValueError(f"encoding {enc.name!r} has no <|endoftext|> token; pass eot_token (--eot-token)")
    return int(eot)


def _is_parquet(path: str) -> bool:
    from bytepair.train import _is_parquet as f

    return f(path)


def _expand(paths: PathLike | Iterable[PathLike], output: PathLike | None = None) -> list[str]:
    """The input files that ``paths`` name (directories and globs expanded), leaving out any
    under ``output``, the directory the same run writes: ``encode data -o data/shards`` or
    ``train data -o data/tok`` run twice must not read their own output as input."""
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    names = [os.fspath(p) for p in paths]
    if not names:
        raise ValueError("no input files given")
    from bytepair.train import _expand_paths

    files = _expand_paths(names)
    if output is not None and files:
        kept = _outside(files, output)
        if not kept:
            raise ValueError(f"every input file is inside the output directory {os.fspath(output)}")
        files = kept
    if not files:
        raise ValueError(f"no input files under {', '.join(names)}")
    return files


def _outside(files: list[str], directory: PathLike) -> list[str]:
    """``files`` without those inside ``directory`` (compared with links resolved, one
    ``realpath`` per distinct parent directory)."""
    if not os.path.isdir(directory):
        return files
    inside = os.path.join(os.path.realpath(directory), "")
    real_dirs: dict[str, str] = {}

    def real_dir(f: str) -> str:
        d = os.path.dirname(os.path.abspath(f))
        if d not in real_dirs:
            real_dirs[d] = os.path.join(os.path.realpath(d), "")
        return real_dirs[d]

    return [f for f in files if not real_dir(f).startswith(inside)]


def _check_args(on_error: Any, field: Any, num_threads: Any) -> None:
    """The reading arguments, checked before any work or output (as :func:`bytepair.train`
    does): a ``ValueError`` or ``TypeError`` naming the parameter."""
    from bytepair.train import _check_count_args

    _check_count_args(num_threads, None, on_error, field)


def _check_positive(name: str, value: Any) -> None:
    """``value`` (docs_per_shard, shards_per_task) is a positive int below 2**64, what the native
    side takes: checked before any file is touched."""
    if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value < 1 << 64:
        raise ValueError(f"{name} must be a positive int below 2**64, got {value!r}")


def _shard_bytes(entry: dict[str, Any], dtype: str) -> int:
    """The size of the shard file a manifest entry lists (a 128-byte .npy header, then tokens)."""
    return 128 + entry["tokens"] * (2 if dtype == "uint16" else 4)


def _need_pyarrow(files: Sequence[str]) -> None:
    """An ``ImportError`` before any work when ``files`` hold parquet files and pyarrow is not
    installed."""
    if any(_is_parquet(f) for f in files):
        try:
            import pyarrow.parquet  # noqa: F401
        except ImportError as e:
            raise ImportError("reading .parquet files needs pyarrow (pip install pyarrow)") from e


class _Bar:
    """A tqdm bar over input bytes (throughput and ETA), with documents and tokens."""

    def __init__(self, enabled: bool | None, desc: str) -> None:
        if enabled is None:
            enabled = bool(getattr(sys.stderr, "isatty", lambda: False)())
        self.bar: Any = None
        self.desc = desc
        self.enabled = enabled

    def update(self, done: int, total: int, docs: int, tokens: int) -> None:
        if not self.enabled:
            return
        if self.bar is None:
            try:
                from tqdm.auto import tqdm
            except ImportError:  # pragma: no cover - tqdm is optional
                self.enabled = False
                return
            self.bar = tqdm(
                total=total or None,
                unit="B",
                unit_scale=True,
                unit_divisor=1024,
                desc=self.desc,
                dynamic_ncols=True,
                file=sys.stderr,
            )
        self.bar.set_postfix_str(f"{docs:,} docs, {tokens:,} tokens", refresh=False)
        self.bar.update(done - self.bar.n)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


# ------------------------------------------------------------------------------------------------
# The manifest


def _settings(
    enc: Any, eot: int, files: Sequence[str], docs_per_shard: int, on_error: str, field: str
) -> dict[str, Any]:
    max_token = max(enc.max_token_value, eot)
    return {
        "format": "bytepair-shards",
        "version": 1,
        "encoding": enc.name,
        "encoding_sha256": _encoding_id(enc),
        "n_vocab": enc.n_vocab,
        "eot_token": eot,
        "dtype": "uint16" if max_token < 65536 else "uint32",
        "docs_per_shard": docs_per_shard,
        "on_error": on_error,
        "field": field,
        "inputs": list(files),
        "input_bytes": [os.path.getsize(f) if os.path.exists(f) else None for f in files],
        # A file edited in place (same size) is another input too.
        "input_mtime_ns": [os.stat(f).st_mtime_ns if os.path.exists(f) else None for f in files],
    }


def _encoding_id(enc: Any) -> str:
    """What identifies ``enc``'s tokens: a built-in encoding's name, or else the SHA-256 of its
    pattern, special tokens and ranks (two trained encodings may share a name and a size)."""
    import hashlib

    from bytepair import registry

    builtin = registry.ENCODINGS.get(enc.name)
    if builtin is not None and builtin is enc:
        return f"built-in {builtin.name}"
    h = hashlib.sha256()

    def text(b: bytes) -> None:
        h.update(len(b).to_bytes(8, "little"))
        h.update(b)

    text(enc._pat_str.encode("utf-8", "surrogatepass"))
    for special, rank in sorted(enc._special_tokens.items()):
        text(special.encode("utf-8", "surrogatepass"))
        h.update(rank.to_bytes(8, "little"))
    for token, rank in sorted(enc._mergeable_ranks.items(), key=lambda kv: kv[1]):
        text(token)
        h.update(rank.to_bytes(8, "little"))
    return h.hexdigest()


_SETTING_KEYS = (
    "format",
    "version",
    "encoding",
    "encoding_sha256",
    "n_vocab",
    "eot_token",
    "dtype",
    "docs_per_shard",
    "on_error",
    "field",
    "inputs",
    "input_bytes",
    "input_mtime_ns",
)


def _write_json(path: Path, obj: Any) -> None:
    """Writes ``path`` atomically: a temporary file, then a rename. Interrupted (Ctrl-C lands
    anywhere), the old file stays as it was and the temporary file is removed."""
    tmp = path.with_name(path.name + ".tmp")
    # File names that are not UTF-8 hold lone surrogates (os.fsdecode): written as JSON escapes,
    # they read back as the same strings.
    text = _SURROGATE.sub(lambda m: f"\\u{ord(m.group()):04x}", json.dumps(obj, indent=1, ensure_ascii=False))
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _read_manifest(out: Path) -> dict[str, Any] | None:
    p = out / MANIFEST
    if not p.exists():
        return None
    try:
        m = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise ShardsError(f"{p}: unreadable manifest ({e}); use overwrite=True to start over") from None
    if not isinstance(m, dict) or m.get("format") != "bytepair-shards":
        raise ShardsError(f"{p}: not a bytepair shards manifest; use overwrite=True to start over")
    shards = m.get("shards", [])

    def count(v: Any) -> bool:
        return isinstance(v, int) and not isinstance(v, bool) and v >= 0

    bad = not isinstance(shards, list) or not all(
        isinstance(e, dict)
        and isinstance(e.get("file"), str)
        and _SHARD_RE.match(e["file"]) is not None
        and not e["file"].endswith(".tmp")
        and count(e.get("documents"))
        and count(e.get("tokens"))
        for e in shards
    )
    if bad:
        raise ShardsError(
            f"{p}: damaged manifest (its list of shards is not as written); use overwrite=True to start over"
        )
    return m


def _shard_files(out: Path) -> list[tuple[int, Path]]:
    found = []
    for p in out.iterdir() if out.is_dir() else ():
        m = _SHARD_RE.match(p.name)
        if m:
            found.append((int(m.group(1)) if not m.group(2) else -1, p))
    return found


def _finish_manifest(manifest: dict[str, Any]) -> dict[str, Any]:
    manifest["complete"] = True
    manifest["documents"] = sum(s["documents"] for s in manifest["shards"])
    manifest["tokens"] = sum(s["tokens"] for s in manifest["shards"])
    return manifest


def _prepare(out: Path, settings: dict[str, Any], overwrite: bool, resume: bool) -> dict[str, Any]:
    """The manifest to continue from: the existing one when it matches, else a fresh one; removes
    unfinished and uncommitted shard files."""
    out.mkdir(parents=True, exist_ok=True)
    old = None if overwrite else _read_manifest(out)
    unrecorded = False  # shard files there belong to the run of a manifest that lists none
    if old is not None and not old.get("shards"):
        # A run that recorded no shard (it failed on its input, or was stopped, before the first
        # one was complete) left nothing to keep: the directory counts as empty, for any run.
        # Only the same run, resuming, goes on from it (one that finished stays finished).
        if not resume or any(old.get(k) != settings[k] for k in _SETTING_KEYS):
            old, unrecorded = None, True
    if old is not None:
        differs = [k for k in _SETTING_KEYS if old.get(k) != settings[k]]
        if differs:
            raise ShardsError(
                f"{out} holds shards of a different run ({', '.join(differs)} differ); "
                "use another output directory or overwrite"
            )
        if not resume:
            raise ShardsError(f"{out} holds shards of an earlier run; resume or overwrite")
        shards = old.get("shards", [])
        for s in shards:
            p = out / s["file"]
            if not p.is_file() or p.stat().st_size != _shard_bytes(s, settings["dtype"]):
                raise ShardsError(
                    f"{p}: missing or of the wrong size; the output directory was "
                    "changed since the run; overwrite to start over"
                )
        manifest = old
    else:
        existing = [p for _, p in _shard_files(out)]
        if existing and not overwrite and not unrecorded:
            raise ShardsError(
                f"{out} already holds shard files but no {MANIFEST}; use another output directory or overwrite"
            )
        manifest = dict(settings, complete=False, shards=[])
    committed = len(manifest["shards"])
    for index, p in _shard_files(out):
        if index < 0 or index >= committed:
            p.unlink()
    if overwrite and (out / MANIFEST).exists() and old is None:
        (out / MANIFEST).unlink()
    return manifest


def _test_hook(n_committed: int, stage: str) -> None:
    """For the tests: ``_BYTEPAIR_TEST_KILL=N:stage`` kills this process with SIGKILL when shard
    ``N`` (1-based count) is renamed (stage ``renamed``) or recorded (stage ``recorded``);
    ``_BYTEPAIR_TEST_PAUSE=SECONDS`` sleeps after recording each shard (time to send SIGINT)."""
    pause = os.environ.get("_BYTEPAIR_TEST_PAUSE")
    if pause and stage == "recorded":
        import time

        time.sleep(float(pause))
    spec = os.environ.get("_BYTEPAIR_TEST_KILL")
    if spec:
        n, _, at = spec.partition(":")
        if int(n) == n_committed and (at or "recorded") == stage:
            import signal

            os.kill(os.getpid(), signal.SIGKILL)


# ------------------------------------------------------------------------------------------------
# Public API


def encode_to_shards(
    paths: PathLike | Iterable[PathLike],
    *,
    encoding: Any,
    out: PathLike,
    docs_per_shard: int = DEFAULT_DOCS_PER_SHARD,
    on_error: str = "fail",
    field: str = "text",
    num_threads: int | None = None,
    progress: bool | None = None,
    resume: bool = True,
    overwrite: bool = False,
    eot_token: int | None = None,
) -> dict[str, Any]:
    """Encodes a corpus into token shards ``out/shard_00000.npy``, ... and returns the manifest
    (a dict: settings, ``shards`` with the documents and tokens of each, totals; also written to
    ``out/manifest.json``).

    ``paths``: files, directories, globs (``.txt`` = one document per file, ``.jsonl`` with a
    ``text`` field, ``.parquet`` with a ``text`` column through pyarrow, nulls left out,
    ``.gz``/``.zst`` variants); files under ``out`` are never inputs, so
    ``encode_to_shards(["data"], out="data/shards")`` can run again. ``encoding``: a built-in
    name, a directory written by ``Encoding.save``, or an ``Encoding``. Each document's tokens
    (``encode_ordinary``) are followed by ``eot_token`` (default: the encoding's
    ``<|endoftext|>``; any id below 2**32 is taken, also one the encoding does not have, such as
    its ``n_vocab`` for a trained encoding without ``<|endoftext|>``). Shard ``k`` holds
    documents ``k*docs_per_shard`` onwards.

    A run interrupted (Ctrl-C, a crash, a killed job) resumes when called again with the same
    arguments (``resume=True``, the default): complete shards are kept, the rest is redone, and
    the result is byte for byte that of an uninterrupted run. An ``out`` that holds shards of a
    different run is an error unless ``overwrite=True`` (which deletes them); one whose manifest
    lists no shard (a run that failed before its first shard was complete) counts as empty.

    >>> m = encode_to_shards(["corpus.jsonl"], encoding="cl100k_base", out="shards")  # doctest: +SKIP
    >>> import numpy as np; np.load("shards/shard_00000.npy")[:3]                      # doctest: +SKIP
    array([9906, 1917,   13], dtype=uint16)
    """
    enc = _encoding(encoding)
    eot = _eot(enc, eot_token)
    _check_args(on_error, field, num_threads)
    _check_positive("docs_per_shard", docs_per_shard)
    files = _expand(paths, output=out)
    _need_pyarrow(files)
    out = Path(out)
    settings = _settings(enc, eot, files, docs_per_shard, on_error, field)
    manifest = _prepare(out, settings, overwrite, resume)
    if manifest.get("complete"):
        return manifest
    _write_json(out / MANIFEST, manifest)
    with _parquet_as_jsonl(files, field, on_error, out) as (inputs, parquet_errors):
        committed = manifest["shards"]
        bar = _Bar(progress, "encoding")

        def callback(kind: str, *a: Any) -> None:
            if kind == "progress":
                bar.update(*a)
            else:
                _index, name, docs, tokens = a
                _test_hook(len(committed) + 1, "renamed")
                committed.append({"file": name, "documents": docs, "tokens": tokens})
                _write_json(out / MANIFEST, manifest)
                _test_hook(len(committed), "recorded")

        try:
            summary = _native._encode_shards(
                enc._core_bpe,
                inputs,
                str(out),
                eot=eot,
                docs_per_shard=docs_per_shard,
                skip_docs=len(committed) * docs_per_shard,
                first_shard=len(committed),
                on_error=on_error,
                field=field,
                num_threads=num_threads,
                callback=callback,
            )
        finally:
            bar.close()
        _finish_manifest(manifest)
        _write_json(out / MANIFEST, manifest)
        manifest = dict(manifest)
        manifest["skipped"] = summary["skipped"] + len(parquet_errors)
        manifest["errors"] = _in_file_order(parquet_errors + summary["errors"], files)
        return manifest


PARQUET_COPIES = ".parquet-text"


def _in_file_order(errors: list[str], files: list[str]) -> list[str]:
    """``errors`` ordered by the input file each names (the parquet ones are found first, while
    their copies are made; a message naming no input stays last, in its order)."""
    from bytepair.train import _display

    names = [(_display(f), i) for i, f in enumerate(files)]

    def position(msg: str) -> int:
        hits = [(len(name), i) for name, i in names if msg.startswith(name + ":")]
        return max(hits)[1] if hits else len(files)

    return sorted(errors, key=position)


@contextlib.contextmanager
def _parquet_as_jsonl(files: list[str], field: str, on_error: str, out: Path) -> Iterator[tuple[list[str], list[str]]]:
    """``files`` with each parquet file replaced by a temporary JSON-lines copy of its ``field``
    column (nulls left out, as :func:`bytepair.train` does), for the native reader, which reads
    text, JSON lines and their compressed forms only; and the messages of the files skipped
    (``on_error="skip"``: one that cannot be read, lacks the column or holds invalid UTF-8 gives
    no documents). The copies live in the hidden folder ``out/.parquet-text`` and are removed
    afterwards, and by the next run when a killed one left them."""
    import shutil

    tmp = out / PARQUET_COPIES
    shutil.rmtree(tmp, ignore_errors=True)
    parquet = [i for i, f in enumerate(files) if _is_parquet(f)]
    if not parquet:
        yield files, []
        return
    tmp.mkdir()
    try:
        inputs, errors = list(files), []
        for i in parquet:
            inputs[i] = path = str(tmp / f"{i}.jsonl")
            skipped: list[str] = []
            with open(path, "w", encoding="utf-8") as w:
                for text in _parquet_texts(files[i], field, on_error, skipped):
                    w.write(json.dumps({field: text}, ensure_ascii=False))
                    w.write("\n")
                if skipped:
                    w.seek(0)
                    w.truncate()
            errors.extend(skipped)
        yield inputs, errors
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def count_files(
    paths: PathLike | Iterable[PathLike],
    *,
    encoding: Any,
    on_error: str = "fail",
    field: str = "text",
    num_threads: int | None = None,
    progress: bool | None = None,
    errors: list[str] | None = None,
) -> dict[str, int]:
    """Token counts per file: for each file (after expanding directories and globs), the sum over
    its documents of ``len(encoding.encode_ordinary(doc))``. A file named more than once (twice,
    or by a directory and by its own name) is counted once, under the name first seen. Parquet
    files (``text`` column) are read through pyarrow. With ``on_error="skip"``, bad inputs are
    skipped; pass a list as ``errors`` to receive their messages.

    >>> count_files(["a.txt", "b.jsonl"], encoding="cl100k_base")  # doctest: +SKIP
    {'a.txt': 1021, 'b.jsonl': 88410}
    """
    enc = _encoding(encoding)
    _check_args(on_error, field, num_threads)
    files = _unique(_expand(paths))
    _need_pyarrow(files)
    native = [f for f in files if not _is_parquet(f)]
    bar = _Bar(progress, "counting")
    try:
        s = _native._count_tokens(
            enc._core_bpe,
            native,
            on_error=on_error,
            field=field,
            num_threads=num_threads,
            callback=lambda _k, *a: bar.update(*a),
        )
    finally:
        bar.close()
    per = dict(zip(native, s["per_file"]))
    if errors is not None:
        errors.extend(s["errors"])
    return {f: per[f] if f in per else _count_parquet(enc, f, field, on_error, errors) for f in files}


def _unique(files: list[str]) -> list[str]:
    """``files`` without repeats (a file named twice, or a directory and a file in it), in the
    order first seen; the same file is the same resolved path."""
    seen: set[str] = set()
    out = []
    for f in files:
        key = os.path.realpath(f)
        if key not in seen:
            seen.add(key)
            out.append(f)
    return out


def _parquet_texts(path: str, field: str, on_error: str, skipped: list[str]) -> Iterator[str]:
    """The documents of the parquet file ``path`` as ``str`` (a binary column decoded as UTF-8).
    A file that cannot be read, or holds invalid UTF-8, raises ``ValueError``/``OSError``
    (``on_error="fail"``) or ends early with its message added to ``skipped``: the caller then
    drops what it got from the file."""
    from bytepair.train import _display, _parquet_documents

    try:
        for doc in _parquet_documents([path], field, on_error, skipped):
            yield doc.decode("utf-8") if isinstance(doc, bytes) else doc
    except UnicodeDecodeError as e:
        msg = f"{_display(path)}: invalid UTF-8 in column {field!r}: {e.reason}"
        if on_error == "fail":
            raise ValueError(msg) from None
        skipped.append(msg)


def _count_parquet(enc: Any, path: str, field: str, on_error: str, errors: list[str] | None) -> int:
    n = 0
    batch: list[str] = []
    skipped: list[str] = []
    for doc in _parquet_texts(path, field, on_error, skipped):
        batch.append(doc)
        if len(batch) >= 4096:
            n += sum(enc.count_batch(batch, disallowed_special=()))
            batch.clear()
    if batch:
        n += sum(enc.count_batch(batch, disallowed_special=()))
    if skipped:
        if errors is not None:
            errors.extend(skipped)
        return 0
    return n


def read_shards(out: PathLike) -> list[Any]:
    """The shards of ``out`` (a directory written by :func:`encode_to_shards`) as numpy arrays,
    memory-mapped, in order: those its ``manifest.json`` lists, each checked for its size. A
    missing directory is ``FileNotFoundError``; a directory without a manifest, a run that is
    not complete (resume it first) or a shard missing, cut or changed is a :class:`ShardsError`
    naming the file.

    >>> sum(len(a) for a in read_shards("shards"))  # doctest: +SKIP
    123456
    """
    import numpy as np

    out = Path(out)
    if not out.exists():
        raise FileNotFoundError(errno.ENOENT, "no such directory", str(out))
    if not out.is_dir():
        raise NotADirectoryError(errno.ENOTDIR, "not a directory of shards", str(out))
    m = _read_manifest(out)
    if m is None:
        raise ShardsError(f"{out}: no {MANIFEST}; not a directory written by encode_to_shards")
    if not m.get("complete"):
        raise ShardsError(f"{out}: the run that writes these shards is not complete; run it again to resume")
    arrays = []
    for entry in m["shards"]:
        p = out / entry["file"]
        if not p.is_file() or p.stat().st_size != _shard_bytes(entry, m.get("dtype", "uint16")):
            raise ShardsError(f"{p}: missing or of the wrong size; the directory was changed after the run")
        try:
            a = np.load(p, mmap_mode="r")
        except (OSError, ValueError, EOFError) as e:
            raise ShardsError(f"{p}: not a shard ({e})") from e
        if a.shape != (entry["tokens"],) or a.dtype != np.dtype(m.get("dtype", "uint16")):
            raise ShardsError(f"{p}: holds {a.dtype} {a.shape}, not what the manifest lists")
        arrays.append(a)
    return arrays
