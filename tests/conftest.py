"""Shared fixtures for the test suite.

* An offline tiktoken: a session-scoped cache folder built from ``../shared/vocab`` (each rank file
  stored as ``sha1(url)``), pointed to by ``TIKTOKEN_CACHE_DIR`` before tiktoken loads anything.
* The shared corpora (``../shared/corpus``); tests that need them skip cleanly when absent.
* ``(bytepair, tiktoken)`` encoding pairs for every built-in encoding (``gpt2`` is compared through
  tiktoken's ``r50k_base``: same ranks, same pattern, same special token).
* Modes: the default run is fast; ``BYTEPAIR_FULL_DIFF=1`` (or ``--run-slow``) runs the tests marked
  ``slow`` and raises hypothesis' ``max_examples``. The hypothesis profile is derandomized, so CI runs
  are reproducible. ``HYPOTHESIS_PROFILE=bytepair-fuzz`` instead draws fresh random examples on each
  run (``BYTEPAIR_FUZZ_EXAMPLES`` of them per test where a test does not set its own count, 20,000 by
  default): the long fuzzing job. ``HYPOTHESIS_PROFILE=bytepair-quick`` draws 40 (CI's runs on
  each further CPython version).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import sys
from pathlib import Path

import pytest

# tiktoken's Rust panics print a full backtrace otherwise (we provoke some on purpose).
os.environ.setdefault("RUST_BACKTRACE", "0")

# A run started in the background by a non-interactive shell (`cmd &`, a scheduler) inherits
# SIGINT ignored, and Python then never turns it into KeyboardInterrupt: the Ctrl-C tests (here,
# and in the children they start, which inherit an ignored signal but not a handler) need it.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

ROOT = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("BYTEPAIR_SHARED_DIR", ROOT.parent / "shared"))  # override for tests of the skips
VOCAB_DIR = SHARED / "vocab"
CORPUS_DIR = SHARED / "corpus"

ENCODING_NAMES = [
    "gpt2",
    "r50k_base",
    "p50k_base",
    "p50k_edit",
    "cl100k_base",
    "o200k_base",
    "o200k_harmony",
]
# The name tiktoken knows each encoding by, offline.
TIKTOKEN_NAME = {name: name for name in ENCODING_NAMES} | {"gpt2": "r50k_base"}
RANK_FILES = ["r50k_base", "p50k_base", "cl100k_base", "o200k_base"]
RANK_FILE_OF = {
    "gpt2": "r50k_base",
    "r50k_base": "r50k_base",
    "p50k_base": "p50k_base",
    "p50k_edit": "p50k_base",
    "cl100k_base": "cl100k_base",
    "o200k_base": "o200k_base",
    "o200k_harmony": "o200k_base",
}
OPENAI_URL = "https://openaipublic.blob.core.windows.net/encodings/{}.tiktoken"

FULL = os.environ.get("BYTEPAIR_FULL_DIFF", "") not in ("", "0")


def replace_surrogates(text: str) -> str:
    """``text`` with each lone surrogate replaced by U+FFFD, as bytepair encodes it (tiktoken raises
    on lone surrogates in some calls, so comparisons give it this text)."""
    return text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")


def tiktoken_cache_key(name: str) -> str:
    return hashlib.sha1(OPENAI_URL.format(name).encode()).hexdigest()


# ----------------------------------------------------------------------------- hypothesis

try:
    from hypothesis import HealthCheck, settings

    _common = {
        "derandomize": True,
        "deadline": None,
        "database": None,
        "print_blob": True,
        "suppress_health_check": [HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
    }
    settings.register_profile("bytepair-ci", max_examples=150, **_common)
    settings.register_profile("bytepair-full", max_examples=2500, **_common)
    # CI's runs on each further CPython version (HYPOTHESIS_PROFILE=bytepair-quick): they check
    # what the interpreter can change (the binding), not the encoder again, so fewer examples.
    settings.register_profile("bytepair-quick", max_examples=40, **_common)
    # Long fuzzing runs (HYPOTHESIS_PROFILE=bytepair-fuzz): fresh random examples each run, as
    # many as BYTEPAIR_FUZZ_EXAMPLES; a failure prints the blob that reproduces it.
    settings.register_profile(
        "bytepair-fuzz",
        max_examples=int(os.environ.get("BYTEPAIR_FUZZ_EXAMPLES", "20000")),
        **{**_common, "derandomize": False},
    )
    settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "bytepair-full" if FULL else "bytepair-ci"))
except ImportError:  # pragma: no cover - hypothesis is in the test extras
    pass


# ----------------------------------------------------------------------------- slow mode


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--run-slow", action="store_true", default=False, help="run tests marked slow")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "slow: long-running differential tests (BYTEPAIR_FULL_DIFF=1)")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    markexpr = config.getoption("-m", default="") or ""
    if FULL or config.getoption("--run-slow") or "slow" in markexpr:
        return
    skip = pytest.mark.skip(reason="slow: set BYTEPAIR_FULL_DIFF=1 or pass --run-slow")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


# ----------------------------------------------------------------------------- offline tiktoken


def _have_vocab() -> bool:
    return all((VOCAB_DIR / f"{n}.tiktoken").is_file() for n in RANK_FILES)


@pytest.fixture(scope="session")
def tiktoken_cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A TIKTOKEN_CACHE_DIR holding the official rank files under tiktoken's cache names."""
    if not _have_vocab():
        pytest.skip(f"rank files not found in {VOCAB_DIR}")
    cache = tmp_path_factory.mktemp("tiktoken-cache")
    for name in RANK_FILES:
        shutil.copyfile(VOCAB_DIR / f"{name}.tiktoken", cache / tiktoken_cache_key(name))
    return cache


