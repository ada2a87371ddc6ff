"""Corpus benchmarks: ``bytepair.corpus.encode_to_shards`` / ``count_files`` (what ``bytepair
encode`` / ``count`` run) side by side with the loop people write by hand around tiktoken today
(read JSON lines, ``encode_ordinary_batch``, append ``eot``, ``np.save``).

The shared corpora (en, code, multi) are cut into ~4 KB documents and written as one ``.jsonl``
file per category in a temporary directory. Smoke run (the default, ``--benchmark-disable``):
about 256 KB per category, once. Measuring (``--benchmark-enable``): the first
``BYTEPAIR_BENCH_CORPUS_MB`` MB (default 8) of each category, 3 rounds. ``extra_info`` records
MB/s, and each implementation's token stream is checked against bytepair's shards.

    pytest benches/bench_corpus.py --benchmark-enable
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
from bytepair import corpus
from bytepair.bench import split_documents
from benches.conftest import CORPUS_DIR, measuring

ENCODING = "cl100k_base"
THREADS = 2


@pytest.fixture(scope="module")
def jsonl_corpus(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    if not CORPUS_DIR.is_dir():
        pytest.skip(f"no shared corpus at {CORPUS_DIR}")
    on = measuring(request.config)
    budget = int(float(os.environ.get("BYTEPAIR_BENCH_CORPUS_MB", "8")) * 1e6) if on else 256_000
    d = tmp_path_factory.mktemp("corpus-jsonl")
    n = 0
    for name in ("en.txt", "code.txt", "multi.txt"):
        p = CORPUS_DIR / name
        if not p.is_file():
            continue
        with open(p, encoding="utf-8") as f:
            docs = split_documents([f.read(budget)])
        with open(d / (p.stem + ".jsonl"), "w", encoding="utf-8") as f:
            f.writelines(json.dumps({"text": doc}, ensure_ascii=False) + "\n" for doc in docs)
        n += 1
    if not n:
        pytest.skip(f"no en.txt/code.txt/multi.txt in {CORPUS_DIR}")
    return d


def _size(d: Path) -> int:
    return sum(p.stat().st_size for p in d.iterdir())


def _hand_written(files: list[Path], out: Path, docs_per_shard: int) -> None:
    """The usual tiktoken script: one process, batches of documents, np.save per shard."""
    import tiktoken

    enc = tiktoken.get_encoding(ENCODING)
    out.mkdir(parents=True, exist_ok=True)
    buf: list[str] = []
    shard = 0

    def flush() -> None:
        nonlocal shard
        toks: list[int] = []
        for t in enc.encode_ordinary_batch(buf, num_threads=THREADS):
            toks += t
            toks.append(enc.eot_token)
        np.save(out / f"shard_{shard:05d}.npy", np.array(toks, dtype=np.uint32))
        shard += 1
        buf.clear()

    for f in files:
        with open(f, encoding="utf-8") as fh:
            for line in fh:
                if line.strip():
                    buf.append(json.loads(line)["text"])
                    if len(buf) == docs_per_shard:
                        flush()
    if buf:
        flush()


@pytest.mark.parametrize("how", ["bytepair", "tiktoken-loop"])
def test_encode_to_shards(benchmark, jsonl_corpus, tmp_path, how, request):
    files = sorted(jsonl_corpus.iterdir())
    rounds = 3 if measuring(request.config) else 1
    seconds = 0.0
    outs = []

    def target() -> None:
        nonlocal seconds
        out = tmp_path / f"out{len(outs)}"
        t0 = time.perf_counter()
        if how == "bytepair":
            corpus.encode_to_shards(
                files, encoding=ENCODING, out=out, docs_per_shard=1000, num_threads=THREADS, progress=False
            )
        else:
            _hand_written(files, out, 1000)
        seconds += time.perf_counter() - t0
        outs.append(out)

    benchmark.group = "encode corpus to shards"
    benchmark.pedantic(target, rounds=rounds, iterations=1, warmup_rounds=0)
    mine = tmp_path / "check"
    corpus.encode_to_shards(files, encoding=ENCODING, out=mine, docs_per_shard=1000, progress=False)
    got = np.concatenate([np.load(p) for p in sorted(outs[0].glob("shard_*.npy"))])
    want = np.concatenate(corpus.read_shards(mine))
    agree = bool(np.array_equal(got.astype(np.uint32), want.astype(np.uint32)))
    nbytes = _size(jsonl_corpus)
    benchmark.extra_info.update(
        {
            "impl": how,
            "bytes": nbytes,
            "threads": THREADS,
            "agree": agree,
            "MB/s": round(nbytes * rounds / seconds / 1e6, 2),
        }
    )
    for o in outs:
        shutil.rmtree(o, ignore_errors=True)
    assert agree, f"MISMATCH: {how} token stream differs from bytepair's shards"


def test_count_files(benchmark, jsonl_corpus, request):
    files = sorted(jsonl_corpus.iterdir())
    rounds = 3 if measuring(request.config) else 1
    seconds = 0.0
    result = {}

    def target() -> None:
        nonlocal seconds, result
        t0 = time.perf_counter()
        result = corpus.count_files(files, encoding=ENCODING, num_threads=THREADS, progress=False)
        seconds += time.perf_counter() - t0

    benchmark.group = "count corpus"
    benchmark.pedantic(target, rounds=rounds, iterations=1, warmup_rounds=0)
    nbytes = _size(jsonl_corpus)
    benchmark.extra_info.update(
        {"bytes": nbytes, "threads": THREADS, "MB/s": round(nbytes * rounds / seconds / 1e6, 2)}
    )
    assert sum(result.values()) > 0
