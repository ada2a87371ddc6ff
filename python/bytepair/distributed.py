"""Corpus counting, training and encoding on a Dask cluster (``pip install 'bytepair[dask]'``).

How the work splits:

- :func:`count_words`: the files are cut into tasks of about ``task_bytes`` each (consecutive
  files, in order). Each task counts its files natively (the same Rust reader and counter as
  :class:`bytepair.WordCounts`) and returns a ``WordCounts``, which travels as a compact binary
  blob (sorted, prefix-coded words and varint counts; see the README for the measured size per
  distinct word). The partial counts are summed in a tree (``split_every`` at a time), so the
  driver only ever receives the final one. Sums are exact and order-free, so the result is
  bit-identical to counting on one machine.
- :func:`train`: :func:`count_words` on the cluster, then the merge loop on the driver
  (:func:`bytepair.train_from_counts`): the merges equal those of ``bytepair.train`` on the same
  files.
- :func:`encode_to_shards`: the shard plan of ``bytepair encode`` (shard ``k`` = documents
  ``k*D .. (k+1)*D-1``) needs each file's number of documents: one cheap pass (reading and
  parsing, no encoding) counts them per task, then each task encodes and writes its own range of
  shards. Shards are written under a temporary name and renamed when complete, so a retried task
  simply writes the same bytes again. The result (shards and ``manifest.json``) is byte for byte
  what ``bytepair encode`` writes.

Dask retries the tasks of a worker that dies; since every task is a pure function of its
inputs, a killed worker changes nothing in the result. The input paths must be readable from
every worker (a shared file system), and for :func:`encode_to_shards` ``out`` must be too.

Without a ``client``, a ``LocalCluster`` (2 worker processes, 1 thread each, on 127.0.0.1) is
started and closed around the call.

>>> from bytepair import distributed                                      # doctest: +SKIP
>>> counts = distributed.count_words(["corpus/"], pattern="cl100k_base")   # doctest: +SKIP
>>> enc = distributed.train(["corpus/"], vocab_size=32768)                 # doctest: +SKIP
"""

from __future__ import annotations

import bisect
import contextlib
import os
import time
import warnings
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, Union

from bytepair import _native

__all__ = ["count_words", "encode_to_shards", "local_client", "train"]

PathLike = Union[str, "os.PathLike[str]"]

#: Input bytes per task by default (consecutive files are grouped up to about this size).
DEFAULT_TASK_BYTES = 64 << 20


def _dask() -> Any:
    try:
        import dask
        import dask.bag  # noqa: F401
        import distributed
    except ImportError as e:
        raise ImportError("bytepair.distributed needs Dask: pip install 'bytepair[dask]'") from e
    return distributed


@contextlib.contextmanager
def local_client(n_workers: int = 2, threads_per_worker: int = 1, **kwargs: Any) -> Iterator[Any]:
    """A ``Client`` on a fresh ``LocalCluster`` of worker processes on 127.0.0.1 (no dashboard),
    closed on exit. Keyword arguments go to ``LocalCluster``; with ``processes=False`` the
    workers are threads of this process, reached in-process rather than over 127.0.0.1.

    >>> with local_client() as client:               # doctest: +SKIP
    ...     counts = count_words(["corpus/"], pattern="cl100k_base", client=client)
    """
    distributed = _dask()
    opts: dict[str, Any] = {
        "n_workers": n_workers,
        "threads_per_worker": threads_per_worker,
        "processes": True,
        "dashboard_address": None,
    }
    opts.update(kwargs)
    if opts["processes"]:
        opts.setdefault("host", "127.0.0.1")
    with distributed.LocalCluster(**opts) as cluster, distributed.Client(cluster) as client:
        yield client


@contextlib.contextmanager
def _using(client: Any) -> Iterator[Any]:
    if client is not None:
        yield client
    else:
        with local_client() as c:
            yield c


