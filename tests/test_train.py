"""The trainer against the reference (tests/ref_train.py), tiktoken and Hugging Face tokenizers."""

from __future__ import annotations

import gzip
import itertools
import json
import os
import pickle
import random
import re
import select
import signal
import subprocess
import sys
import threading
import time
import warnings
from pathlib import Path

import pytest
import ref_train
import bytepair
from bytepair import _native
from bytepair.train import WordCounts, _derive_merges, _save, _to_huggingface, load, train, train_from_counts
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st


CORPUS = Path(__file__).resolve().parent.parent.parent / "shared" / "corpus"
CL100K = _native._resolve_pattern("cl100k_base")
R50K = _native._resolve_pattern("gpt2")
O200K = _native._resolve_pattern("o200k_base")


def merges_of(counts: WordCounts, n: int, **kw) -> list[tuple[int, int]]:
    pairs, _ = _native._train_merges(counts, n, **kw)
    return [tuple(p) for p in pairs]


def counts_dict(wc: WordCounts) -> dict[bytes, int]:
    return dict(wc.items())


def gen_corpus(seed: int, n_docs: int = 300) -> list[str]:
    rnd = random.Random(seed)
    words = [
        "the",
        "The",
        "a",
        "aaaa",
        "abab",
        "ababab",
        "zzz",
        "don't",
        "it's",
        "😀",
        "😀😀",
        "ünïcödé",
        "日本語",
        "12345",
        "3.14",
        "  ",
        "\n",
        "\t",
        "!!",
        "foo_bar",
        "x",
        "xy",
        "yx",
    ]
    docs = []
    for _ in range(n_docs):
        k = rnd.randint(1, 30)
        docs.append("".join(rnd.choice(words) + rnd.choice(["", " ", " ", "\n", ", "]) for _ in range(k)))
    return docs


# ------------------------------------------------------------------------------------------------
# Word counting against the reference


@pytest.mark.parametrize("pattern", [CL100K, R50K, O200K, r"\w+|[^\w\s]+|\s+"])
def test_counts_equal_reference(pattern):
    docs = gen_corpus(1)
    wc = WordCounts(docs, pattern=pattern, progress=False)
    assert counts_dict(wc) == dict(ref_train.count_words(docs, pattern))


def test_special_tokens_are_cut_out():
    docs = ["hello<|endoftext|>world<|end|>", "<|endoftext|><|endoftext|>x<|e"]
    specials = ["<|endoftext|>", "<|end|>"]
    wc = WordCounts(docs, special_tokens=specials, progress=False)
    assert counts_dict(wc) == dict(ref_train.count_words(docs, CL100K, specials))
    assert all(b"endoftext" not in w for w in wc)


def test_invalid_utf8_counts_bytes():
    docs = [b"abc\xff\xfedef \xe2\x82 x\xf0\x9f", "lone \udc80 surrogate"]
    wc = WordCounts(docs, progress=False)
    assert counts_dict(wc) == dict(ref_train.count_words(docs, CL100K))
    enc = train(docs * 3, vocab_size=270, progress=False)
    assert len(enc._mergeable_ranks) == 270


def test_surrogates_are_counted_as_the_encoder_sees_them():
    # A surrogate pair is its character and a lone surrogate U+FFFD, as in encode (tiktoken).
    pair, lone = "a \ud83d\ude00 b", "x \udc80y"
    assert counts_dict(WordCounts([pair], progress=False)) == counts_dict(
        WordCounts(["a \U0001f600 b"], progress=False)
    )
    assert counts_dict(WordCounts([lone], progress=False)) == counts_dict(WordCounts(["x \ufffdy"], progress=False))
    enc = train([pair * 50, lone * 50], vocab_size=300, progress=False)
    assert enc.decode(enc.encode(pair)) == "a \U0001f600 b"


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.text(alphabet="ab \nxé😀'1", max_size=40), max_size=20), st.sampled_from([CL100K, R50K, O200K]))
def test_counts_hypothesis(docs, pattern):
    wc = WordCounts(docs, pattern=pattern, progress=False)
    assert counts_dict(wc) == dict(ref_train.count_words(docs, pattern))


# ------------------------------------------------------------------------------------------------
# Merges against the reference


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_merges_equal_reference(seed):
    docs = gen_corpus(seed)
    wc = WordCounts(docs, progress=False)
    ref = ref_train.train(counts_dict(wc), 120)
    assert merges_of(wc, 120) == ref
    # And through the public API: the ranks are the reference's tokens.
    enc = train(docs, vocab_size=256 + 120, progress=False)
    toks = ref_train.token_bytes(ref)
    assert enc._mergeable_ranks == {t: i for i, t in enumerate(toks)}


@pytest.mark.parametrize(
    "words",
    [
        {b"aaaa": 1},
        {b"aaaaa": 3, b"aaa": 2, b"aa": 1},
        {b"abab": 2, b"baba": 2, b"ab": 1},
        {b"abcabc": 1, b"bcabca": 1, b"cab": 5},
        {b"zy": 1, b"ba": 1, b"ab": 1, b"yz": 1},
        {"😀😀😀".encode(): 4, "😁".encode(): 3, "😀😁".encode(): 1},
        {b"a" * 100: 7, b"ab" * 50: 3},
    ],
)
def test_overlapping_repeats_and_ties(words):
    wc = WordCounts.from_dict(words)
    assert merges_of(wc, 50) == ref_train.train(words, 50)


@settings(max_examples=80, deadline=None)
@given(
    st.dictionaries(
        st.binary(min_size=1, max_size=8).map(lambda b: bytes(x % 4 + 97 for x in b)), st.integers(1, 6), max_size=25
    ),
    st.integers(0, 40),
    st.integers(1, 3),
    st.one_of(st.none(), st.integers(1, 5)),
)
def test_merges_hypothesis(words, n, min_freq, max_len):
    wc = WordCounts.from_dict(words)
    got = merges_of(wc, n, min_frequency=min_freq, max_token_length=max_len)
    assert got == ref_train.train(words, n, min_frequency=min_freq, max_token_length=max_len)


def test_counts_above_2_32():
    big = 2**32
    words = {b"ab": big + 5, b"bc": big + 4, b"abc": 3 * big, b"cd": 2**40, b"xyzxyz": 2**33 + 1}
    enc = train_from_counts(words, vocab_size=256 + 8)
    ref = ref_train.train(words, 8)
    assert enc._mergeable_ranks == {t: i for i, t in enumerate(ref_train.token_bytes(ref))}
    pairs, counts = _native._train_merges(WordCounts.from_dict(words), 8)
    assert counts[0] == 2**40 and all(c > 2**32 for c in counts[:4])


def test_min_frequency_and_max_token_length():
    docs = gen_corpus(4)
    wc = WordCounts(docs, progress=False)
    d = counts_dict(wc)
    enc = train_from_counts(wc, vocab_size=256 + 300, min_frequency=20, max_token_length=3)
    ref = ref_train.train(d, 300, min_frequency=20, max_token_length=3)
    assert enc._mergeable_ranks == {t: i for i, t in enumerate(ref_train.token_bytes(ref))}
    assert len(ref) < 300
    assert max(len(t) for t in enc._mergeable_ranks) <= 3


