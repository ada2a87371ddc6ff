"""Large single documents encoded on several threads give exactly the single-threaded tokens,
and batch encoding is deterministic across thread counts."""

from __future__ import annotations

import os
import random

import pytest
from forked import in_forked_child

import bytepair


def _big_text(seed: int, n_lines: int = 90_000) -> str:
    rng = random.Random(seed)
    words = ["hello", "world", "日本語", "  indented", "\t", "naïve", "42", "!!", "'s", "Ω", "😀", "\r\n", "\n\n"]
    lines = []
    for _ in range(n_lines):
        lines.append(" ".join(rng.choice(words) for _ in range(rng.randint(0, 12))))
    return "\n".join(lines)


@pytest.mark.parametrize("name", ["r50k_base", "cl100k_base", "o200k_base"])
@pytest.mark.parametrize("threads", [2, 3])
def test_parallel_single_document_identical(name: str, threads: int) -> None:
    enc = bytepair.get_encoding(name)
    text = _big_text(threads)
    assert len(text.encode()) > 2 << 20
    want = enc.encode_ordinary(text)
    assert enc.encode_ordinary(text, num_threads=threads) == want
    assert enc.decode(want) == text


def test_parallel_without_safe_cuts_and_small_texts() -> None:
    enc = bytepair.get_encoding("cl100k_base")
    for text in ["\n" * 3_000_000, " " * 3_000_000 + "x", "short text", ""]:
        assert enc.encode_ordinary(text, num_threads=2) == enc.encode_ordinary(text)


def test_batch_identical_across_thread_counts() -> None:
    enc = bytepair.get_encoding("o200k_base")
    # The start of each big text (its first 300 lines are the same with fewer made).
    texts = [_big_text(i, 300)[: 500 + 37 * i] for i in range(40)]
    assert all(len(t) == 500 + 37 * i for i, t in enumerate(texts))
    one = enc.encode_ordinary_batch(texts, num_threads=1)
    assert enc.encode_ordinary_batch(texts, num_threads=2) == one
    assert enc.encode_batch(texts, num_threads=4) == one
    assert enc.count_batch(texts, num_threads=2) == [len(t) for t in one]


@pytest.mark.parametrize("threads", [1, 2, 3])
def test_batch_error_is_the_earliest_failing_document(threads: int) -> None:
    # Documents are encoded out of order on several threads while lists are built in order; the
    # error raised must be that of the first bad document, and a good batch after it still works.
    enc = bytepair.get_encoding("cl100k_base")
    texts = [f"document {i} " * 50 for i in range(300)]
    texts[170] += "<|fim_prefix|>"
    texts[40] += "<|endoftext|>"
    with pytest.raises(ValueError, match="endoftext"):
        enc.encode_batch(texts, num_threads=threads)
    ok = [t for i, t in enumerate(texts) if i not in (40, 170)]
    assert enc.encode_batch(ok, num_threads=threads) == [enc.encode(t) for t in ok]
    assert enc.encode_batch(texts, num_threads=threads, allowed_special="all")[40][-1] == 100257


def _letters(i: int) -> str:
    """A distinct word of four letters per ``i`` below 26**4."""
    return "".join(chr(97 + i // 26**k % 26) for k in range(4))


def _parallel_work() -> list:
    """Every kind of parallel native call: batch encoding, one big document on two threads,
    count_batch, gather, topk, an Index (built and searched), embed_texts and training."""
    import numpy as np

    from bytepair import embed

    enc = bytepair.get_encoding("cl100k_base")
    docs = [f"document {i}: " + "hello world, naïve café " * 200 for i in range(64)]
    rng = np.random.default_rng(0)
    table = rng.standard_normal((1000, 32), dtype=np.float32)
    keys = rng.standard_normal((20_000, 64), dtype=np.float32)
    big = _big_text(1)[: 3 << 20]
    return [
        [len(t) for t in enc.encode_ordinary_batch(docs, num_threads=2)],
        enc.count_batch(docs, num_threads=2),
        len(enc.encode_ordinary(big, num_threads=2)),
        embed.gather(table, rng.integers(0, 1000, (64, 300))).shape,
        embed.topk(keys[:40], keys, 3)[1][:, 0].tolist(),
        embed.Index(keys).search(keys[:5], 3)[1][:, 0].tolist(),
        embed.embed_texts(enc, rng.standard_normal((enc.n_vocab, 8), dtype=np.float32), docs).shape,
        bytepair.train(docs * 20, vocab_size=300, num_threads=2, progress=False).n_vocab,
        # Enough distinct words that sorting them runs in parallel (it once ran on rayon's
        # global pool, whose threads a forked child lacks: the child hung).
        len(bytepair.WordCounts([" ".join(_letters(i) for i in range(100_000))], progress=False)),
    ]


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_parallel_calls_work_in_a_forked_child() -> None:
    """A child forked after the parent used the thread pools has none of their threads; its
    parallel calls must not wait for them, and give the parent's results."""
    want = _parallel_work()  # the parent's pools now exist (and may have helpers lingering)
    assert in_forked_child(_parallel_work, "a parallel call") == want
