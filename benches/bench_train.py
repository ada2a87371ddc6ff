"""Training benchmarks: bytepair against rustbpe and Hugging Face tokenizers, side by side.

Each trainer runs in its own subprocess on the same documents with the same split pattern
(cl100k's); we record wall time, peak resident memory (``VmHWM`` of the child process) and
whether the learned merges equal rustbpe's.

- With ``--benchmark-disable`` (the default in ``pyproject.toml``) every bench is a smoke test on a
  few hundred KB of the corpus.
- ``pytest benches/bench_train.py --benchmark-enable`` runs the real sizes: all of
  ``../shared/corpus`` (en.txt + code.txt + multi.txt, about 69 MB) to ``BYTEPAIR_BENCH_VOCAB``
  tokens (default 32768). Results also go to ``bench-out/bench_train.json``.

- ``BYTEPAIR_BENCH_TRAIN_CORPUS=PATH[:PATH...]`` replaces that corpus in the real-size run: text
  files, or directories (their files, recursively, in path order). Issue #4's measurement, about
  500 MB of C source built by ``benches/c_corpus.py`` (its docstring has the download), without
  Hugging Face's trainer and the 4x memory check, which are slow at that size::

      BYTEPAIR_BENCH_TRAIN_CORPUS=/tmp/c-corpus pytest benches/bench_train.py --benchmark-enable \
          -s -k "not hf and not flat"

Documents are the lines of the corpus files (as rustbpe's README feeds it). bytepair runs twice:
from a Python iterator of lines, and from a ``.jsonl`` file with the same lines, read in Rust.
Peers that are not installed are skipped; so is everything when the corpus is absent.

Run one trainer by hand: ``python benches/bench_train.py worker rustbpe lines 32768 FILE...``.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Optional

import pytest

ROOT = Path(__file__).resolve().parent.parent
CORPUS = ROOT.parent / "shared" / "corpus"
FILES = ["en.txt", "code.txt", "multi.txt"]
SMOKE_BYTES = 120_000  # per file
SMOKE_VOCAB = 2000

CL100K = (
    r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}++|\p{N}{1,3}+| ?[^\s\p{L}\p{N}]++[\r\n]*+"""
    r"""|\s++$|\s*[\r\n]|\s+(?!\S)|\s"""
)


# ------------------------------------------------------------------------------------------------
# The worker: one trainer, one run, in a fresh process.


def _lines(files: list[str]):
    for f in files:
        with open(f, encoding="utf-8") as fh:
            yield from fh


def _worker(trainer: str, mode: str, vocab: int, files: list[str]) -> dict[str, Any]:
    t0 = time.perf_counter()
    if trainer == "rustbpe":
        import rustbpe

        tok = rustbpe.Tokenizer()
        tok.train_from_iterator(_lines(files), vocab, pattern=CL100K)
        ranks = sorted(tok.get_mergeable_ranks(), key=lambda kv: kv[1])
        tokens = [bytes(t) for t, _ in ranks]
    elif trainer == "hf":
        from tokenizers import Regex, Tokenizer, models, pre_tokenizers, trainers

        tok = Tokenizer(models.BPE())
        tok.pre_tokenizer = pre_tokenizers.Sequence(
            [
                # Oniguruma reads `{1,3}+` as `({1,3})+`: drop the possessive `+` there.
                pre_tokenizers.Split(Regex(CL100K.replace("{1,3}+", "{1,3}")), behavior="isolated"),
                pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
            ]
        )
        tr = trainers.BpeTrainer(
            vocab_size=vocab, show_progress=False, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
        )
        tok.train_from_iterator(_lines(files), tr)
        # Imported here, so that other trainers' peak memory does not include bytepair's.
        from bytepair.train import _bytes_to_unicode  # GPT-2's byte alphabet

        u2b = {c: b for b, c in _bytes_to_unicode().items()}
        model = json.loads(tok.to_str())["model"]
        merges = [m.split(" ") if isinstance(m, str) else m for m in model["merges"]]
        tokens = [bytes([i]) for i in range(256)]
        tokens += [bytes(u2b[c] for c in a + b) for a, b in merges]
    elif trainer == "bytepair":
        from bytepair.train import train

        data: Any = _lines(files) if mode == "lines" else files
        enc = train(data, vocab_size=vocab, pattern=CL100K, progress=False)
        tokens = [t for t, _ in sorted(enc._mergeable_ranks.items(), key=lambda kv: kv[1])]
    else:
        raise ValueError(trainer)
    seconds = time.perf_counter() - t0
    merged = tokens[256:]
    return {
        "seconds": seconds,
        "n_merges": len(merged),
        "peak_mib": _peak_mib(),
        "merges_sha": hashlib.sha256(b"\0".join(merged)).hexdigest(),
    }