def _group_files(files: Sequence[str], task_bytes: int) -> list[list[str]]:
    """Consecutive files, grouped up to about ``task_bytes`` of input each (at least one file)."""
    groups: list[list[str]] = []
    cur: list[str] = []
    size = 0
    for f in files:
        try:
            n = os.path.getsize(f)
        except OSError:
            n = 0
        if cur and size + n > task_bytes:
            groups.append(cur)
            cur, size = [], 0
        cur.append(f)
        size += n
    if cur:
        groups.append(cur)
    return groups


def _test_delay() -> None:
    """For the tests: ``_BYTEPAIR_TEST_TASK_DELAY=SECONDS`` slows every task down (time to kill a
    worker while tasks run)."""
    d = os.environ.get("_BYTEPAIR_TEST_TASK_DELAY")
    if d:
        time.sleep(float(d))


# ------------------------------------------------------------------------------------------------
# Counting


def _count_group(
    groups: Iterable[list[str]], pattern: str, specials: list[str], on_error: str, field: str, num_threads: int | None
) -> tuple[Any, int, list[str]]:
    from bytepair.train import WordCounts

    _test_delay()
    wc = WordCounts(pattern=pattern, special_tokens=specials)
    skipped, errors = 0, list[str]()
    for files in groups:
        # The skipped inputs' messages come back as values: warnings (process-wide state) would
        # mix up tasks running at once on a worker's threads.
        skipped += wc._update(
            [Path(f) for f in files],
            num_threads=num_threads,
            max_memory=None,
            progress=False,
            on_error=on_error,
            field=field,
            errors_out=errors,
        )
    return wc, skipped, errors[:20]


def _count_docs(
    docs: Iterable[Any], pattern: str, specials: list[str], num_threads: int | None
) -> tuple[Any, int, list[str]]:
    from bytepair.train import WordCounts

    _test_delay()
    wc = WordCounts(pattern=pattern, special_tokens=specials)
    wc.update(list(docs), num_threads=num_threads, progress=False)
    return wc, 0, []


def _sum_counts(parts: Iterable[tuple[Any, int, list[str]]]) -> tuple[Any, int, list[str]]:
    it = iter(parts)
    total, skipped, errors = next(it)
    for wc, s, e in it:
        total.merge(wc)
        skipped += s
        errors = (errors + e)[:20]
    return total, skipped, errors


def count_words(
    paths_or_bag: Any,
    *,
    pattern: str = "cl100k_base",
    special_tokens: Sequence[str] | None = None,
    on_error: str = "fail",
    field: str = "text",
    client: Any = None,
    task_bytes: int = DEFAULT_TASK_BYTES,
    split_every: int = 4,
    num_threads: int | None = None,
) -> Any:
    """Counts the words of a corpus on a Dask cluster; returns a :class:`bytepair.WordCounts`
    equal (bit for bit: ``==`` and ``to_bytes()``) to ``WordCounts(paths, pattern=...)`` on one
    machine.

    ``paths_or_bag``: a path or list of paths (files, directories, globs; as
    :func:`bytepair.train`), read by the workers, or a ``dask.bag.Bag`` of ``str``/``bytes``
    documents (counted per partition). ``on_error="skip"`` skips bad inputs (a warning lists the
    first few); ``"fail"`` raises the first, naming its file and line. ``num_threads`` is per
    task (default: one per core of the worker).

    >>> wc = count_words(["corpus/"], pattern="cl100k_base")  # doctest: +SKIP
    >>> wc.most_common(1)                                     # doctest: +SKIP
    [(b' the', 1234567)]
    """
    _dask()
    import dask.bag as db

    from bytepair.corpus import _check_args, _expand
    from bytepair.train import WordCounts, _specials

    _check_args(on_error, field, num_threads)
    if not isinstance(split_every, int) or isinstance(split_every, bool) or split_every < 2:
        raise ValueError(f"split_every must be an int of at least 2, got {split_every!r}")
    specials = _specials(special_tokens)
    pattern = _native._resolve_pattern(pattern)
    if isinstance(paths_or_bag, db.Bag):
        red = paths_or_bag.reduction(
            lambda docs: _count_docs(docs, pattern, specials, num_threads), _sum_counts, split_every=split_every
        )
    else:
        files = _expand(paths_or_bag)
        groups = _group_files(files, task_bytes)
        bag = db.from_sequence(groups, npartitions=len(groups))
        red = bag.reduction(
            lambda gs: _count_group(gs, pattern, specials, on_error, field, num_threads),
            _sum_counts,
            split_every=split_every,
        )
    with _using(client) as c:
        wc, skipped, errors = c.compute(red).result()
    if skipped:
        # As bytepair.WordCounts words it, the first messages in input order.
        warnings.warn(f"skipped {skipped} bad input(s): {'; '.join(errors[:3])}", stacklevel=2)
    # The result is a plain WordCounts of this process, whatever class came back.
    out = WordCounts(pattern=pattern, special_tokens=specials)
    out._load_bytes(wc.to_bytes())
    return out