def test_replay_audit():
    """Every chosen pair had the true maximum count (recounted from scratch), ties to the
    smallest pair, and the reported count is that count."""
    text = (CORPUS / "en.txt").read_text()[:300_000] if CORPUS.exists() else "\n".join(gen_corpus(5, 2000))
    wc = WordCounts([text], progress=False)
    pairs, counts = _native._train_merges(wc, 300)
    d = counts_dict(wc)
    words = {w: list(w) for w in d}
    for i, (pair, count) in enumerate(zip(pairs, counts)):
        pc = ref_train.pair_counts(words, d)
        best = max(pc.values())
        assert pc[tuple(pair)] == best == count, f"merge {i}"
        assert tuple(pair) == min(p for p, c in pc.items() if c == best)
        words = {w: ref_train.merge_word(s, tuple(pair), 256 + i) for w, s in words.items()}


# ------------------------------------------------------------------------------------------------
# Same result whatever the threads, batches, order, spilling, sharding and input route


def test_deterministic_across_threads_batches_order_spill_shards(tmp_path):
    docs = gen_corpus(6, 3000)
    want = counts_dict(WordCounts(docs, progress=False))
    for threads in (1, 2, 3):
        wc = WordCounts(pattern="cl100k_base")
        wc._configure(num_threads=threads)
        wc._count_iter(docs, batch_bytes=1000)
        assert counts_dict(wc) == want
    shuffled = docs[:]
    random.Random(0).shuffle(shuffled)
    assert counts_dict(WordCounts(shuffled, progress=False)) == want
    spilled = WordCounts(pattern="cl100k_base")
    spilled._configure(max_memory=1, spill_dir=str(tmp_path))
    spilled._count_iter(docs, batch_bytes=5000)
    assert counts_dict(spilled) == want
    assert list(tmp_path.iterdir()) == []  # runs are removed after the merge
    assert counts_dict(WordCounts(docs, max_memory=1, progress=False)) == want
    shards = [WordCounts(docs[i::4], progress=False) for i in range(4)]
    total = shards[0] + shards[1]
    total += shards[2]
    total.merge(shards[3])
    assert counts_dict(total) == want
    # Merges are identical across thread counts too.
    m = [merges_of(total, 200, num_threads=t) for t in (1, 2, 4)]
    assert m[0] == m[1] == m[2]


def test_files_equal_iterable(tmp_path):
    docs = gen_corpus(7, 500)
    want = counts_dict(WordCounts(docs, progress=False))
    lines = [json.dumps({"id": i, "text": d}) + "\n" for i, d in enumerate(docs[:200])]
    (tmp_path / "a.jsonl").write_text("".join(lines))
    with gzip.open(tmp_path / "b.jsonl.gz", "wt") as f:
        for d in docs[200:400]:
            f.write(json.dumps({"text": d}) + "\n")
    sub = tmp_path / "sub"
    sub.mkdir()
    for i, d in enumerate(docs[400:]):
        (sub / f"{i:03}.txt").write_bytes(d.encode())
    assert counts_dict(WordCounts(tmp_path, progress=False)) == want
    assert counts_dict(WordCounts([str(tmp_path / "*.jsonl*"), str(sub)], progress=False)) == want
    # A big text file streamed in blocks counts like one document.
    big = "\n".join(docs) * 30
    (tmp_path / "big.txt").write_text(big)
    whole = counts_dict(WordCounts([big], progress=False))
    assert counts_dict(WordCounts(tmp_path / "big.txt", progress=False)) == whole


def test_zstd_and_parquet(tmp_path):
    docs = gen_corpus(8, 100)
    want = counts_dict(WordCounts(docs, progress=False))
    zstd = pytest.importorskip("zstandard")
    (tmp_path / "a.jsonl.zst").write_bytes(
        zstd.ZstdCompressor().compress("".join(json.dumps({"text": d}) + "\n" for d in docs[:50]).encode())
    )
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"text": docs[50:]}), tmp_path / "b.parquet")
    assert counts_dict(WordCounts(tmp_path, progress=False)) == want


# ------------------------------------------------------------------------------------------------
# Errors


def test_errors(tmp_path):
    with pytest.raises(ValueError, match="at least 256"):
        train(["x"], vocab_size=255, progress=False)
    with pytest.raises(ValueError, match="258"):
        train(["x"], vocab_size=257, special_tokens=["<a>", "<b>"], progress=False)
    with pytest.raises(ValueError, match="pattern"):
        train(["x"], vocab_size=300, pattern="(unclosed", progress=False)
    with pytest.raises(FileNotFoundError):
        train(str(tmp_path / "missing.txt"), vocab_size=300, progress=False)
    with pytest.raises(FileNotFoundError):
        train(str(tmp_path / "nothing*.txt"), vocab_size=300, progress=False)
    with pytest.raises(TypeError):
        train([1, 2], vocab_size=300, progress=False)
    bad = tmp_path / "bad.jsonl"
    bad.write_bytes(b'{"text": "ok"}\n{"text": \n{"id": 3}\n{"text": "\xff"}\n{"text": "fine"}\n')
    with pytest.raises(ValueError, match=r"bad\.jsonl:2: invalid JSON"):
        train(bad, vocab_size=300, progress=False)
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        wc = WordCounts(bad, on_error="skip", progress=False)
    assert counts_dict(wc) == {b"ok": 1, b"fine": 1}
    msg = str(w[0].message)
    assert "skipped 3" in msg and "bad.jsonl:3: missing field" in msg
    wc1, wc2 = WordCounts(["a"]), WordCounts(["a"], pattern="gpt2")
    with pytest.raises(ValueError, match="different patterns"):
        wc1.merge(wc2)
    with pytest.raises(ValueError):
        WordCounts.from_bytes(b"nope")
    with pytest.raises(ValueError):
        WordCounts.from_bytes(WordCounts(["abc"]).to_bytes()[:-1])
    unreadable = tmp_path / "locked.txt"
    unreadable.write_text("x")
    unreadable.chmod(0)
    if not os.access(unreadable, os.R_OK):  # root can read anything
        with pytest.raises(PermissionError, match="locked.txt"):
            WordCounts(unreadable, progress=False)


def test_field_names_the_json_field_and_parquet_column(tmp_path):
    docs = gen_corpus(21, 60)
    want = counts_dict(WordCounts(docs, progress=False))
    (tmp_path / "a.jsonl").write_text("".join(json.dumps({"content": d, "text": "no"}) + "\n" for d in docs))
    assert counts_dict(WordCounts(tmp_path / "a.jsonl", field="content", progress=False)) == want
    enc = train(tmp_path / "a.jsonl", vocab_size=300, field="content", progress=False)
    assert enc._mergeable_ranks == train(docs, vocab_size=300, progress=False)._mergeable_ranks
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"body": docs}), tmp_path / "b.parquet")
    assert counts_dict(WordCounts(tmp_path / "b.parquet", field="body", progress=False)) == want