def _peak_mib() -> float:
    """Peak resident memory of this process image (VmHWM). Not ``ru_maxrss``: on Linux that
    keeps the high-water mark of the parent's image from before ``exec``."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_trainer(trainer: str, mode: str, vocab: int, files: list[str]) -> dict[str, Any]:
    """Runs one trainer in a subprocess; its result includes its peak memory (MiB)."""
    cmd = [sys.executable, __file__, "worker", trainer, mode, str(vocab), *files]
    env = dict(os.environ, TIKTOKEN_CACHE_DIR=os.environ.get("TIKTOKEN_CACHE_DIR", "/tmp/ttcache"))
    p = subprocess.run(cmd, capture_output=True, env=env)
    if p.returncode != 0:
        raise RuntimeError(f"{trainer} failed ({p.returncode}):\n{p.stderr.decode(errors='replace')[-3000:]}")
    res = json.loads(p.stdout.decode().strip().splitlines()[-1])
    res.update(trainer=trainer, mode=mode, vocab=vocab)
    return res


# ------------------------------------------------------------------------------------------------
# The benchmarks


def _corpus_files(spec: str) -> list[str]:
    """The files of ``BYTEPAIR_BENCH_TRAIN_CORPUS``: paths separated by ``os.pathsep``, directories
    expanded to their files (recursively, hidden ones left out), in path order."""
    files: list[str] = []
    for part in filter(None, spec.split(os.pathsep)):
        p = Path(part)
        if p.is_dir():
            files += sorted(
                str(f)
                for f in p.rglob("*")
                if f.is_file() and not any(x.startswith(".") for x in f.relative_to(p).parts)
            )
        elif p.is_file():
            files.append(str(p))
        else:
            raise FileNotFoundError(f"BYTEPAIR_BENCH_TRAIN_CORPUS: {part} not found")
    if not files:
        raise FileNotFoundError(f"BYTEPAIR_BENCH_TRAIN_CORPUS={spec!r}: no files")
    return files


def _have(mod: str) -> bool:
    try:
        __import__(mod)
        return True
    except ImportError:
        return False


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    return tmp_path_factory.mktemp("bench_train")


class Setup:
    """Corpus files for one size (smoke or full), shared by the benches of a session."""

    cache: dict[bool, Setup] = {}

    def __init__(self, full: bool, workdir: Path) -> None:
        own = os.environ.get("BYTEPAIR_BENCH_TRAIN_CORPUS")
        if full and own:
            self.files = _corpus_files(own)
            self.vocab = int(os.environ.get("BYTEPAIR_BENCH_VOCAB", "32768"))
        elif not all((CORPUS / f).exists() for f in FILES):
            pytest.skip(f"corpus not found at {CORPUS}")
        elif full:
            self.files = [str(CORPUS / f) for f in FILES]
            self.vocab = int(os.environ.get("BYTEPAIR_BENCH_VOCAB", "32768"))
        else:
            self.files = []
            for f in FILES:
                text = (CORPUS / f).read_bytes()[:SMOKE_BYTES].decode("utf-8", "ignore")
                dst = workdir / f"smoke-{f}"
                dst.write_text(text, encoding="utf-8")
                self.files.append(str(dst))
            self.vocab = SMOKE_VOCAB
        self.workdir, self.full = workdir, full
        self._jsonl: Optional[str] = None
        self.size = sum(os.path.getsize(f) for f in self.files)
        self.results: dict[str, dict[str, Any]] = {}

    @property
    def jsonl(self) -> str:
        """The same documents as a .jsonl file, for bytepair's Rust reader (written on first use)."""
        if self._jsonl is None:
            path = str(self.workdir / f"lines-{'full' if self.full else 'smoke'}.jsonl")
            with open(path, "w", encoding="utf-8") as out:
                out.writelines(json.dumps({"text": line}, ensure_ascii=False) + "\n" for line in _lines(self.files))
            self._jsonl = path
        return self._jsonl

    @classmethod
    def get(cls, full: bool, workdir: Path) -> Setup:
        if full not in cls.cache:
            cls.cache[full] = Setup(full, workdir)
        return cls.cache[full]

    def reference(self) -> Optional[dict[str, Any]]:
        """rustbpe's run (the reference for merges, time and memory), if installed."""
        if "rustbpe" not in self.results and _have("rustbpe"):
            self.results["rustbpe"] = run_trainer("rustbpe", "lines", self.vocab, self.files)
        return self.results.get("rustbpe")


