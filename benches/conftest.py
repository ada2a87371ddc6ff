"""Shared fixtures for the pytest-benchmark suites.

* An offline tiktoken: unless ``TIKTOKEN_CACHE_DIR`` is already set, a private cache folder is
  filled with bytepair's bundled rank files (checked against the official SHA-256) before tiktoken
  loads anything.
* The shared corpora (``../shared/corpus``: ``en.txt``, ``code.txt``, ``multi.txt``) cut into
  ~4 KB documents; benchmarks that need them skip cleanly when absent.
* Fresh text: :class:`DocStream` hands out the next unseen slice of documents on every round, so
  no implementation encodes the same document twice in a process. Each workload reads its own
  disjoint share of the corpus, so workloads do not warm each other's caches either.
* Sizes: with ``--benchmark-disable`` (the normal test run) every benchmark runs once on a small
  slice as a smoke test; with ``--benchmark-enable`` they measure over many rounds.
"""

from __future__ import annotations

import importlib
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from bytepair.bench import prepare_tiktoken_cache, split_documents

ROOT = Path(__file__).resolve().parent.parent
CORPUS_DIR = Path(os.environ.get("BYTEPAIR_BENCH_CORPUS", ROOT.parent / "shared" / "corpus"))
CATEGORIES = {"en": "en.txt", "code": "code.txt", "multi": "multi.txt"}
ENCODINGS = ["cl100k_base", "o200k_base"]
WORKLOADS = ["encode_ordinary", "encode_special", "count", "batch", "batch_1thread", "batch_small", "short"]

# Workloads whose figures are compared with each other (the batch's 2-thread / 1-thread scaling):
# they read alternate slices of one block, so that both see the same mix of text.
PAIRED = {"batch": "batch_1thread"}

# Per round: documents handed to the timed function, and rounds when measuring.
DOCS_PER_ROUND = {"batch": 64, "batch_1thread": 64, "batch_small": 8, "short": 64}
DEFAULT_DOCS_PER_ROUND = 16
MEASURE_ROUNDS = 20
SMOKE_DOCS = 64  # per category and workload, when benchmarks are disabled

_CACHE_DIR = tempfile.mkdtemp(prefix="bytepair-bench-tiktoken-")
prepare_tiktoken_cache(_CACHE_DIR, ENCODINGS)


def _peer(module: str) -> Any | None:
    try:
        return importlib.import_module(module)
    except ImportError:
        return None


IMPLS = {"bytepair": "bytepair", "tiktoken": "tiktoken", "bpe-openai": "bpe_openai", "riptoken": "riptoken"}


def available_impls() -> list[str]:
    """bytepair, tiktoken, and the fast forks bpe-openai and riptoken when installed."""
    return [name for name, module in IMPLS.items() if _peer(module) is not None]


def measuring(config: pytest.Config) -> bool:
    """True when pytest-benchmark is enabled (``--benchmark-enable``)."""
    try:
        return not (config.getoption("benchmark_disable") and not config.getoption("benchmark_enable"))
    except ValueError:  # pytest-benchmark not installed
        return False


def docs_per_round(workload: str) -> int:
    return DOCS_PER_ROUND.get(workload, DEFAULT_DOCS_PER_ROUND)