@pytest.fixture(scope="session")
def tiktoken(tiktoken_cache_dir: Path):
    """The reference tiktoken module, made to run offline from ``../shared/vocab``."""
    tk = pytest.importorskip("tiktoken")
    import tiktoken.load  # noqa: F401  (tests call tiktoken.load.*, whatever ran before them)

    os.environ["TIKTOKEN_CACHE_DIR"] = str(tiktoken_cache_dir)
    return tk


@pytest.fixture(scope="session")
def tt_encodings(tiktoken, tiktoken_cache_dir: Path) -> dict:
    """Lazily loaded tiktoken encodings, keyed by *bytepair's* names."""

    class _Lazy(dict):
        def __missing__(self, name: str):
            os.environ["TIKTOKEN_CACHE_DIR"] = str(tiktoken_cache_dir)
            enc = tiktoken.get_encoding(TIKTOKEN_NAME[name])
            self[name] = enc
            return enc

    return _Lazy()


@pytest.fixture(scope="session")
def bp_encodings() -> dict:
    import bytepair

    class _Lazy(dict):
        def __missing__(self, name: str):
            enc = bytepair.get_encoding(name)
            self[name] = enc
            return enc

    return _Lazy()


@pytest.fixture(params=ENCODING_NAMES)
def encoding_name(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
def pair(encoding_name: str, bp_encodings, tt_encodings):
    """``(bytepair Encoding, tiktoken Encoding)`` for one built-in encoding."""
    return bp_encodings[encoding_name], tt_encodings[encoding_name]


@pytest.fixture(scope="session")
def all_pairs(bp_encodings, tt_encodings) -> list:
    """``[(name, bytepair Encoding, tiktoken Encoding)]`` for every built-in encoding."""
    return [(n, bp_encodings[n], tt_encodings[n]) for n in ENCODING_NAMES]


# ----------------------------------------------------------------------------- corpora


@pytest.fixture(scope="session")
def corpus_texts() -> dict[str, str]:
    """Contents of ``../shared/corpus/{en,code,multi}.txt``, read once (skip if absent)."""
    texts = {}
    for name in ("en", "code", "multi"):
        path = CORPUS_DIR / f"{name}.txt"
        if path.is_file():
            texts[name] = path.read_text(encoding="utf-8", errors="replace")
    if not texts:
        pytest.skip(f"no corpus found in {CORPUS_DIR}")
    return texts


def pytest_terminal_summary(terminalreporter) -> None:
    """Prints how many inputs were compared with tiktoken, per kind and encoding."""
    mod = sys.modules.get("test_differential")
    cases = getattr(mod, "CASES", None)
    if not cases:
        return
    terminalreporter.section("differential inputs compared with tiktoken")
    for kind in sorted({k for k, _ in cases}):
        per = {n: c for (k, n), c in cases.items() if k == kind}
        order = [n for n in ENCODING_NAMES if n in per] + sorted(n for n in per if n not in ENCODING_NAMES)
        detail = ", ".join(f"{n}={per[n]}" for n in order)
        terminalreporter.write_line(f"{kind}: {sum(per.values())} ({detail})")
