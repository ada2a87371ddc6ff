"""The ``bytepair`` command line: ``bench --quick`` end to end, and the commands still to come."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import bytepair
from bytepair import bench, cli


def _run(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    env.pop("TIKTOKEN_CACHE_DIR", None)  # bench must prepare tiktoken's cache itself
    return subprocess.run(
        [sys.executable, "-m", "bytepair", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )


@pytest.fixture
def small_corpus(tmp_path: Path) -> Path:
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "prose.txt").write_text(
        "The quick brown fox jumps over the lazy dog. It's 2024; naïve café déjà vu.\n" * 300
    )
    lines = [json.dumps({"text": f"def f{i}(x):\n    return x * {i}  # 日本語 {i}\n"}) for i in range(200)]
    (corpus / "code.jsonl").write_text("\n".join(lines) + "\n")
    return corpus


def test_bench_quick_writes_results_and_chart(tmp_path: Path, small_corpus: Path) -> None:
    pytest.importorskip("tiktoken")
    out = tmp_path / "out"
    proc = _run(
        "bench",
        "--quick",
        "--out",
        str(out),
        "--corpus",
        str(small_corpus / "prose.txt"),
        str(small_corpus / "code.jsonl"),
        "--only",
        "encode_ordinary",
        "encode",
        "count",
        "batch",
        "linearity",
        "training",
        "embeddings",
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "MISMATCH" not in proc.stdout + proc.stderr
    data = json.loads((out / "results.json").read_text())
    assert data["ok"] is True
    # Peers' own differences (riptoken's on long pieces, when installed) are listed too.
    assert [m for m in data["mismatches"] if m["impl"] == "bytepair"] == []
    assert set(data["corpus"]) == {"prose", "code"}
    assert data["machine"]["cpus_usable"] >= 1
    impls = {r["impl"] for r in data["results"]}
    assert {"bytepair", "tiktoken"} <= impls
    rows = [r for r in data["results"] if r["workload"] == "encode_ordinary" and r["impl"] == "bytepair"]
    assert rows and all(r["value"] and r["agree"] for r in rows)
    # Training: bytepair timed, and checked against rustbpe's ranks when rustbpe is installed.
    train = {r["impl"]: r for r in data["results"] if r["workload"] == "training"}
    assert train["bytepair"]["value"] > 0
    assert data["config"]["baselines"]["training"] == "rustbpe"
    if _has("rustbpe"):
        assert train["bytepair"]["agree"] is True, train["bytepair"]
        assert train["rustbpe"]["value"] > 0
    else:
        assert any("rustbpe" in n for n in data["notes"])
    mem = [r for r in data["results"] if r["workload"] == "training peak memory"]
    assert mem and all(r["value"] > 0 for r in mem)
    # Embeddings: every workload has a bytepair row that agrees with numpy, and a numpy row.
    for workload in (
        "embed gather+mean",
        "embed top-10, 32 queries",
        "embed top-10, 1 query",
        "embed_texts",
    ):
        got = [r for r in data["results"] if r["workload"] == workload]
        bp = [r for r in got if r["impl"] == "bytepair"]
        assert bp and all(r["value"] and r["agree"] is True for r in bp), workload
        assert any(r["impl"] == "numpy" and r["value"] for r in got), workload
    recalls = [
        r["detail"]["recall_at_10_32q"]
        for r in data["results"]
        if r["workload"] == "embed top-10, 1 query" and r["impl"] == "bytepair"
    ]
    assert len(recalls) == 3 and min(recalls) >= 0.99
    assert data["config"]["baselines"]["embed_texts"] == "numpy"
    assert "env" in data["machine"]
    if not _has("faiss"):
        assert any(n.startswith("faiss") for n in data["notes"])
    if _has("matplotlib"):
        png = out / "bench.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    else:
        assert "no chart" in proc.stdout


def _has(module: str) -> bool:
    try:
        __import__(module)
        return True
    except ImportError:
        return False


def test_bench_list_names_new_workloads(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["bench", "--list"]) == 0
    out = capsys.readouterr().out
    for name in ("training", "embed_gather", "embed_topk", "embed_search", "embed_texts"):
        assert name in out
    assert "embeddings" in out
    assert bench.expand_workloads(["embeddings", "embed_texts"]) == [
        "embed_gather",
        "embed_topk",
        "embed_search",
        "embed_texts",
    ]
    assert cli.main(["bench", "--only", "nope"]) == 2


def _tiny_corpus(tmp_path: Path) -> Path:
    path = tmp_path / "tiny.txt"
    path.write_text("".join(f"word{i % 50} other{i % 7} 語{i % 3}\n" for i in range(3000)))
    return path


def test_bench_skips_missing_peers(tmp_path: Path, monkeypatch) -> None:
    pytest.importorskip("tiktoken")
    # A module set to None in sys.modules cannot be imported: the peers look uninstalled.
    for module in ("rustbpe", "tokenizers", "faiss"):
        monkeypatch.setitem(sys.modules, module, None)
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(tmp_path / "cache"))
    out = tmp_path / "out"
    with open(os.devnull, "w") as devnull:
        status = bench.run(
            corpus_paths=[str(_tiny_corpus(tmp_path))],
            encodings=["cl100k_base"],
            out=out,
            quick=True,
            only=["training", "embed_topk"],
            progress=False,
            stdout=devnull,
        )
    assert status == 0
    data = json.loads((out / "results.json").read_text())
    notes = " ".join(data["notes"])
    for name in ("rustbpe", "tokenizers", "faiss"):
        assert f"{name}: not installed" in notes
    impls = {r["impl"] for r in data["results"]}
    assert impls == {"bytepair", "numpy"}
    train = [r for r in data["results"] if r["workload"] == "training"]
    assert train and train[0]["value"] > 0 and train[0]["agree"] is None


def test_bench_exits_nonzero_when_bytepair_disagrees(tmp_path: Path, monkeypatch) -> None:
    pytest.importorskip("tiktoken")
    from bytepair import embed

    real = embed.gather
    monkeypatch.setattr(embed, "gather", lambda *a, **k: real(*a, **k) + 1e-3)
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(tmp_path / "cache"))
    out = tmp_path / "out"
    err = tmp_path / "stdout.txt"
    with open(err, "w") as f:
        status = bench.run(
            corpus_paths=[str(_tiny_corpus(tmp_path))],
            encodings=["cl100k_base"],
            out=out,
            quick=True,
            only=["embed_gather"],
            progress=False,
            stdout=f,
        )
    assert status == 1
    data = json.loads((out / "results.json").read_text())
    assert data["ok"] is False
    assert {m["workload"] for m in data["mismatches"]} == {"embed gather+mean"}
    assert "MISMATCH" in err.read_text()


def test_interleaved_turns_cover_every_document_once_in_order() -> None:
    calls: list[tuple[str, list[str]]] = []

    def fn(name: str):
        def run(part: list[str]) -> list[str]:
            calls.append((name, list(part)))
            return [d.upper() for d in part]

        return run

    docs = [f"d{i}" for i in range(10)]
    _, outputs, errors = bench.interleaved({"a": fn("a"), "b": fn("b")}, docs, chunk=4)
    assert not errors
    assert outputs == {"a": [d.upper() for d in docs], "b": [d.upper() for d in docs]}
    # Turns of 4, 4 and 2 documents, and who goes first rotates.
    assert [(n, len(p)) for n, p in calls] == [("a", 4), ("b", 4), ("b", 4), ("a", 4), ("a", 2), ("b", 2)]


def test_back_to_back_batch_runs_take_turns_abba_and_cover_every_call() -> None:
    calls = [(r, t, [f"g{r}"]) for r in range(0, 20, 2) for t in (1, 2)]
    order = bench.back_to_back_order(calls, (1, 2), 3)
    assert sorted(order) == sorted(calls)
    threads = [t for _, t, _ in order]
    # Runs of 3 (the last ones shorter), 1-thread and 2-thread runs in A B B A order.
    assert threads == [1] * 3 + [2] * 3 + [2] * 3 + [1] * 3 + [1] * 3 + [2] * 3 + [2] + [1]
    # Within a thread count, calls keep their order.
    for t in (1, 2):
        assert [c for c in order if c[1] == t] == [c for c in calls if c[1] == t]


def test_batch_rows_leave_out_a_peer_whose_batch_takes_no_thread_count() -> None:
    """riptoken's ``encode_ordinary_batch(texts)`` always uses rayon's global pool: it cannot give
    a 1-thread and a 2-thread row, so the batch workload leaves it out instead of calling it
    with ``num_threads`` and reporting a failure."""

    class NoThreads:
        def encode_ordinary_batch(self, texts):
            return [[len(t)] for t in texts]

    class Threads:
        def encode_ordinary_batch(self, texts, num_threads=8):
            return [[len(t)] for t in texts]

    class Kwargs:
        def encode_ordinary_batch(self, texts, **kw):
            return [[len(t)] for t in texts]

    assert not bench._takes_num_threads(NoThreads())
    assert bench._takes_num_threads(Threads()) and bench._takes_num_threads(Kwargs())
    assert bench._takes_num_threads(bytepair.get_encoding("cl100k_base"))  # a native method


def test_table_shows_a_peer_that_differs_without_calling_it_a_mismatch() -> None:
    def rows(bp_agree: bool, peer_agree: bool) -> list[bench.Result]:
        return [
            bench.Result("w", "c", "tiktoken", 1.0, "MB/s", True, None, {}),
            bench.Result("w", "c", "bytepair", 5.0, "MB/s", True, bp_agree, {}),
            bench.Result("w", "c", "riptoken", 2.0, "MB/s", True, peer_agree, {}),
        ]

    impls = ["bytepair", "tiktoken", "riptoken"]
    _, cells, bad = bench.table_rows(rows(True, False), impls, {})
    assert cells[0][-1] == "agree; differs: riptoken" and bad == [False]
    _, cells, bad = bench.table_rows(rows(False, False), impls, {})
    assert cells[0][-1] == "MISMATCH bytepair,riptoken" and bad == [True]
    _, cells, bad = bench.table_rows(rows(True, True), impls, {})
    assert cells[0][-1] == "agree" and bad == [False]


def test_bench_turn_docs_is_recorded_and_validated(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("tiktoken")
    out = tmp_path / "out"
    with open(os.devnull, "w") as devnull:
        status = bench.run(
            corpus_paths=[str(_tiny_corpus(tmp_path))],
            encodings=["cl100k_base"],
            out=out,
            quick=True,
            only=["encode_ordinary"],
            progress=False,
            stdout=devnull,
            turn_docs=256,
        )
    assert status == 0
    data = json.loads((out / "results.json").read_text())
    assert data["config"]["turn_docs"] == 256
    rows = [r for r in data["results"] if r["workload"] == "encode_ordinary"]
    assert {"bytepair", "tiktoken"} <= {r["impl"] for r in rows}, rows
    assert all(r["value"] > 0 and r["agree"] is not False for r in rows)
    assert cli.main(["bench", "--turn-docs", "0"]) == 2
    assert "--turn-docs must be at least 1" in capsys.readouterr().err


def test_bench_rejects_unknown_encoding(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["bench", "--encodings", "nope_base"]) == 2
    err = capsys.readouterr().err
    assert "unknown encoding" in err and err.startswith("usage: ")
    assert cli.main(["bench", "--only", "nope"]) == 2
    err = capsys.readouterr().err
    assert "unknown workload(s) nope" in err and err.startswith("usage: ")


def test_bench_reports_bad_corpus_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "ok"}\n{"nope": 1}\n')
    with pytest.raises(bench.CorpusError, match=r"bad\.jsonl:2"):
        bench.load_corpus([bad])


def test_split_documents_keeps_text_and_size() -> None:
    text = "".join(f"line {i} of some text\n" for i in range(2000))
    docs = bench.split_documents([text])
    assert "".join(docs) == text
    assert all(len(d.encode()) >= bench.DOC_BYTES for d in docs[:-1])
    assert all(len(d.encode()) < bench.DOC_BYTES + 100 for d in docs)


def test_prepared_tiktoken_cache_matches_official_hashes(tmp_path: Path, monkeypatch) -> None:
    import hashlib

    monkeypatch.delenv("TIKTOKEN_CACHE_DIR", raising=False)
    d = bench.prepare_tiktoken_cache(tmp_path, ["cl100k_base"])
    assert os.environ["TIKTOKEN_CACHE_DIR"] == str(tmp_path)
    (f,) = d.iterdir()
    assert hashlib.sha256(f.read_bytes()).hexdigest() == bench.RANK_SHA256["cl100k_base"]


def test_unknown_options_show_the_commands_usage(capsys: pytest.CaptureFixture[str]) -> None:
    for command, usage in (
        (["encode", "x", "--encoding", "gpt2", "-o", "y"], "usage: bytepair encode"),
        ([], "usage: bytepair "),
    ):
        with pytest.raises(SystemExit) as e:
            cli.main([*command, "--bogus"])
        assert e.value.code == 2
        err = capsys.readouterr().err
        assert err.startswith(usage) and "unrecognized arguments: --bogus" in err


@pytest.mark.skipif(sys.platform == "win32", reason="needs SIGPIPE semantics")
def test_output_closed_early_exits_quietly(tmp_path: Path) -> None:
    # `bytepair count many | head -1`: more output than a pipe holds, its reader gone after a line.
    many = tmp_path / "many"
    many.mkdir()
    for i in range(2000):
        (many / f"{'document-with-a-long-name-' * 4}{i:05d}.txt").write_text("hi")
    argv = [sys.executable, "-m", "bytepair", "count", str(many), "--encoding", "r50k_base"]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None and proc.stderr is not None
    first = proc.stdout.readline()
    proc.stdout.close()
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=60) == 141, err  # 128 + SIGPIPE, as a tool killed by the signal
    assert first.decode().startswith(str(many)) and err == ""
    # The reader gone before anything was written: the output left in the buffer at exit.
    (tmp_path / "one.txt").write_text("hello")
    proc = subprocess.Popen(
        [*argv[:4], str(tmp_path / "one.txt"), *argv[5:]], stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.close()
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=60) == 141 and err == "", err