def train(
    paths: Any,
    *,
    vocab_size: int,
    pattern: str = "cl100k_base",
    special_tokens: Sequence[str] | None = None,
    min_frequency: int = 1,
    max_token_length: int | None = None,
    num_threads: int | None = None,
    progress: bool | None = None,
    name: str = "trained",
    on_error: str = "fail",
    client: Any = None,
    task_bytes: int = DEFAULT_TASK_BYTES,
) -> Any:
    """:func:`bytepair.train` with the counting on a Dask cluster and the merges on the driver;
    returns the same ``Encoding`` (identical merges) as ``bytepair.train`` on the same files.

    >>> enc = train(["corpus/"], vocab_size=32768, special_tokens=["<|endoftext|>"])  # doctest: +SKIP
    >>> enc.save("tok")                                                                # doctest: +SKIP
    """
    from bytepair.train import _check_train_args, _specials, train_from_counts

    specials = _specials(special_tokens)
    _check_train_args(vocab_size, specials, min_frequency, max_token_length, num_threads)
    counts = count_words(
        paths,
        pattern=pattern,
        special_tokens=specials,
        on_error=on_error,
        client=client,
        task_bytes=task_bytes,
        num_threads=num_threads,
    )
    return train_from_counts(
        counts,
        vocab_size=vocab_size,
        special_tokens=specials,
        min_frequency=min_frequency,
        max_token_length=max_token_length,
        num_threads=num_threads,
        progress=progress,
        name=name,
    )


# ------------------------------------------------------------------------------------------------
# Encoding


def _plan_group(files: list[str], on_error: str, field: str) -> tuple[list[int], int, list[str]]:
    _test_delay()
    per_file, skipped, errors = _native._count_documents(files, on_error=on_error, field=field)
    return list(per_file), skipped, errors


def _encode_range(
    enc: Any,
    files: list[str],
    out: str,
    eot: int,
    docs_per_shard: int,
    skip_docs: int,
    max_docs: int,
    first_shard: int,
    on_error: str,
    field: str,
    num_threads: int | None,
) -> list[tuple[int, str, int, int]]:
    _test_delay()
    s = _native._encode_shards(
        enc._core_bpe,
        files,
        out,
        eot=eot,
        docs_per_shard=docs_per_shard,
        skip_docs=skip_docs,
        max_docs=max_docs,
        first_shard=first_shard,
        on_error=on_error,
        field=field,
        num_threads=num_threads,
    )
    return list(s["shards"])


def _shard_tasks(
    per_file: Sequence[int], docs_per_shard: int, shards_per_task: int
) -> list[tuple[int, int, int, int, int]]:
    """``(first_file, end_file, skip_docs, max_docs, first_shard)`` for each task: the documents
    ``k*D ..`` of shards ``k .. k + shards_per_task - 1`` start ``skip_docs`` documents into
    ``files[first_file]`` and end in ``files[end_file - 1]``."""
    starts = [0]
    for n in per_file:
        starts.append(starts[-1] + n)
    total = starts[-1]
    tasks = []
    k = 0
    while k * docs_per_shard < total:
        first = k * docs_per_shard
        n = min(shards_per_task * docs_per_shard, total - first)
        last = first + n - 1
        # The files holding documents `first` and `last` (files without documents never do).
        f = bisect.bisect_right(starts, first) - 1
        g = bisect.bisect_right(starts, last) - 1
        tasks.append((f, g + 1, first - starts[f], n, k))
        k += shards_per_task
    return tasks


