"""A small, obviously correct byte-level BPE trainer: the reference the native trainer is tested
against. Slow on purpose: every merge recounts every pair of every word from scratch.

Rules (API.md, "Training"):
- text is split into pieces by the pattern (the `regex` module); special tokens are cut out
  first and the text around them is split separately; invalid UTF-8 in bytes documents is kept
  as bytes, each maximal invalid sequence being a piece of its own;
- a word's symbols start as its byte values; a merge of (a, b) into a new id replaces
  non-overlapping occurrences left to right;
- each step merges the pair with the highest total count (over all adjacent positions, counts
  weighted by word frequency); ties go to the smallest (a, b); merge i creates id 256 + i.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Optional, Union

import regex


def _valid_runs(data: bytes) -> list[tuple[bool, bytes]]:
    """Splits bytes into (is_valid_utf8, chunk) runs; invalid runs are maximal subparts."""
    out: list[tuple[bool, bytes]] = []
    pos = 0
    while pos < len(data):
        try:
            data[pos:].decode("utf-8")
            out.append((True, data[pos:]))
            break
        except UnicodeDecodeError as e:
            if e.start > 0:
                out.append((True, data[pos : pos + e.start]))
            out.append((False, data[pos + e.start : pos + e.end]))
            pos += e.end
    return out


def count_words(docs: Iterable[Union[str, bytes]], pattern: str, special_tokens: Sequence[str] = ()) -> Counter:
    pat = regex.compile(pattern)
    specials = sorted(special_tokens, key=len, reverse=True)
    special_re = regex.compile("|".join(regex.escape(s) for s in specials)) if specials else None
    counts: Counter = Counter()
    for doc in docs:
        if isinstance(doc, str):  # surrogates: tiktoken's rule (pairs joined, lone ones U+FFFD)
            doc = doc.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
        data = doc.encode("utf-8") if isinstance(doc, str) else bytes(doc)
        segments = [data]
        if special_re is not None:
            text = data.decode("utf-8", "surrogateescape")
            segments = [s.encode("utf-8", "surrogateescape") for s in special_re.split(text)]
        for seg in segments:
            for valid, chunk in _valid_runs(seg):
                if not valid:
                    counts[chunk] += 1
                    continue
                for piece in pat.findall(chunk.decode("utf-8")):
                    if piece:
                        counts[piece.encode("utf-8")] += 1
    return counts


def merge_word(word: list[int], pair: tuple[int, int], new_id: int) -> list[int]:
    out: list[int] = []
    i = 0
    while i < len(word):
        if i + 1 < len(word) and (word[i], word[i + 1]) == pair:
            out.append(new_id)
            i += 2
        else:
            out.append(word[i])
            i += 1
    return out


def pair_counts(words: dict[bytes, list[int]], counts: dict[bytes, int]) -> Counter:
    pc: Counter = Counter()
    for w, syms in words.items():
        for a, b in zip(syms, syms[1:]):
            pc[(a, b)] += counts[w]
    return pc


def train(
    counts: dict[bytes, int], num_merges: int, *, min_frequency: int = 1, max_token_length: Optional[int] = None
) -> list[tuple[int, int]]:
    """The merge list: merge i joins pair i into token 256 + i."""
    words = {w: list(w) for w, c in counts.items() if c > 0}
    token_len = [1] * 256
    merges: list[tuple[int, int]] = []
    while len(merges) < num_merges:
        pc = pair_counts(words, counts)
        candidates = [
            (c, p)
            for p, c in pc.items()
            if max_token_length is None or token_len[p[0]] + token_len[p[1]] <= max_token_length
        ]
        if not candidates:
            break
        best_count = max(c for c, _ in candidates)
        if best_count < max(min_frequency, 1):
            break
        pair = min(p for c, p in candidates if c == best_count)
        new_id = 256 + len(merges)
        merges.append(pair)
        token_len.append(token_len[pair[0]] + token_len[pair[1]])
        words = {w: merge_word(s, pair, new_id) for w, s in words.items()}
    return merges


def token_bytes(merges: Sequence[tuple[int, int]]) -> list[bytes]:
    toks = [bytes([i]) for i in range(256)]
    for a, b in merges:
        toks.append(toks[a] + toks[b])
    return toks


def encode_word(word: bytes, merges: Sequence[tuple[int, int]]) -> list[int]:
    """Applies the merges in training order to one piece (merge-list BPE)."""
    syms = list(word)
    for i, pair in enumerate(merges):
        if len(syms) < 2:
            break
        syms = merge_word(syms, pair, 256 + i)
    return syms