class DocStream:
    """Hands out consecutive unseen slices of one workload's share of a category's documents."""

    def __init__(self, docs: list[str]) -> None:
        self.docs = docs
        self.pos = 0

    def rounds(self, n: int, most: int) -> int:
        """How many slices of ``n`` documents are left, up to ``most`` (at least 1)."""
        return max(1, min(most, (len(self.docs) - self.pos) // n))

    def next(self, n: int) -> list[str]:
        if self.pos >= len(self.docs):
            raise RuntimeError("out of fresh documents; lower MEASURE_ROUNDS or raise the corpus budget")
        out = self.docs[self.pos : self.pos + n]
        self.pos += n
        return out


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Benchmarks taking an ``impl`` argument run once per available implementation."""
    if "impl" in metafunc.fixturenames:
        metafunc.parametrize("impl", available_impls())


@dataclass(frozen=True)
class BenchSettings:
    measuring: bool
    rounds: int

    def docs_per_round(self, workload: str) -> int:
        return docs_per_round(workload)


@pytest.fixture(scope="session")
def bench_settings(request: pytest.FixtureRequest) -> BenchSettings:
    """Whether this run measures (``--benchmark-enable``), and how many rounds each benchmark runs."""
    on = measuring(request.config)
    return BenchSettings(on, MEASURE_ROUNDS if on else 1)


@pytest.fixture(scope="session")
def impl_module():
    """``impl_module(name)``: the module of an implementation (``bpe-openai`` -> ``bpe_openai``)."""
    return lambda impl: importlib.import_module(IMPLS[impl])


def _needs(rounds: int) -> dict[str, int]:
    """Documents each workload reads per category: its rounds times its slice."""
    return {w: rounds * docs_per_round(w) for w in WORKLOADS}


@pytest.fixture(scope="session")
def bench_corpus(bench_settings: BenchSettings) -> dict[str, list[str]]:
    """Documents (~4 KB) per category, read from the start of each shared corpus file."""
    if not CORPUS_DIR.is_dir():
        pytest.skip(f"no shared corpus at {CORPUS_DIR}")
    if bench_settings.measuring:
        n_docs = sum(_needs(bench_settings.rounds).values())
    else:
        n_docs = len(WORKLOADS) * SMOKE_DOCS
    budget = (n_docs + 1) * 4096
    corpus = {}
    for cat, name in CATEGORIES.items():
        path = CORPUS_DIR / name
        if not path.is_file():
            continue
        with open(path, encoding="utf-8") as f:
            text = f.read(budget)
        corpus[cat] = split_documents([text])
    if not corpus:
        pytest.skip(f"no en.txt/code.txt/multi.txt in {CORPUS_DIR}")
    return corpus


@pytest.fixture
def fresh_docs(bench_corpus: dict[str, list[str]], bench_settings: BenchSettings):
    """``fresh_docs(category, workload)`` -> a :class:`DocStream` over that workload's block.

    Workloads read disjoint blocks of the corpus. Every implementation gets its own stream over
    the same block, so they are compared on identical text while each sees each document once.
    When measuring, each stream holds ``rounds`` slices (fewer if the corpus is short).
    """

    def make(category: str, workload: str) -> DocStream:
        if category not in bench_corpus:
            pytest.skip(f"no {CATEGORIES[category]} in {CORPUS_DIR}")
        docs = bench_corpus[category]
        if bench_settings.measuring:
            needs = _needs(bench_settings.rounds)
        else:
            needs = {w: SMOKE_DOCS for w in WORKLOADS}
        scale = min(1.0, len(docs) / sum(needs.values()))
        sizes = {w: int(n * scale) for w, n in needs.items()}
        pair = PAIRED.get(workload) or next((a for a, b in PAIRED.items() if b == workload), None)
        if pair is None:
            start = sum(sizes[w] for w in WORKLOADS[: WORKLOADS.index(workload)])
            block = docs[start : start + sizes[workload]]
        else:
            # Two workloads compared with each other take alternate slices of their joint block.
            first = min(WORKLOADS.index(workload), WORKLOADS.index(pair))
            begin = sum(sizes[w] for w in WORKLOADS[:first])
            joint = docs[begin : begin + sizes[workload] + sizes[pair]]
            k = docs_per_round(workload)
            side = 0 if WORKLOADS.index(workload) == first else 1
            block = [d for i in range(side * k, len(joint), 2 * k) for d in joint[i : i + k]]
        if len(block) < docs_per_round(workload) and bench_settings.measuring:
            pytest.skip(f"corpus {category} too small to measure {workload}")
        return DocStream(block)

    return make