def encode_to_shards(
    paths: Any,
    *,
    encoding: Any,
    out: PathLike,
    docs_per_shard: int | None = None,
    on_error: str = "fail",
    field: str = "text",
    client: Any = None,
    overwrite: bool = False,
    shards_per_task: int = 1,
    task_bytes: int = DEFAULT_TASK_BYTES,
    num_threads: int | None = None,
    eot_token: int | None = None,
) -> dict[str, Any]:
    """Writes the shards ``bytepair encode`` writes (and the same ``manifest.json``), byte for
    byte, with the work spread over a Dask cluster; returns the manifest.

    One pass counts each file's documents (tasks of ``task_bytes`` of input), then each task
    encodes ``shards_per_task`` consecutive shards and writes them to ``out`` (which every worker
    must reach). An ``out`` that holds a finished run with the same settings is returned as is;
    shards of any other run are refused unless ``overwrite=True``.

    >>> m = encode_to_shards(["corpus/"], encoding="cl100k_base", out="shards")  # doctest: +SKIP
    >>> len(m["shards"])                                                          # doctest: +SKIP
    12
    """
    _dask()
    import dask

    from bytepair import corpus

    docs_per_shard = corpus.DEFAULT_DOCS_PER_SHARD if docs_per_shard is None else docs_per_shard
    corpus._check_positive("docs_per_shard", docs_per_shard)
    corpus._check_positive("shards_per_task", shards_per_task)
    enc = corpus._encoding(encoding)
    eot = corpus._eot(enc, eot_token)
    corpus._check_args(on_error, field, num_threads)
    files = corpus._expand(paths, output=out)
    parquet = [f for f in files if corpus._is_parquet(f)]
    if parquet:
        raise ValueError(
            f"{parquet[0]}: the Dask encoder does not read parquet yet (`bytepair encode` and "
            "bytepair.corpus.encode_to_shards do); convert it to .jsonl"
        )
    outp = Path(out)
    settings = corpus._settings(enc, eot, files, docs_per_shard, on_error, field)
    manifest = corpus._prepare(outp, settings, overwrite, resume=True)
    if manifest.get("complete"):
        return manifest
    # Shards recorded by an interrupted `bytepair encode` are rewritten too (same bytes).
    manifest["shards"] = []
    for _, p in corpus._shard_files(outp):
        p.unlink()
    corpus._write_json(outp / corpus.MANIFEST, manifest)

    groups = _group_files(files, task_bytes)
    enc_task = dask.delayed(enc, pure=True)  # sent to each worker once, not once per task
    with _using(client) as c:
        plan = [dask.delayed(_plan_group, pure=True)(g, on_error, field) for g in groups]
        counted = c.compute(plan, sync=True)
        per_file = [n for part, _, _ in counted for n in part]
        skipped = sum(s for _, s, _ in counted)
        errors = [e for _, _, es in counted for e in es][:20]
        tasks = [
            dask.delayed(_encode_range, pure=True)(
                enc_task, files[f:g], str(outp), eot, docs_per_shard, skip, n, k, on_error, field, num_threads
            )
            for f, g, skip, n, k in _shard_tasks(per_file, docs_per_shard, shards_per_task)
        ]
        written = [s for part in c.compute(tasks, sync=True) for s in part]
    written.sort()
    expected = -(-sum(per_file) // docs_per_shard)
    if [s[0] for s in written] != list(range(expected)):
        raise RuntimeError(f"shards written {[s[0] for s in written]} differ from the plan (0..{expected - 1})")
    for p in outp.glob("shard_*.npy.tmp"):  # left by killed workers
        p.unlink()
    manifest["shards"] = [{"file": name, "documents": d, "tokens": t} for _, name, d, t in written]
    corpus._finish_manifest(manifest)
    corpus._write_json(outp / corpus.MANIFEST, manifest)
    result = dict(manifest)
    result["skipped"] = skipped
    result["errors"] = errors
    return result