def test_a_list_of_paths_with_a_missing_one_is_not_taken_for_documents(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    Path("small.txt").write_text("hello world " * 50)
    (tmp_path / "sub").mkdir()
    for data, missing in [
        (["small.txt", "en3m.tx"], "en3m.tx"),  # one exists: the other is a typo
        (["en3m.tx", "small.txt"], "en3m.tx"),
        (["sub", "nope"], "nope"),
        (["notes.txt", "more.jsonl.gz"], "notes.txt"),  # none exists, but they look like file names
        (("hello world", "b.parquet"), "b.parquet"),
        (["hello", str(tmp_path / "*.txt"), "missing.zst"], "hello"),  # a glob that matches
    ]:
        with pytest.raises(FileNotFoundError, match=re.escape(repr(missing))):
            train(data, vocab_size=300, progress=False)
        with pytest.raises(FileNotFoundError, match=re.escape(repr(missing))):
            WordCounts(data, progress=False)
    # Documents stay documents: nothing looks like a file name, and fewer than half name
    # something here (a word may: "sub").
    for docs in (
        ["hello world", "what now?"],
        ["file.txt is here", "a.txt b.txt"],
        ["x.md", "y"],
        ["and/or", "a/b"],
        ["the", "sub", "is", "here"],
    ):
        assert counts_dict(WordCounts(docs, progress=False)) == dict(ref_train.count_words(docs, CL100K))
    # An iterator is always documents, and a list of existing paths always paths.
    assert counts_dict(WordCounts(iter(["notes.txt"]), progress=False)) == {b"notes": 1, b".txt": 1}
    assert WordCounts(["small.txt", "sub"], progress=False)["hello"] == 1
    # A path object makes the whole list paths, str items included.
    Path("other.txt").write_text("goodbye world")
    mixed = WordCounts([Path("small.txt"), "other.txt"], progress=False)
    assert mixed == WordCounts(["small.txt", "other.txt"], progress=False) and mixed["goodbye"] == 1
    with pytest.raises(FileNotFoundError, match="nope"):
        WordCounts([Path("small.txt"), "nope"], progress=False)


def test_parquet_errors_name_the_file_and_skip_skips_it(tmp_path):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    (tmp_path / "broken.parquet").write_bytes(b"not a parquet file at all")
    pq.write_table(pa.table({"text": [1, 2, 3]}), tmp_path / "ints.parquet")
    pq.write_table(pa.table({"other": ["x"]}), tmp_path / "nocol.parquet")
    (tmp_path / "ok.txt").write_text("hello hello world")
    for name, what in [("broken", "magic bytes"), ("ints", "holds int64, not text"), ("nocol", "no column 'text'")]:
        f = tmp_path / f"{name}.parquet"
        with pytest.raises(ValueError, match=f"{name}.parquet: .*{what}"):
            train(f, vocab_size=300, progress=False)
        with warnings.catch_warnings(record=True) as w:
            warnings.simplefilter("always")
            wc = WordCounts([f, tmp_path / "ok.txt"], on_error="skip", progress=False)
        assert counts_dict(wc) == {b"hello": 1, b" hello": 1, b" world": 1}
        assert len(w) == 1 and "skipped 1" in str(w[0].message) and f"{name}.parquet" in str(w[0].message)
        with warnings.catch_warnings(record=True):
            warnings.simplefilter("always")
            assert train([f, tmp_path / "ok.txt"], vocab_size=257, on_error="skip", progress=False).n_vocab == 257


def test_bad_parameters_are_named():
    docs = ["hello world"] * 5
    with pytest.raises(ValueError, match="pattern must not be empty"):
        train(docs, vocab_size=300, pattern="", progress=False)
    with pytest.raises(ValueError, match="pattern must not be empty"):
        WordCounts(pattern="")
    with pytest.raises(ValueError, match="pattern must not be empty"):
        train_from_counts({"ab": 2}, vocab_size=257, pattern="")
    for name, exc in [(None, TypeError), (5, TypeError), ("", ValueError)]:
        with pytest.raises(exc, match="name"):
            train(docs, vocab_size=300, name=name, progress=False)
        with pytest.raises(exc, match="name"):
            train_from_counts({"ab": 2}, vocab_size=257, name=name)
    for key in ("vocab_size", "min_frequency", "max_token_length", "num_threads", "max_memory"):
        with pytest.raises(ValueError, match=key):
            train(docs, **{"vocab_size": 300, key: 2**64}, progress=False)
    with pytest.raises(ValueError, match="max_memory"):
        WordCounts(docs, max_memory=2**64, progress=False)
    # Counts are below 2**64 (the docstring's "up to 2**64 - 1").
    with pytest.raises(ValueError, match=r"2\*\*64 - 1, got 18446744073709551616 for 'ab'"):
        train_from_counts({"ab": 2**64}, vocab_size=257)
    with pytest.raises(ValueError, match="2\\*\\*64"):
        WordCounts.from_dict({"ab": 2**64})
    assert train_from_counts({"ab": 2**64 - 1}, vocab_size=257).decode_single_token_bytes(256) == b"ab"


# Bytes, surrogates and counts at the edges.


def test_invalid_utf8_in_a_text_file_is_counted_as_bytes(tmp_path):
    # Training is on bytes: a .txt file is counted as a document given as bytes would be (every
    # invalid byte a word of its own), as `bytepair train --help` says.
    data = b"ab\xff\xfe cd ab\xff\xfe"
    (tmp_path / "bad.txt").write_bytes(data)
    got = counts_dict(WordCounts(tmp_path / "bad.txt", progress=False))
    assert got == counts_dict(WordCounts([data], progress=False))
    assert got[b"\xff"] == got[b"\xfe"] == 2


def test_lone_surrogates_in_json_lines_count_as_in_documents(tmp_path):
    text = "ok \udc80 x"
    (tmp_path / "s.jsonl").write_text(json.dumps({"text": text}) + "\n")
    assert counts_dict(WordCounts(tmp_path / "s.jsonl", progress=False)) == counts_dict(
        WordCounts([text], progress=False)
    )


def test_counts_that_overflow_when_merged_are_refused():
    a = WordCounts.from_dict({"ab": 2**64 - 1, "cd": 1})
    with pytest.raises(ValueError, match="would pass 2"):
        a + WordCounts.from_dict({"ab": 10})
    with pytest.raises(ValueError, match="would pass 2"):
        a.merge(WordCounts.from_dict({"ab": 1}))
    assert a["ab"] == 2**64 - 1 and a["cd"] == 1  # unchanged
    with pytest.raises(ValueError, match="would pass 2"):
        WordCounts.from_dict([("ab", 2**64 - 1), ("ab", 2**40)])
    # Whatever the order and the size of the count that passes it (once saturated silently).
    for pairs in ([("ab", 2**64 - 1), ("ab", 1)], [("ab", 1), ("ab", 2**64 - 1)], [("ab", 2**63)] * 2):
        with pytest.raises(ValueError, match="would pass 2"):
            WordCounts.from_dict(pairs)
    assert WordCounts.from_dict([("ab", 2**64 - 2), ("ab", 1)])["ab"] == 2**64 - 1
    # Also when the large count has been spilled to disk.
    spilled = WordCounts.from_dict({"ab": 2**64 - 1})
    spilled.update([" hello world"] * 50, max_memory=1)
    with pytest.raises(ValueError, match="would pass 2"):
        spilled._add("ab", 5)
    assert spilled["ab"] == 2**64 - 1
    # Counting text into a count near the limit (once saturated silently): a batch that would
    # pass it is refused whole, and nothing of it is counted; also with the large count spilled.
    near = WordCounts.from_dict({"ab": 2**64 - 3, " x": 5})
    near.update(["ab", "ab"])
    assert near["ab"] == 2**64 - 1
    with pytest.raises(ValueError, match="would pass 2"):
        near.update([" x", "ab"])
    assert near["ab"] == 2**64 - 1 and near[" x"] == 5
    with pytest.raises(ValueError, match="would pass 2"):
        spilled.update(["ab"], max_memory=1)
    assert spilled["ab"] == 2**64 - 1 and spilled[" hello"] == 50
    # Totals are exact past 2**64.
    assert (a + WordCounts.from_dict({"cd": 2**64 - 2})).total() == 2**65 - 2


def test_large_counts_by_hand_take_linear_time():
    """Counts above 2**32 given by hand were checked by settling all counts before each one:
    16,000 words took 2.6 s (quadratic). Compared with the same number of small counts."""
    import time

    words = [f"w{i}" for i in range(16_000)]
    t0 = time.perf_counter()
    small = WordCounts.from_dict({w: 5 for w in words})
    t_small = time.perf_counter() - t0
    t0 = time.perf_counter()
    big = WordCounts.from_dict({w: 2**40 + i for i, w in enumerate(words)})
    t_big = time.perf_counter() - t0
    assert len(big) == len(small) == 16_000 and big["w7"] == 2**40 + 7
    assert t_big < 10 * t_small + 0.2, (t_big, t_small)


# ------------------------------------------------------------------------------------------------
# WordCounts API


def test_wordcounts_api(tmp_path):
    wc = WordCounts(["the cat the hat"], progress=False)
    assert len(wc) == 4 and wc.total() == 4 and wc["the"] == 1 and wc[b" the"] == 1 and wc["nope"] == 0
    assert "the" in wc and wc.most_common(1) == [(b" cat", 1)]
    assert wc.most_common() == sorted(wc.items(), key=lambda kv: (-kv[1], kv[0]))
    assert pickle.loads(pickle.dumps(wc)) == wc
    blob = pickle.dumps(wc)
    assert b"the" in blob and len(blob) < 300  # a compact blob, not a dict
    wc.save(tmp_path / "wc.bin")
    assert WordCounts.load(tmp_path / "wc.bin") == wc
    # A changed count is caught by the file's closing CRC-32, not read as another count.
    good = (tmp_path / "wc.bin").read_bytes()
    for at in (5, len(good) // 2, len(good) - 5):
        bad = bytearray(good)
        bad[at] ^= 0x01
        (tmp_path / "wc.bin").write_bytes(bytes(bad))
        with pytest.raises(ValueError, match="corrupted"):
            WordCounts.load(tmp_path / "wc.bin")
    assert (wc + wc).total() == 8 and wc.total() == 4
    wc.update(["the"], progress=False)
    assert wc["the"] == 2
    wc.merge(wc)
    assert wc["the"] == 4
    assert wc.copy() == wc and wc.copy() is not wc


# ------------------------------------------------------------------------------------------------
# The result: tiktoken, save/load, Hugging Face


def _corpus_text(n: int) -> str:
    if CORPUS.exists():
        return (
            (CORPUS / "en.txt").read_text()[:n]
            + (CORPUS / "code.txt").read_text()[:n]
            + (CORPUS / "multi.txt").read_text()[:n]
        )
    return "\n".join(gen_corpus(9, 5000))


def test_ranks_encode_like_merges_in_tiktoken():
    tiktoken = pytest.importorskip("tiktoken")
    text = _corpus_text(100_000)
    docs = text.split("\n\n")
    enc = train(docs, vocab_size=1000, special_tokens=["<|endoftext|>"], progress=False)
    wc = WordCounts(docs, progress=False)
    merges = merges_of(wc, 1000 - 257)
    tk = tiktoken.Encoding(
        "t", pat_str=enc._pat_str, mergeable_ranks=enc._mergeable_ranks, special_tokens=enc._special_tokens
    )
    assert tk.encode("<|endoftext|>", allowed_special="all") == [999]
    for word, _ in wc.most_common(3000):
        assert tk._encode_single_piece(word) == ref_train.encode_word(word, merges), word
    assert tk.decode(tk.encode(text)) == text
    assert enc.encode(text) == tk.encode(text)


def test_word_counts_save_keeps_devices_and_links(tmp_path):
    import stat

    wc = WordCounts(["hello world"], progress=False)
    # A device is written to, not replaced by a file (renaming over /dev/null would, as root).
    if os.path.exists("/dev/null") and stat.S_ISCHR(os.stat("/dev/null").st_mode):
        wc.save("/dev/null")
        assert stat.S_ISCHR(os.stat("/dev/null").st_mode)
    target = tmp_path / "counts.bin"
    os.symlink(target, tmp_path / "link.bin")
    wc.save(tmp_path / "link.bin")
    assert os.path.islink(tmp_path / "link.bin") and WordCounts.load(target) == wc
    assert sorted(os.listdir(tmp_path)) == ["counts.bin", "link.bin"]
    with pytest.raises(FileNotFoundError) as e:
        wc.save(tmp_path / "missing" / "c.bin")
    assert e.value.filename == str(tmp_path / "missing" / "c.bin")


def test_save_load_roundtrip(tmp_path):
    enc = train(gen_corpus(10), vocab_size=400, special_tokens=["<|a|>", "<|b|>"], name="my/enc", progress=False)
    _save(enc, tmp_path / "out")
    files = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert files == ["bytepair.json", "my_enc.tiktoken"]
    back = load(tmp_path / "out")
    assert back.name == "my/enc" and back._pat_str == enc._pat_str
    assert back._mergeable_ranks == enc._mergeable_ranks
    assert back._special_tokens == {"<|a|>": 398, "<|b|>": 399}
    tiktoken_load = pytest.importorskip("tiktoken.load")
    assert tiktoken_load.load_tiktoken_bpe(str(tmp_path / "out" / "my_enc.tiktoken")) == enc._mergeable_ranks


@pytest.mark.parametrize("pattern", ["cl100k", "o200k", "gpt4", "CL100K_BASE"])
def test_a_misspelt_encoding_name_is_not_taken_as_a_regex(pattern):
    # As a regex, "cl100k" would match only itself and training would learn no merges.
    with pytest.raises(ValueError, match="unknown encoding name"):
        train(["hello world"] * 20, vocab_size=300, pattern=pattern, progress=False)
    with pytest.raises(ValueError, match="unknown encoding name"):
        WordCounts(pattern=pattern)
    # Real regexes and names still work.
    assert train(["hello world"] * 20, vocab_size=260, pattern=r"\w+| ", progress=False).n_vocab == 260
    assert WordCounts(pattern="o200k_harmony").pattern == WordCounts(pattern="o200k_base").pattern


@pytest.mark.parametrize(
    "edit",
    [
        lambda m: m.pop("ranks_file"),
        lambda m: m.pop("pattern"),
        lambda m: m.update(name=5),
        lambda m: m.update(special_tokens=["<|a|>"]),
        lambda m: m.update(special_tokens={"<|a|>": "x"}),
        lambda m: m.update(version=2),
        lambda m: m.update(n_vocab="300"),
        lambda m: m.update(n_vocab=300.0),
        lambda m: m.update(ranks_file=""),
    ],
    ids=[
        "no ranks_file",
        "no pattern",
        "name not str",
        "specials a list",
        "special id not int",
        "a later version",
        "n_vocab a str",
        "n_vocab a float",
        "ranks_file empty",
    ],
)
def test_load_rejects_a_damaged_description_with_valueerror(tmp_path, edit):
    import json

    enc = train(gen_corpus(10), vocab_size=300, special_tokens=["<|a|>"], progress=False)
    _save(enc, tmp_path / "out")
    meta_path = tmp_path / "out" / "bytepair.json"
    meta = json.loads(meta_path.read_text())
    edit(meta)
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="bytepair.json"):
        load(tmp_path / "out")


@pytest.mark.parametrize("pattern", ["cl100k_base", "gpt2", "o200k_base"])
def test_huggingface_export_encodes_identically(tmp_path, pattern):
    tokenizers = pytest.importorskip("tokenizers")
    text = _corpus_text(60_000)
    enc = train(
        text.split("\n\n"),
        vocab_size=1500,
        pattern=pattern,
        special_tokens=["<|endoftext|>", "<|pad|>"],
        progress=False,
    )
    path = _to_huggingface(enc, tmp_path)
    hf = tokenizers.Tokenizer.from_file(str(path))
    samples = text.split("\n\n")[:300] + ["<|endoftext|>hello<|pad|> world  \n\n x", "😀 emoji ünï"]
    for s in samples:
        assert hf.encode(s, add_special_tokens=False).ids == enc.encode(s, allowed_special="all"), s
    assert hf.get_vocab_size() == enc.n_vocab


@pytest.mark.parametrize("name", ["cl100k_base", "o200k_harmony", "p50k_edit"])
def test_huggingface_export_keeps_special_token_ids(tmp_path, name):
    # Built-in encodings have gaps before and between their special ids (cl100k: 100256-100260,
    # then 100276); `tokenizers` renumbers added tokens that its model's vocabulary lacks.
    tokenizers = pytest.importorskip("tokenizers")
    enc = bytepair.get_encoding(name)
    if name == "o200k_harmony":
        # Two of its special tokens share id 200018: the file keeps the one decode gives.
        with pytest.warns(UserWarning, match="reserved_200018"):
            path = _to_huggingface(enc, tmp_path)
        assert enc.decode([200018]) == "<|endofprompt|>"
    else:
        path = _to_huggingface(enc, tmp_path)
    hf = tokenizers.Tokenizer.from_file(str(path))
    specials = [(s, i) for s, i in enc._special_tokens.items() if s != "<|reserved_200018|>"]
    for s, i in sorted(specials, key=lambda kv: kv[1])[:50]:
        assert hf.token_to_id(s) == i, s
        text = f"hi {s} there"
        assert hf.encode(text, add_special_tokens=False).ids == enc.encode(text, allowed_special="all"), s
        assert hf.decode([i], skip_special_tokens=False) == s
    text = "plain text, ünïcödé and 😀 emoji"
    assert hf.encode(text, add_special_tokens=False).ids == enc.encode_ordinary(text)


def test_huggingface_export_keeps_a_special_id_after_a_gap(tmp_path):
    tokenizers = pytest.importorskip("tokenizers")
    t = train(["hello world"] * 20, vocab_size=260, progress=False)
    enc = bytepair.Encoding(
        "gap", pat_str=t._pat_str, mergeable_ranks=t._mergeable_ranks, special_tokens={"<|eot|>": 300}
    )
    hf = tokenizers.Tokenizer.from_file(str(_to_huggingface(enc, tmp_path)))
    assert hf.encode("hello<|eot|>", add_special_tokens=False).ids == enc.encode("hello<|eot|>", allowed_special="all")
    # A special token spelled like an ordinary token in the byte-level vocabulary cannot keep both ids.
    clash = bytepair.Encoding(
        "clash", pat_str=t._pat_str, mergeable_ranks=t._mergeable_ranks, special_tokens={"hel": 300}
    )
    assert b"hel" in t._mergeable_ranks
    with pytest.raises(ValueError, match="special token 'hel'"):
        _to_huggingface(clash, tmp_path / "clash")


def test_derive_merges_recovers_training_merges():
    docs = gen_corpus(11)
    wc = WordCounts(docs, progress=False)
    merges = merges_of(wc, 200)
    toks = ref_train.token_bytes(merges)
    ranks = {t: i for i, t in enumerate(toks)}
    derived = _derive_merges(ranks)
    assert [a + b for a, b in derived] == toks[256:]


# ------------------------------------------------------------------------------------------------
# Progress and Ctrl-C


def test_progress_callback_and_interrupt():
    seen = []
    wc = WordCounts(pattern="cl100k_base")
    wc._count_iter(gen_corpus(12, 2000), batch_bytes=10_000, callback=lambda *a: seen.append(a))
    assert seen and seen[-1][0] == "read" and seen[-1][3] == 2000

    def stop(*a):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        _native._train_merges(wc, 100, callback=stop)
    with pytest.raises(KeyboardInterrupt):
        WordCounts(pattern="cl100k_base")._count_iter(gen_corpus(12, 2000), batch_bytes=1000, callback=stop)


def test_ctrl_c_stops_training(tmp_path):
    if threading.current_thread() is not threading.main_thread():
        pytest.skip("signals need the main thread")
    big = tmp_path / "big.txt"
    with open(big, "w") as f:
        f.writelines("\n".join(gen_corpus(i, 300)) for i in range(200))
    timer = threading.Timer(0.05, lambda: os.kill(os.getpid(), signal.SIGINT))
    timer.start()
    try:
        with pytest.raises(KeyboardInterrupt):
            for _ in range(50):
                train([big] * 20, vocab_size=5000, progress=False)
    finally:
        timer.cancel()


# The child of test_sigint_during_merge_phase: counts the corpus, then trains with the public
# API. `_BYTEPAIR_TEST_MERGE_MARKS` makes the native side write `merge <done> <total>` to stderr
# at each progress report, so the test sees the merge loop run without a Python callback (any
# Python call runs signal handlers on its own): with `progress=False` only the trainer's own check
# can turn SIGINT into KeyboardInterrupt. On KeyboardInterrupt the child checks that the counts
# are usable again (lock released, worker threads idle) and re-raises, so the process ends the
# way an uncaught Ctrl-C ends it.
_SIGINT_CHILD = r"""
import sys, time
import bytepair

wc = bytepair.WordCounts(sys.argv[1], pattern="cl100k_base", progress=False)
try:
    bytepair.train_from_counts(wc, vocab_size=int(sys.argv[2]), progress=sys.argv[3] == "tqdm")
except KeyboardInterrupt:
    caught = time.monotonic()
    again = bytepair.train_from_counts(wc, vocab_size=306, progress=False).n_vocab
    print(f"interrupted at {caught} again {again}", flush=True)
    raise
print("finished", flush=True)
"""


@pytest.mark.parametrize("progress", ["none", "tqdm"])
def test_sigint_during_merge_phase(tmp_path, progress):
    """A real SIGINT while the merge loop runs (detached from the interpreter) stops training
    with KeyboardInterrupt within a bounded time, and leaves the process usable: without progress
    bars (the trainer's own signal check) and with them (the callback path)."""
    if sys.platform == "win32":
        pytest.skip("POSIX signals")
    if progress == "tqdm":
        pytest.importorskip("tqdm")
    # ~440k distinct random words: the merge loop takes seconds, more than the test needs.
    rnd = random.Random(0)
    n = 4_000_000
    text = "".join(rnd.choices("etaoinshrdlcumwfgypbvkjxqz", weights=range(26, 0, -1), k=n))
    cuts = list(itertools.accumulate(rnd.choices(range(3, 15), k=n // 8)))
    words = [text[a:b] for a, b in zip(cuts, cuts[1:])]
    corpus = tmp_path / "words.txt"
    corpus.write_text("\n".join(" ".join(words[i : i + 100]) for i in range(0, len(words), 100)))
    vocab = 60_256
    env = dict(os.environ, _BYTEPAIR_TEST_MERGE_MARKS="1")
    p = subprocess.Popen(
        [sys.executable, "-c", _SIGINT_CHILD, str(corpus), str(vocab), progress],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
    )
    marks = re.compile(rb"merge (\d+) (\d+)\n")
    try:
        # Wait for the first report of the running merge loop (done > 0).
        deadline = time.monotonic() + 120
        seen = b""
        while not any(int(m[1]) > 0 for m in marks.finditer(seen)):
            ready, _, _ = select.select([p.stderr], [], [], max(0.0, deadline - time.monotonic()))
            chunk = os.read(p.stderr.fileno(), 1 << 16) if ready else b""
            assert chunk, f"no merge progress: {seen[-300:]!r} exit {p.poll()}"
            seen += chunk
        t0 = time.monotonic()
        os.kill(p.pid, signal.SIGINT)
        out, err = p.communicate(timeout=60)
        waited = time.monotonic() - t0
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    err = (seen + err).decode(errors="replace")
    lines = out.decode().splitlines()
    assert p.returncode == -signal.SIGINT, (p.returncode, err[-2000:])
    assert err.rstrip().endswith("KeyboardInterrupt"), err[-2000:]
    assert "panicked" not in err and "Fatal Python error" not in err, err[-2000:]
    assert lines and lines[-1].startswith("interrupted at ") and lines[-1].endswith(" again 306"), lines
    caught = float(lines[-1].split()[2])
    done = max(int(m[1]) for m in marks.finditer(err.encode()))
    print(f"{progress}: SIGINT after merge {done}: KeyboardInterrupt {caught - t0:.3f} s later, exit {waited:.2f} s")
    assert done < vocab - 256, "training finished before the SIGINT was seen"
    # The merge loop checks for signals every 100 ms (CLOCK_MONOTONIC is shared by processes).
    assert caught - t0 < 2, f"KeyboardInterrupt came {caught - t0:.2f} s after SIGINT"


def test_tqdm_progress_runs():
    pytest.importorskip("tqdm")
    enc = train(gen_corpus(13), vocab_size=300, progress=True)
    assert enc.n_vocab == 300


def test_counts_that_could_overflow_a_pair_count_are_refused():
    # Pair counts are 64-bit; they once wrapped round and chose the wrong merge.
    big = 2**64 - 1
    with pytest.raises(ValueError, match="too large"):
        train_from_counts({"ab": big, "xab": big, "cd": big, "ycd": big, "zcd": big}, vocab_size=257)
    enc = train_from_counts({"ab": 2**62, "cd": 2**62 + 1}, vocab_size=257)
    assert enc.decode_single_token_bytes(256) == b"cd"


def test_special_tokens_never_collide_with_ordinary_ones():
    # A one-byte special token is always an ordinary token too.
    with pytest.raises(ValueError, match="single byte"):
        train(["hello world"] * 5, vocab_size=300, special_tokens=["a"], progress=False)
    # Counts made without the special token can learn it: refused, not exported with two ids.
    with pytest.raises(ValueError, match="also learned"):
        train_from_counts(WordCounts(["hello world hello"] * 5), vocab_size=270, special_tokens=["hello"])
    # Counted with it, the text around it is learned and the token keeps one id.
    enc = train_from_counts(
        WordCounts(["hello world hello"] * 5, special_tokens=["hello"]), vocab_size=270, special_tokens=["hello"]
    )
    assert enc.encode("hello", allowed_special="all") == [enc.n_vocab - 1]
    assert b"hello" not in enc._mergeable_ranks


def test_numpy_integers_are_taken_as_ints():
    np = pytest.importorskip("numpy")
    docs = ["hello world, hello there"] * 30
    want = train(docs, vocab_size=262, max_token_length=6, progress=False)
    got = train(docs, vocab_size=np.int64(262), max_token_length=np.uint8(6), min_frequency=np.int32(1), progress=False)
    assert got._mergeable_ranks == want._mergeable_ranks
    assert WordCounts.from_dict({"ab": np.uint64(2**63)}) == WordCounts.from_dict({"ab": 2**63})
    with pytest.raises(ValueError, match="counts must be ints"):
        WordCounts.from_dict({"ab": np.float64(3)})
    with pytest.raises(TypeError, match="vocab_size"):
        train(docs, vocab_size=np.float64(262), progress=False)


_CUSTOM = r"\S+|\s+"

# Each case starts work on one document of about 160 MB under a custom pattern (which cannot be
# cut into blocks the way the built-in patterns are), prints "go" and works for several seconds.
_LONG_CUSTOM_WORK = {
    "train from an iterable": "bytepair.train(iter([text]), vocab_size=300, pattern=PAT, progress=False)",
    "train from a file": "bytepair.train(PATH, vocab_size=300, pattern=PAT, progress=False, num_threads=1)",
    "WordCounts from a file, 2 threads": "bytepair.WordCounts(PATH, pattern=PAT, num_threads=2)",
    "WordCounts from an iterable, 2 threads": "bytepair.WordCounts(iter([text]), pattern=PAT, num_threads=2)",
    "cli count": ["count", "PATH", "--encoding", "ENC"],
    "cli encode": ["encode", "PATH", "--encoding", "ENC", "-o", "OUT"],
}


@pytest.fixture(scope="module")
def long_custom_corpus(tmp_path_factory):
    """A 160 MB one-line document, and an encoding with the custom pattern."""
    d = tmp_path_factory.mktemp("long-custom")
    path = d / "long.txt"
    # w0 ... w49999, 480 times over (24 M words), built from one block: 20 s as one generator.
    block = " ".join(f"w{i}" for i in range(50_000))
    path.write_text(" ".join([block] * 480))
    enc = d / "enc"
    specials = ["<|endoftext|>"]
    train(["w1 w2 w3"] * 10, vocab_size=260, pattern=_CUSTOM, special_tokens=specials, progress=False).save(enc)
    return path, enc


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
@pytest.mark.parametrize("case", list(_LONG_CUSTOM_WORK))
def test_sigint_stops_work_on_one_long_document_under_a_custom_pattern(case, tmp_path, long_custom_corpus):
    """Ctrl-C stops counting or encoding within a document, on every thread, also when a worker
    thread (not the one that got the signal) has the document."""
    path, enc = long_custom_corpus
    work = _LONG_CUSTOM_WORK[case]
    if isinstance(work, list):
        subs = {"PATH": str(path), "ENC": str(enc), "OUT": str(tmp_path / "out")}
        argv = [
            sys.executable,
            "-c",
            "print('go', flush=True); from bytepair.cli import main; raise SystemExit(main())",
        ]
        argv += [subs.get(a, a) for a in work]
    else:
        code = f"import bytepair; PAT = {_CUSTOM!r}; PATH = {str(path)!r}; text = open(PATH).read(); print('go', flush=True); {work}"
        argv = [sys.executable, "-c", code]
    p = subprocess.Popen(
        argv,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    try:
        assert p.stdout.readline().strip() == "go"
        time.sleep(1.0)
        t0 = time.perf_counter()
        p.send_signal(signal.SIGINT)
        _, err = p.communicate(timeout=120)
        elapsed = time.perf_counter() - t0
    finally:
        p.kill()
        p.wait()
    assert p.returncode in (-signal.SIGINT, 130), err
    assert "KeyboardInterrupt" in err or "interrupted" in err, err
    assert elapsed < 2.0, f"{case}: stopped {elapsed:.2f} s after Ctrl-C"
    assert not list((tmp_path / "out").glob("shard_*")), "no shard from the interrupted document"


def test_a_failed_save_leaves_the_earlier_save_whole(tmp_path, monkeypatch):
    """Both files of a save are written in full before either replaces the old one: a save that
    fails (a full disk) leaves the earlier encoding loadable and unchanged, with no debris."""
    small = train(["hello world"] * 20, vocab_size=270, special_tokens=["<|endoftext|>"], progress=False)
    big = train([_corpus_text(20_000)], vocab_size=400, special_tokens=["<|endoftext|>"], progress=False)
    small.save(tmp_path)
    before = sorted(p.name for p in tmp_path.iterdir())
    real = Path.open
    calls = []

    def full_disk(self, mode="r", *args, **kwargs):
        if "w" in mode:
            calls.append(self.name)
            if len(calls) == 2:  # the second file of the save
                raise OSError(28, "No space left on device")
        return real(self, mode, *args, **kwargs)

    monkeypatch.setattr(Path, "open", full_disk)
    with pytest.raises(OSError, match="No space"):
        big.save(tmp_path)
    monkeypatch.undo()
    assert sorted(p.name for p in tmp_path.iterdir()) == before
    back = load(tmp_path)
    assert back._mergeable_ranks == small._mergeable_ranks and back._special_tokens == small._special_tokens
    big.save(tmp_path)
    assert load(tmp_path)._mergeable_ranks == big._mergeable_ranks


def test_load_refuses_files_that_do_not_belong_together(tmp_path):
    enc = train(["hello world"] * 20, vocab_size=270, special_tokens=["<|endoftext|>"], progress=False)
    enc.save(tmp_path)
    meta_path = tmp_path / "bytepair.json"
    meta = json.loads(meta_path.read_text())
    ranks_path = tmp_path / meta["ranks_file"]
    good_ranks = ranks_path.read_bytes()

    def with_meta(**changes):
        meta_path.write_text(json.dumps({**meta, **changes}))

    with_meta(special_tokens={"<|endoftext|>": 3})
    with pytest.raises(ValueError, match="gives a token"):
        load(tmp_path)
    with_meta(special_tokens={"<|endoftext|>": -1})
    with pytest.raises(ValueError, match="not in 0..2"):
        load(tmp_path)
    with_meta(n_vocab=meta["n_vocab"] + 5)
    with pytest.raises(ValueError, match="different saves"):
        load(tmp_path)
    with_meta(ranks_file="../" + meta["ranks_file"])
    with pytest.raises(ValueError, match="next to it"):
        load(tmp_path)
    with_meta()
    for bad, message in [(b"", "no ranks"), (b"YQ== -5\n", "not in 0..2"), (b"YQ== 4294967296\n", "not in 0..2")]:
        ranks_path.write_bytes(bad)
        with pytest.raises(ValueError, match=message):
            load(tmp_path)
    # A ranks file cut short so that two tokens share a rank: the error names the save.
    ranks_path.write_bytes(b"YQ== 0\nYg== 0\n")
    with pytest.raises(ValueError, match=f"{re.escape(str(tmp_path))}: rank 0 is given to two"):
        load(tmp_path)
    ranks_path.write_bytes(good_ranks)
    meta_path.write_bytes(b"\xff\xfe{}")
    with pytest.raises(ValueError, match="not UTF-8"):
        load(tmp_path)
    with_meta()
    assert load(tmp_path).encode("hello world") == enc.encode("hello world")


def test_an_iterable_that_raises_leaves_what_it_yielded_counted():
    """As ``Counter.update``: every document yielded before the error (or before an item of the
    wrong type) is counted, in the batch being read and in the one being counted alike."""
    docs = [f"doc{i} common words here" for i in range(200_000)]

    def failing(tail):
        yield from docs
        yield tail

    def raising():
        yield from docs
        raise OSError("the source failed")

    cases = [(raising(), OSError, docs), (failing(7), TypeError, docs), (iter([*docs[:2], None]), TypeError, docs[:2])]
    for source, error, yielded in cases:
        wc = WordCounts(pattern="cl100k_base")
        with pytest.raises(error):
            wc.update(source, progress=False)
        assert counts_dict(wc) == counts_dict(WordCounts(pattern="cl100k_base").update(yielded, progress=False))


def test_an_input_error_behind_a_busy_counter_is_that_error(tmp_path):
    """The reader fails while the counter is still busy with the batches before: the stop this
    sends the counter must not turn the reader's error into a KeyboardInterrupt."""
    line = " ".join(f"w{i}" for i in range(1000)) + "\n"
    (tmp_path / "a.txt").write_text(line * 2400)  # 12 MB: three batches of counting
    (tmp_path / "b.txt.gz").write_bytes(b"\x1f\x8b\x08\x00\x00\x00\x00\x00" + bytes(range(256)) * 8)
    paths = [tmp_path / "a.txt", tmp_path / "b.txt.gz"]
    with pytest.raises(OSError, match=r"b\.txt\.gz"):
        WordCounts(paths, progress=False)
    with pytest.raises(OSError, match=r"b\.txt\.gz"):
        train(paths, vocab_size=300, progress=False)

    def failing():
        for _ in range(3):
            yield line * 800
        raise RuntimeError("the source broke")

    with pytest.raises(RuntimeError, match="the source broke"):
        WordCounts(failing(), progress=False)
    cli = subprocess.run(
        [sys.executable, "-m", "bytepair", "train", *map(str, paths), "--vocab-size", "300", "-o", str(tmp_path / "o")],
        capture_output=True,
        text=True,
    )
    assert cli.returncode == 1 and "b.txt.gz" in cli.stderr, (cli.returncode, cli.stderr)
    assert not (tmp_path / "o").exists()


def test_spilling_that_fails_loses_no_counts(tmp_path):
    """A spill that cannot be written (missing directory, full disk) or read back (a file
    removed or cut by a temp cleaner) is an OSError naming the file; the counts from before stay,
    and a second look gives the same error, not an empty object."""
    docs = gen_corpus(3, 400)
    want = counts_dict(WordCounts(["hello world"] + docs, progress=False))
    wc = WordCounts(["hello world"], progress=False)
    wc._configure(max_memory=1, spill_dir=str(tmp_path / "missing"))
    with pytest.raises(FileNotFoundError, match="missing"):
        wc._count_iter(docs, batch_bytes=5000)
    assert wc["hello"] == 1 and len(wc) > 2

    wc = WordCounts(["hello world"], progress=False)
    wc._configure(max_memory=1, spill_dir=str(tmp_path))
    wc._count_iter(docs, batch_bytes=5000)
    runs = sorted(tmp_path.iterdir())
    assert runs
    runs[-1].write_bytes(runs[-1].read_bytes()[:-3])
    for _ in range(2):
        with pytest.raises(OSError, match="spilled word counts damaged"):
            len(wc)
    runs[-1].unlink()
    for _ in range(2):
        with pytest.raises(FileNotFoundError, match=re.escape(runs[-1].name)):
            wc.total()

    # Many spills: the waiting runs are merged on disk before they pass 64 files.
    wc = WordCounts(["hello world"], progress=False)
    wc._configure(max_memory=1, spill_dir=str(tmp_path))
    most = 0
    for d in docs:
        wc._count_iter([d])
        most = max(most, len(list(tmp_path.glob("bytepair-spill-*"))))
    assert 2 <= most <= 64
    assert counts_dict(wc) == want
    assert not list(tmp_path.glob("bytepair-spill-*"))


def _wordcounts_blob(pattern: str, specials: list[str], entries: list[tuple[bytes, int]]) -> bytes:
    """A WordCounts blob made by hand (version 2: entries prefix-compressed, closing CRC-32)."""
    import struct
    import zlib

    def varint(v: int) -> bytes:
        out = bytearray()
        while v >= 0x80:
            out.append((v & 0x7F) | 0x80)
            v >>= 7
        out.append(v)
        return bytes(out)

    def text(x: str | bytes) -> bytes:
        b = x.encode() if isinstance(x, str) else x
        return varint(len(b)) + b

    blob = b"BPWC\x02" + text(pattern) + varint(len(specials)) + b"".join(text(t) for t in specials)
    blob += varint(len(entries))
    prev = b""
    for w, c in entries:
        shared = 0
        while shared < min(len(prev), len(w)) and prev[shared] == w[shared]:
            shared += 1
        blob += varint(shared) + varint(len(w) - shared) + w[shared:] + varint(c)
        prev = w
    return blob + struct.pack("<I", zlib.crc32(blob))


def test_a_blob_made_by_hand_is_checked_as_the_arguments_are():
    pat = WordCounts().pattern
    good = _wordcounts_blob(pat, ["<s>"], [(b"ab", 3), (b"cd", 1)])
    assert WordCounts.from_bytes(good) == WordCounts.from_dict({"ab": 3, "cd": 1}, special_tokens=["<s>"])
    for pattern, specials, entries, what in [
        ("", [], [(b"ab", 3)], "empty pattern"),
        (pat, ["<s>", "<s>"], [(b"ab", 3)], "duplicate special token"),
        (pat, ["a"], [(b"ab", 3)], "shorter than two bytes"),
        (pat, [], [(b"ab", 0), (b"cd", 5)], "count 0"),
        (pat, [], [(b"", 5), (b"ab", 3)], "count 5"),
    ]:
        with pytest.raises(ValueError, match=what):
            WordCounts.from_bytes(_wordcounts_blob(pattern, specials, entries))


def test_training_on_a_folder_with_no_files_is_an_error(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no input files"):
        train(tmp_path / "empty", vocab_size=300, progress=False)
    with pytest.raises(FileNotFoundError, match="no input files"):
        WordCounts(str(tmp_path / "empty"))


def test_bad_count_arguments_are_clear_errors():
    wc = WordCounts.from_dict({"a": 3, "b": 2, "c": 1})
    # As collections.Counter: a negative n gives nothing, a huge one everything.
    assert wc.most_common(-1) == [] and wc.most_common(-(2**70)) == []
    assert [w for w, _ in wc.most_common(2**70)] == [b"a", b"b", b"c"]
    with pytest.raises(TypeError):
        wc.most_common(1.5)
    with pytest.raises(TypeError, match="counts must map words"):
        train_from_counts("hello", vocab_size=300)
    with pytest.raises(TypeError, match=r"\(word, count\) pairs"):
        train_from_counts([("a", 1), "b"], vocab_size=300)
    with pytest.raises(ValueError, match="lone surrogate"):
        train(["hello"], vocab_size=300, special_tokens=["<|\ud800|>"], progress=False)


@pytest.mark.parametrize(
    "pattern, exported",
    [
        (r"\pL+|\s|.", True),  # \pL is \p{L}, which Oniguruma spells with braces only
        (r"^\s+|\S+|\s+", True),  # ^ is the start of the text, not of each line
        (r"\S+|\w+$|\s+", True),  # $ likewise the end of the text
        (r"(?i:hello)|\w+|\s+|[^\w\s]+", True),
        (r"\w+|\s", False),  # leaves punctuation unmatched: tiktoken drops it, tokenizers keeps it
        (r"\S+", False),
        (r"(?s)\w+.|\s+|.", True),  # Rust's s flag (. matches \n) is Oniguruma's m
        (r"(?m)^.+$|\s|.", True),  # Rust's m flag (^ and $ at lines) is Oniguruma's default
        (r"(?i)(?sm:\w+.)|(?-s:\s.)|\s|.", True),
        (r"(?U)\w+|\s|.", False),  # a flag Oniguruma does not know
        (r"[\w--\d]+|\d|\s|[^\w\s]", False),  # class subtraction, likewise
    ],
)
def test_hugging_face_export_of_custom_patterns_is_faithful_or_refused(pattern, exported, tmp_path):
    tokenizers = pytest.importorskip("tokenizers")
    from bytepair.train import _HF_PROBE

    enc = train([_HF_PROBE * 3, "foo\nfoo bar\n"], vocab_size=300, pattern=pattern, progress=False)
    out = tmp_path / "hf"
    if not exported:
        with pytest.raises(ValueError, match="no equivalent for Hugging Face"):
            enc.to_huggingface(out)
        assert not (out / "tokenizer.json").exists()
        return
    enc.to_huggingface(out)
    hf = tokenizers.Tokenizer.from_file(str(out / "tokenizer.json"))
    for text in ["foo\nfoo", "  déjà vu\n\nLLL ppp !!", _corpus_text(3000), "Привет, мир 123"]:
        assert hf.encode(text).ids == enc.encode(text), text[:40]


def test_a_special_token_in_byte_level_letters_is_refused_by_the_export(tmp_path):
    """``ĀĀ`` is how tokenizers' byte-level model spells the bytes 00 00, so its vocabulary entry
    would also be found for that text."""
    pytest.importorskip("tokenizers")
    enc = train(["hello world"] * 20, vocab_size=270, special_tokens=["ĀĀ", "<|endoftext|>"], progress=False)
    with pytest.raises(ValueError, match="byte-level letters"):
        enc.to_huggingface(tmp_path / "hf")
    fine = train(["hello world"] * 20, vocab_size=270, special_tokens=["<|endoftext|>", "<|é|>"], progress=False)
    fine.to_huggingface(tmp_path / "ok")