CASES = [("rustbpe", "lines"), ("hf", "lines"), ("bytepair", "lines"), ("bytepair", "jsonl")]


@pytest.mark.parametrize("trainer,mode", CASES, ids=[f"{t}-{m}" for t, m in CASES])
def test_train(benchmark, workdir, trainer, mode):
    full = not benchmark.disabled
    setup = Setup.get(full, workdir)
    module = {"rustbpe": "rustbpe", "hf": "tokenizers", "bytepair": "bytepair"}[trainer]
    if not _have(module):
        pytest.skip(f"{module} not installed")
    files = [setup.jsonl] if mode == "jsonl" else setup.files
    key = f"{trainer}-{mode}"
    if key == "rustbpe-lines":
        # The reference run (the other benches reuse it), timed by this bench when it runs first.
        res = benchmark.pedantic(setup.reference, rounds=1, iterations=1)
        ref = res
    else:
        ref = setup.reference()
        res = benchmark.pedantic(
            run_trainer,
            args=(trainer, "files" if mode == "jsonl" else mode, setup.vocab, files),
            rounds=1,
            iterations=1,
        )
    res["corpus_bytes"] = setup.size
    res["corpus_files"] = len(setup.files)
    res["mb_per_s"] = setup.size / 1e6 / res["seconds"]
    if ref is not None:
        res["merges_equal_rustbpe"] = res["merges_sha"] == ref["merges_sha"]
        res["speedup_vs_rustbpe"] = ref["seconds"] / res["seconds"]
        res["memory_vs_rustbpe"] = res["peak_mib"] / ref["peak_mib"]
    setup.results[key] = res
    benchmark.extra_info.update(res)
    print(
        f"\n{key}: {res['seconds']:.2f} s, peak {res['peak_mib']:.0f} MiB, "
        f"merges equal rustbpe: {res.get('merges_equal_rustbpe')}"
    )
    if trainer == "bytepair" and ref is not None:
        assert res["merges_equal_rustbpe"], "bytepair's merges differ from rustbpe's"
    if full:
        out = ROOT / "bench-out"
        out.mkdir(exist_ok=True)
        (out / "bench_train.json").write_text(json.dumps(setup.results, indent=2))


def test_flat_memory(benchmark, workdir):
    """Peak memory with a corpus repeated 1x and 4x (same distinct words) stays about flat."""
    full = not benchmark.disabled
    setup = Setup.get(full, workdir)
    base = Path(setup.jsonl)
    big = workdir / f"x4-{base.name}"
    if not big.exists():
        data = base.read_bytes()
        big.write_bytes(data * 4)

    def both():
        one = run_trainer("bytepair", "files", setup.vocab, [str(base)])
        four = run_trainer("bytepair", "files", setup.vocab, [str(big)])
        return {
            "peak_mib_1x": one["peak_mib"],
            "peak_mib_4x": four["peak_mib"],
            "seconds_1x": one["seconds"],
            "seconds_4x": four["seconds"],
            "same_merges": one["merges_sha"] == four["merges_sha"],
        }

    res = benchmark.pedantic(both, rounds=1, iterations=1)
    benchmark.extra_info.update(res)
    print(f"\nflat memory: 1x {res['peak_mib_1x']:.0f} MiB, 4x {res['peak_mib_4x']:.0f} MiB")
    if full:
        assert res["peak_mib_4x"] < 1.25 * res["peak_mib_1x"] + 16


if __name__ == "__main__" and len(sys.argv) > 1 and sys.argv[1] == "worker":
    _, _, trainer, mode, vocab, *files = sys.argv
    print(json.dumps(_worker(trainer, mode, int(vocab), files)))
