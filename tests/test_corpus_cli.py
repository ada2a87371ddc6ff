"""``bytepair encode`` / ``count`` / ``train`` and ``bytepair.corpus``, checked against
``Encoding.encode_ordinary`` / ``decode`` on documents parsed here with the json module."""

from __future__ import annotations

import gzip
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import bytepair
import numpy as np
import pytest
from bytepair import cli, corpus

ENC = "cl100k_base"


def _run(*args: str, env: dict[str, str] | None = None, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    e = dict(os.environ)
    e.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "bytepair", *args], env=e, capture_output=True, text=True, timeout=timeout, check=False
    )


def _texts(n: int, seed: int = 0) -> list[str]:
    import random

    rng = random.Random(seed)
    words = [
        "the",
        "quick",
        "brown",
        "fox",
        "naïve",
        "café",
        "日本語",
        "😀",
        "<|endoftext|>",
        "  ",
        "\n",
        "123456",
        "don't",
        "x" * 40,
        "\t",
        "Ωμέγα",
    ]
    return [
        "".join(rng.choice(words) + rng.choice([" ", "", "\n"]) for _ in range(rng.randint(0, 60))) for _ in range(n)
    ]


@pytest.fixture
def corpus_files(tmp_path: Path) -> tuple[list[str], list[str]]:
    """Files of every format, and the documents they hold, in order."""
    d = tmp_path / "in"
    d.mkdir()
    texts = _texts(160)
    docs: list[str] = []
    # .jsonl with blank lines and extra fields
    lines = []
    for i, t in enumerate(texts[:70]):
        lines.append(json.dumps({"id": i, "text": t, "meta": {"text": "no"}}))
        if i % 9 == 0:
            lines.append("")
        docs.append(t)
    (d / "a.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    # .txt: one document each (including an empty one)
    for i, t in enumerate(texts[70:75]):
        (d / f"b{i}.txt").write_text(t, encoding="utf-8")
        docs.append(t)
    (d / "b9.txt").write_text("", encoding="utf-8")
    docs.append("")
    # .jsonl.gz, no trailing newline
    with gzip.open(d / "c.jsonl.gz", "wt", encoding="utf-8") as f:
        f.write("\n".join(json.dumps({"text": t}) for t in texts[75:]))
    docs.extend(texts[75:])
    files = [str(d / "a.jsonl")] + [str(d / f"b{i}.txt") for i in (0, 1, 2, 3, 4, 9)] + [str(d / "c.jsonl.gz")]
    return files, docs


def _split_on_eot(tokens: list[int], eot: int) -> list[list[int]]:
    out, cur = [], []
    for t in tokens:
        if t == eot:
            out.append(cur)
            cur = []
        else:
            cur.append(t)
    assert cur == [], "the stream ends with an end-of-text token"
    return out


def _shards(out: Path) -> list[np.ndarray]:
    names = sorted(p.name for p in out.glob("shard_*.npy"))
    assert names == [f"shard_{i:05d}.npy" for i in range(len(names))]
    return [np.load(out / n) for n in names]


def _dir_bytes(out: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(out.iterdir())}


# ------------------------------------------------------------------------------------------------
# encode


@pytest.mark.parametrize("name,dtype", [("cl100k_base", np.uint32), ("gpt2", np.uint16)])
def test_encode_shards_decode_to_the_documents_in_order(tmp_path, corpus_files, name, dtype):
    files, docs = corpus_files
    enc = bytepair.get_encoding(name)
    out = tmp_path / "out"
    proc = _run("encode", *files, "--encoding", name, "-o", str(out), "--docs-per-shard", "17")
    assert proc.returncode == 0, proc.stderr
    shards = _shards(out)
    assert len(shards) == -(-len(docs) // 17)
    assert all(a.dtype == dtype and a.ndim == 1 for a in shards)
    per_shard = [int((a == enc.eot_token).sum()) for a in shards]
    assert per_shard[:-1] == [17] * (len(shards) - 1) and 0 < per_shard[-1] <= 17
    stream = np.concatenate(shards).tolist()
    expected = []
    for doc in docs:
        expected += enc.encode_ordinary(doc) + [enc.eot_token]
    assert stream == expected
    decoded = [enc.decode(toks) for toks in _split_on_eot(stream, enc.eot_token)]
    assert decoded == docs
    m = json.loads((out / corpus.MANIFEST).read_text())
    assert m["complete"] and m["documents"] == len(docs) and m["tokens"] == len(stream)
    assert [s["documents"] for s in m["shards"]] == per_shard
    assert not list(out.glob("*.tmp"))


def test_encode_same_bytes_whatever_the_threads_and_directory_input(tmp_path, corpus_files):
    files, _ = corpus_files
    a = corpus.encode_to_shards(
        files, encoding=ENC, out=tmp_path / "a", docs_per_shard=50, num_threads=1, progress=False
    )
    b = corpus.encode_to_shards(
        files, encoding=ENC, out=tmp_path / "b", docs_per_shard=50, num_threads=3, progress=False
    )
    assert a["shards"] == b["shards"]
    for s in a["shards"]:
        assert (tmp_path / "a" / s["file"]).read_bytes() == (tmp_path / "b" / s["file"]).read_bytes()


def test_encode_resumes_after_sigkill_byte_for_byte(tmp_path, corpus_files):
    files, _ = corpus_files
    ref = tmp_path / "ref"
    args = [*files, "--encoding", ENC, "--docs-per-shard", "20"]
    assert _run("encode", *args, "-o", str(ref)).returncode == 0
    want = _dir_bytes(ref)
    assert len([k for k in want if k.endswith(".npy")]) == 9
    # Killed right after shard 3 is recorded, and after shard 3 is renamed but not yet recorded.
    for stage in ("recorded", "renamed"):
        out = tmp_path / stage
        proc = _run("encode", *args, "-o", str(out), env={"_BYTEPAIR_TEST_KILL": f"3:{stage}"})
        assert proc.returncode == -signal.SIGKILL, proc.stderr
        m = json.loads((out / corpus.MANIFEST).read_text())
        assert not m["complete"] and len(m["shards"]) == (3 if stage == "recorded" else 2)
        assert (out / "shard_00002.npy").exists()
        proc = _run("encode", *args, "-o", str(out))
        assert proc.returncode == 0, proc.stderr
        assert _dir_bytes(out) == want


def _recorded_shards(out: Path) -> int:
    """How many shards the manifest in ``out`` records (0 while there is none yet; it is
    replaced whole, never written in place)."""
    m = corpus._read_manifest(out)
    return len(m["shards"]) if m else 0


def test_encode_ctrl_c_stops_cleanly_and_resumes(tmp_path, corpus_files):
    files, _ = corpus_files
    args = [*files, "--encoding", ENC, "--docs-per-shard", "20"]
    ref = tmp_path / "ref"
    assert _run("encode", *args, "-o", str(ref)).returncode == 0
    out = tmp_path / "out"
    env = dict(os.environ, _BYTEPAIR_TEST_PAUSE="0.5")
    p = subprocess.Popen(
        [sys.executable, "-m", "bytepair", "encode", *args, "-o", str(out)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    # Interrupted once the manifest records a shard (the encoder then pauses): waiting for the
    # shard's file alone let the signal land between its rename and its record on a slow
    # machine, and a shard renamed but not recorded is redone on resume, as it should be.
    deadline = time.time() + 60
    while not _recorded_shards(out) and time.time() < deadline:
        time.sleep(0.02)
    p.send_signal(signal.SIGINT)
    _, err = p.communicate(timeout=60)
    assert p.returncode == 130, err
    assert "resume" in err
    assert not list(out.glob("*.tmp"))
    m = json.loads((out / corpus.MANIFEST).read_text())
    assert not m["complete"] and 1 <= len(m["shards"]) < 9
    assert _run("encode", *args, "-o", str(out)).returncode == 0
    assert _dir_bytes(out) == _dir_bytes(ref)


def test_encode_refuses_a_directory_of_another_run(tmp_path, corpus_files):
    files, _ = corpus_files
    out = tmp_path / "out"
    assert _run("encode", *files, "--encoding", ENC, "-o", str(out), "--docs-per-shard", "30").returncode == 0
    proc = _run("encode", *files, "--encoding", ENC, "-o", str(out), "--docs-per-shard", "40")
    assert proc.returncode == 2 and "docs_per_shard" in proc.stderr and "--overwrite" in proc.stderr
    proc = _run("encode", *files, "--encoding", ENC, "-o", str(out), "--docs-per-shard", "40", "--overwrite")
    assert proc.returncode == 0, proc.stderr
    assert len(_shards(out)) == -(-161 // 40)
    # A finished run is not redone.
    before = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    assert _run("encode", *files, "--encoding", ENC, "-o", str(out), "--docs-per-shard", "40").returncode == 0
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == before


@pytest.fixture
def bad_files(tmp_path: Path) -> tuple[list[str], list[str]]:
    d = tmp_path / "bad"
    d.mkdir()
    (d / "a.jsonl").write_text(
        '{"text": "one"}\n{"txt": "no field"}\n{"text": "two"}\n{not json\n{"text": 3}\n{"text": "three"}\n',
        encoding="utf-8",
    )
    (d / "b.txt").write_bytes(b"caf\xe9 latin-1")
    (d / "c.txt").write_text("four", encoding="utf-8")
    return [str(d / "a.jsonl"), str(d / "b.txt"), str(d / "c.txt")], ["one", "two", "three", "four"]


def test_encode_errors_name_file_and_line(tmp_path, bad_files):
    files, _ = bad_files
    proc = _run("encode", *files, "--encoding", ENC, "-o", str(tmp_path / "out"))
    assert proc.returncode == 1
    assert "a.jsonl:2" in proc.stderr and "missing field" in proc.stderr, proc.stderr
    assert not list((tmp_path / "out").glob("shard_*"))
    proc = _run("encode", files[1], "--encoding", ENC, "-o", str(tmp_path / "out2"))
    assert proc.returncode == 1 and "b.txt: invalid UTF-8 at byte 3" in proc.stderr, proc.stderr
    with pytest.raises(ValueError, match=r"a\.jsonl:2"):
        corpus.encode_to_shards(files, encoding=ENC, out=tmp_path / "out3", progress=False)


def test_encode_reuses_a_directory_left_by_a_failed_run_that_wrote_no_shards(tmp_path, bad_files):
    files, docs = bad_files
    enc = bytepair.get_encoding(ENC)
    out = tmp_path / "out"
    proc = _run("encode", *files, "--encoding", ENC, "-o", str(out))
    assert proc.returncode == 1 and "a.jsonl:2" in proc.stderr, proc.stderr
    assert json.loads((out / corpus.MANIFEST).read_text())["shards"] == []
    # Another run (here on_error differs) may use the directory: the failed one left no shards.
    proc = _run("encode", *files, "--encoding", ENC, "-o", str(out), "--on-error", "skip", "--docs-per-shard", "3")
    assert proc.returncode == 0, proc.stderr
    stream = np.concatenate(_shards(out)).tolist()
    assert [enc.decode(t) for t in _split_on_eot(stream, enc.eot_token)] == docs
    # Now it holds shards: a different run is refused, and they are kept.
    before = _dir_bytes(out)
    proc = _run("encode", *files, "--encoding", ENC, "-o", str(out), "--docs-per-shard", "3")
    assert proc.returncode == 2 and "different run (on_error differ)" in proc.stderr, proc.stderr
    assert _dir_bytes(out) == before
    # The input fixed after a failure (input_bytes differ), with --no-resume too.
    out2 = tmp_path / "out2"
    assert _run("encode", files[0], "--encoding", ENC, "-o", str(out2)).returncode == 1
    Path(files[0]).write_text('{"text": "one"}\n{"text": "two"}\n', encoding="utf-8")
    proc = _run("encode", files[0], "--encoding", ENC, "-o", str(out2), "--no-resume")
    assert proc.returncode == 0, proc.stderr
    assert [enc.decode(t) for t in _split_on_eot(_shards(out2)[0].tolist(), enc.eot_token)] == ["one", "two"]


def test_encode_other_run_after_a_kill_before_the_first_shard_was_recorded(tmp_path, corpus_files):
    files, _ = corpus_files
    out, ref = tmp_path / "out", tmp_path / "ref"
    args = [*files, "--encoding", ENC, "--docs-per-shard", "40"]
    assert _run("encode", *args, "-o", str(ref)).returncode == 0
    # Killed after shard 0 was renamed but before the manifest listed it: an uncommitted shard.
    proc = _run("encode", *files, "--encoding", ENC, "-o", str(out), env={"_BYTEPAIR_TEST_KILL": "1:renamed"})
    assert proc.returncode == -signal.SIGKILL
    assert (out / "shard_00000.npy").exists()
    assert json.loads((out / corpus.MANIFEST).read_text())["shards"] == []
    proc = _run("encode", *args, "-o", str(out))  # docs_per_shard differs
    assert proc.returncode == 0, proc.stderr
    assert _dir_bytes(out) == _dir_bytes(ref)


def test_encode_skip_drops_bad_inputs_and_reports_them(tmp_path, bad_files):
    files, docs = bad_files
    enc = bytepair.get_encoding(ENC)
    out = tmp_path / "out"
    proc = _run("encode", *files, "--encoding", ENC, "-o", str(out), "--on-error", "skip", "--docs-per-shard", "3")
    assert proc.returncode == 0, proc.stderr
    assert "skipped 4" in proc.stderr
    for where in ("a.jsonl:2", "a.jsonl:4", "a.jsonl:5", "b.txt: invalid UTF-8"):
        assert where in proc.stderr
    stream = np.concatenate(_shards(out)).tolist()
    assert [enc.decode(t) for t in _split_on_eot(stream, enc.eot_token)] == docs


def test_encode_with_a_trained_encoding_directory(tmp_path, corpus_files):
    files, docs = corpus_files
    enc = bytepair.train(docs, vocab_size=300, special_tokens=["<|endoftext|>"], progress=False)
    enc.save(tmp_path / "tok")
    out = tmp_path / "out"
    proc = _run("encode", *files, "--encoding", str(tmp_path / "tok"), "-o", str(out))
    assert proc.returncode == 0, proc.stderr
    (a,) = _shards(out)
    assert a.dtype == np.uint16
    assert [enc.decode(t) for t in _split_on_eot(a.tolist(), 299)] == docs


def test_encode_bad_arguments(tmp_path, corpus_files, capsys):
    files, _ = corpus_files
    assert cli.main(["encode", *files, "--encoding", "nope_base", "-o", str(tmp_path / "o")]) == 2
    assert "unknown encoding" in capsys.readouterr().err
    assert cli.main(["encode", *files, "--encoding", ENC, "-o", str(tmp_path / "o"), "--docs-per-shard", "0"]) == 2
    assert cli.main(["encode", str(tmp_path / "missing.txt"), "--encoding", ENC, "-o", str(tmp_path / "o")]) == 1
    assert "missing.txt" in capsys.readouterr().err
    assert "Resuming" in cli.build_parser()._subparsers._group_actions[0].choices["encode"].format_help()
    assert cli.main(["encode", *files, "--encoding", ENC, "-o", ""]) == 2  # not the current directory
    assert "--out" in capsys.readouterr().err
    # A bad --eot-token is a bad argument (2, with the usage), found before any work.
    assert cli.main(["encode", *files, "--encoding", ENC, "-o", str(tmp_path / "o"), "--eot-token", "-1"]) == 2
    err = capsys.readouterr().err
    assert "usage: bytepair encode" in err and "error: eot_token" in err
    assert not (tmp_path / "o").exists()
    # Integers too large for the native side are refused by argparse, with no traceback.
    for command, option in (("encode", "--threads"), ("encode", "--docs-per-shard"), ("count", "--threads")):
        extra = ["-o", str(tmp_path / "o")] if command == "encode" else []
        with pytest.raises(SystemExit) as exit_:
            cli.main([command, *files, "--encoding", ENC, *extra, option, str(10**30)])
        assert exit_.value.code == 2
        assert "too large" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli.main(["train", *files, "--vocab-size", str(2**64), "-o", str(tmp_path / "t")])
    assert "too large" in capsys.readouterr().err


def test_encode_eot_token_option(tmp_path, corpus_files):
    files, docs = corpus_files
    trained = bytepair.train(docs, vocab_size=300, progress=False)  # no <|endoftext|>
    trained.save(tmp_path / "tok")
    proc = _run("encode", *files, "--encoding", str(tmp_path / "tok"), "-o", str(tmp_path / "a"))
    assert proc.returncode == 2 and "--eot-token" in proc.stderr and "usage:" in proc.stderr
    eot = trained.n_vocab  # an id of no token
    proc = _run(
        "encode", *files, "--encoding", str(tmp_path / "tok"), "-o", str(tmp_path / "a"), "--eot-token", str(eot)
    )
    assert proc.returncode == 0, proc.stderr
    tokens = np.concatenate(_shards(tmp_path / "a")).tolist()
    assert [trained.decode(t) for t in _split_on_eot(tokens, eot)] == docs


@pytest.mark.skipif(not hasattr(os, "symlink") or sys.platform == "win32", reason="needs symbolic links")
def test_inputs_follow_links_but_not_round_a_loop(tmp_path):
    enc = bytepair.get_encoding(ENC)
    d = tmp_path / "d"
    (d / "sub").mkdir(parents=True)
    (d / "a.txt").write_text("hello world")
    (d / "sub" / "b.txt").write_text("goodbye")
    os.symlink(".", d / "self")
    os.symlink("..", d / "sub" / "up")
    want = len(enc.encode_ordinary("hello world")) + len(enc.encode_ordinary("goodbye"))
    for spec in (str(d), str(d / "**" / "*.txt"), str(d / "**")):
        proc = _run("count", spec, "--encoding", ENC, timeout=60)
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout.splitlines()[-1] == f"total {want}", proc.stdout
    counts = bytepair.WordCounts(str(d), progress=False)
    assert counts.total() == bytepair.WordCounts(["hello world", "goodbye"], progress=False).total()


# ------------------------------------------------------------------------------------------------
# count


def test_count_totals_equal_encode_ordinary(corpus_files):
    files, docs = corpus_files
    enc = bytepair.get_encoding(ENC)
    proc = _run("count", *files, "--encoding", ENC)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert len(lines) == len(files) + 1
    per = dict(line.split("\t") for line in lines[:-1])
    assert list(per) == files
    assert lines[-1] == f"total {sum(len(enc.encode_ordinary(d)) for d in docs)}"
    assert int(per[files[0]]) == sum(len(enc.encode_ordinary(d)) for d in docs[:70])
    assert int(per[files[-1]]) == sum(len(enc.encode_ordinary(d)) for d in docs[76:])
    assert corpus.count_files(files, encoding=ENC, num_threads=1) == {k: int(v) for k, v in per.items()}


def test_count_counts_each_file_once(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    Path("cdir").mkdir()
    Path("cdir/small.txt").write_text("hello world, hello again")
    Path("cdir/a.jsonl").write_text('{"text": "one two"}\n')
    enc = bytepair.get_encoding(ENC)
    n_small, n_a = len(enc.encode_ordinary("hello world, hello again")), len(enc.encode_ordinary("one two"))
    assert cli.main(["count", "cdir", "cdir/small.txt", "./cdir/small.txt", "cdir/*.txt", "--encoding", ENC]) == 0
    assert capsys.readouterr().out.splitlines() == [
        f"cdir/a.jsonl\t{n_a}",
        f"cdir/small.txt\t{n_small}",
        f"total {n_a + n_small}",
    ]
    assert corpus.count_files(["cdir/small.txt", "cdir/small.txt"], encoding=ENC) == {"cdir/small.txt": n_small}
    assert corpus.count_files(["cdir/small.txt", "cdir"], encoding=ENC) == {
        "cdir/small.txt": n_small,
        "cdir/a.jsonl": n_a,
    }


def _non_utf8_dir(tmp_path: Path) -> Path:
    """A directory holding ``ok.txt`` and ``bad\\xff.txt`` (a name that is not UTF-8)."""
    d = tmp_path / "nudir"
    d.mkdir()
    (d / "ok.txt").write_text("fine text")
    try:
        with open(os.path.join(os.fsencode(d), b"bad\xff.txt"), "wb") as f:
            f.write(b"hi there")
    except (OSError, ValueError):
        pytest.skip("the file system refuses names that are not UTF-8")
    return d


def test_file_names_that_are_not_utf8(tmp_path):
    d = _non_utf8_dir(tmp_path)
    bad = os.fsdecode(os.path.join(os.fsencode(d), b"bad\xff.txt"))
    enc = bytepair.get_encoding(ENC)
    n_bad, n_ok = len(enc.encode_ordinary("hi there")), len(enc.encode_ordinary("fine text"))
    for spec in ([str(d)], [bad, str(d / "ok.txt")], [os.fsencode(bad), d / "ok.txt"]):
        assert corpus.count_files(spec, encoding=ENC) == {bad: n_bad, str(d / "ok.txt"): n_ok}
    # The command prints the name as the bytes it is.
    proc = subprocess.run(
        [sys.executable, "-m", "bytepair", "count", str(d), "--encoding", ENC], capture_output=True, check=False
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[0] == os.fsencode(d) + b"/bad\xff.txt\t" + str(n_bad).encode()
    # encode reads it, and its manifest records the name.
    m = corpus.encode_to_shards([str(d)], encoding=ENC, out=tmp_path / "out", progress=False)
    assert m["documents"] == 2 and m["inputs"][0] == bad
    assert json.loads((tmp_path / "out" / "manifest.json").read_text(encoding="utf-8"))["inputs"][0] == bad
    assert corpus.encode_to_shards([str(d)], encoding=ENC, out=tmp_path / "out", progress=False)["complete"]
    # The trainer reads them too.
    wc = bytepair.WordCounts(str(d), progress=False)
    assert wc == bytepair.WordCounts(["hi there", "fine text"], progress=False)
    assert bytepair.train(str(d), vocab_size=260, progress=False).n_vocab == 260


def test_globs_match_file_names_that_are_not_utf8(tmp_path):
    d = _non_utf8_dir(tmp_path)
    bad = os.fsdecode(os.fsencode(d) + b"/bad\xff.txt")
    got = corpus.count_files([str(d / "*.txt")], encoding=ENC)
    assert list(got) == [bad, str(d / "ok.txt")]
    assert list(corpus.count_files([str(d / "b*")], encoding=ENC)) == [bad]


def test_count_reads_standard_input_as_one_document(tmp_path):
    enc = bytepair.get_encoding(ENC)
    text = "Hello, world!\n" * 50 + "Привет <|endoftext|> 你好\n"
    n = len(enc.encode_ordinary(text))
    run = [sys.executable, "-m", "bytepair", "count", "--encoding", ENC]
    proc = subprocess.run([*run, "-"], input=text.encode(), capture_output=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.decode().splitlines() == [f"-\t{n}", f"total {n}"]
    # Among files, in the order named; a file is counted as before.
    f = tmp_path / "a.txt"
    f.write_text("one two three")
    m = len(enc.encode_ordinary("one two three"))
    proc = subprocess.run([*run, str(f), "-"], input=text.encode(), capture_output=True, timeout=120, check=False)
    assert proc.stdout.decode().splitlines() == [f"{f}\t{m}", f"-\t{n}", f"total {n + m}"]
    proc = subprocess.run([*run, "-", str(f)], input=text.encode(), capture_output=True, timeout=120, check=False)
    assert proc.stdout.decode().splitlines() == [f"-\t{n}", f"{f}\t{m}", f"total {n + m}"]
    # A directory named before "-" lists its files before it.
    g = tmp_path / "d" / "b.txt"
    g.parent.mkdir()
    g.write_text("four five")
    k = len(enc.encode_ordinary("four five"))
    proc = subprocess.run(
        [*run, str(g.parent), "-", str(f)], input=text.encode(), capture_output=True, timeout=120, check=False
    )
    assert proc.stdout.decode().splitlines() == [f"{g}\t{k}", f"-\t{n}", f"{f}\t{m}", f"total {n + m + k}"]
    # Empty input is a document of 0 tokens; bytes that are not UTF-8 are an input error.
    proc = subprocess.run([*run, "-"], input=b"", capture_output=True, timeout=120, check=False)
    assert proc.returncode == 0 and proc.stdout.decode().splitlines() == ["-\t0", "total 0"]
    bad = b"ok \xff bad"
    proc = subprocess.run([*run, "-"], input=bad, capture_output=True, timeout=120, check=False)
    assert proc.returncode == 1 and b"-: invalid UTF-8 at byte 3" in proc.stderr, proc.stderr
    proc = subprocess.run(
        [*run, "-", str(f), "--on-error", "skip"], input=bad, capture_output=True, timeout=120, check=False
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.decode().splitlines() == ["-\t0", f"{f}\t{m}", f"total {m}"]
    assert b"skipped 1" in proc.stderr


def test_count_errors_and_skip(bad_files):
    files, docs = bad_files
    enc = bytepair.get_encoding(ENC)
    proc = _run("count", *files, "--encoding", ENC)
    assert proc.returncode == 1 and "a.jsonl:2" in proc.stderr
    proc = _run("count", *files, "--encoding", ENC, "--on-error", "skip")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[-1] == f"total {sum(len(enc.encode_ordinary(d)) for d in docs)}"
    assert f"{files[1]}\t0" in proc.stdout
    assert "skipped 4" in proc.stderr and "b.txt: invalid UTF-8" in proc.stderr


def test_count_parquet(tmp_path):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    texts = _texts(30, seed=3)
    pq.write_table(pa.table({"text": texts}), tmp_path / "p.parquet")
    enc = bytepair.get_encoding(ENC)
    got = corpus.count_files([tmp_path / "p.parquet"], encoding=ENC)
    assert list(got.values()) == [sum(len(enc.encode_ordinary(t)) for t in texts)]


def test_encode_parquet_among_other_inputs(tmp_path):
    """Parquet files are documents in input order among the others (nulls left out), through
    the CLI and after a resume; the temporary copies are gone afterwards."""
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    enc = bytepair.get_encoding(ENC)
    data = tmp_path / "data"
    data.mkdir()
    a, b = _texts(7, seed=4), _texts(9, seed=5)
    (data / "a.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in a), encoding="utf-8")
    pq.write_table(pa.table({"text": b[:4] + [None] + b[4:]}), data / "b.parquet")
    (data / "c.txt").write_text("the last document", encoding="utf-8")
    docs = a + b + ["the last document"]
    out = tmp_path / "shards"
    proc = _run("encode", str(data), "--encoding", ENC, "-o", str(out), "--docs-per-shard", "5")
    assert proc.returncode == 0, proc.stderr
    tokens = np.concatenate(corpus.read_shards(out)).tolist()
    expected = [t for d in docs for t in enc.encode_ordinary(d) + [enc.eot_token]]
    assert tokens == expected
    assert sorted(p.name for p in out.iterdir()) == ["manifest.json"] + [f"shard_{i:05d}.npy" for i in range(4)]
    # Called again, the finished run is kept; an interrupted one resumes to the same bytes.
    (out / "shard_00003.npy").unlink()
    m = json.loads((out / "manifest.json").read_text())
    m["shards"], m["complete"] = m["shards"][:3], False
    (out / "manifest.json").write_text(json.dumps(m))
    corpus.encode_to_shards([data], encoding=ENC, out=out, progress=False, docs_per_shard=5)
    assert np.concatenate(corpus.read_shards(out)).tolist() == expected
    # A column without text: an error naming the file, or skipped with a message.
    pq.write_table(pa.table({"text": [1, 2]}), data / "d.parquet")
    with pytest.raises(ValueError, match="d.parquet"):
        corpus.encode_to_shards([data], encoding=ENC, out=tmp_path / "o2", progress=False)
    m = corpus.encode_to_shards([data], encoding=ENC, out=tmp_path / "o3", progress=False, on_error="skip")
    assert m["skipped"] == 1 and "d.parquet" in m["errors"][0]
    assert np.concatenate(corpus.read_shards(tmp_path / "o3")).tolist() == expected
    assert not [p for p in (tmp_path / "o3").iterdir() if p.name.startswith(".")]
    # Messages come in input order, the parquet files' among the others.
    (data / "b2.jsonl").write_text('{"text": "x"}\nnot json\n', encoding="utf-8")
    m = corpus.encode_to_shards([data], encoding=ENC, out=tmp_path / "o4", progress=False, on_error="skip")
    assert [e.split(":")[0].rsplit("/", 1)[-1] for e in m["errors"]] == ["b2.jsonl", "d.parquet"]
    # A killed run leaves its parquet copies behind; the next run removes them.
    (data / "b2.jsonl").unlink()
    (data / "d.parquet").unlink()
    code = (
        "import bytepair.corpus as c; "
        f"c.encode_to_shards([{str(data)!r}], encoding={ENC!r}, out={str(tmp_path / 'o5')!r}, docs_per_shard=5, progress=False)"
    )
    env = dict(os.environ, _BYTEPAIR_TEST_KILL="2:recorded")
    subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, timeout=120, check=False)
    assert (tmp_path / "o5" / corpus.PARQUET_COPIES).is_dir()
    subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=120, check=True)
    assert not (tmp_path / "o5" / corpus.PARQUET_COPIES).exists()
    assert np.concatenate(corpus.read_shards(tmp_path / "o5")).tolist() == expected


def test_directory_walks_leave_out_shard_folders(tmp_path):
    """`encode data -o data/shards`, then `count data` and `train data`: the shards (binary) and
    their manifest are not read as text."""
    data = tmp_path / "data"
    data.mkdir()
    texts = _texts(20, seed=6)
    (data / "a.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in texts), encoding="utf-8")
    proc = _run("encode", str(data), "--encoding", ENC, "-o", str(data / "shards"))
    assert proc.returncode == 0, proc.stderr
    enc = bytepair.get_encoding(ENC)
    proc = _run("count", str(data), "--encoding", ENC)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[-1] == f"total {sum(len(enc.encode_ordinary(t)) for t in texts)}"
    proc = _run("train", str(data), "--vocab-size", "300", "-o", str(tmp_path / "tok"))
    assert proc.returncode == 0, proc.stderr
    # Named as files, shards are still inputs (and not text).
    proc = _run("count", str(data / "shards" / "shard_00000.npy"), "--encoding", ENC)
    assert proc.returncode == 1 and "invalid UTF-8" in proc.stderr


# ------------------------------------------------------------------------------------------------
# train


def test_train_cli_model_loads_and_round_trips(tmp_path, corpus_files):
    files, docs = corpus_files
    out = tmp_path / "tok"
    proc = _run(
        "train", *files, "--vocab-size", "320", "--special-tokens", "<|endoftext|>", "--name", "mytok", "-o", str(out)
    )
    assert proc.returncode == 0, proc.stderr
    enc = bytepair.load(out)
    assert enc.name == "mytok" and enc.n_vocab == 320
    assert enc._special_tokens == {"<|endoftext|>": 319}
    for d in docs[:20] + ["never seen: ζ∂ƒ 🙂"]:
        assert enc.decode(enc.encode_ordinary(d)) == d
    same = bytepair.train([Path(f) for f in files], vocab_size=320, special_tokens=["<|endoftext|>"], progress=False)
    assert enc._mergeable_ranks == same._mergeable_ranks


def test_train_cli_errors(tmp_path, bad_files, capsys):
    files, _ = bad_files
    out = str(tmp_path / "tok")
    assert cli.main(["train", *files, "--vocab-size", "300", "-o", out, "--no-progress"]) == 1
    assert "a.jsonl:2" in capsys.readouterr().err
    assert cli.main(["train", *files, "--vocab-size", "300", "-o", out, "--no-progress", "--on-error", "skip"]) == 0
    assert 256 < bytepair.load(out).n_vocab <= 300  # a tiny corpus runs out of pairs
    assert cli.main(["train", *files, "--vocab-size", "100", "-o", out, "--no-progress"]) == 2
    assert "vocab_size must be at least 256" in capsys.readouterr().err
    assert cli.main(["train", *files, "--vocab-size", "300", "--pattern", "(", "-o", out, "--no-progress"]) == 2


def test_train_with_every_input_skipped_fails(tmp_path, capsys):
    """on_error=skip over inputs that are all bad: no 256-token vocabulary, exit 1, the skipped
    inputs named, no output directory left behind; one good line is enough to train."""
    bad = [tmp_path / "a.jsonl", tmp_path / "b.jsonl"]
    bad[0].write_text("{bad\n")
    bad[1].write_text("not json\n")
    out = tmp_path / "tok"
    argv = ["train", *map(str, bad), "--vocab-size", "300", "-o", str(out), "--no-progress", "--on-error", "skip"]
    assert cli.main(argv) == 1
    err = capsys.readouterr().err
    assert "nothing to train on: every input was skipped (2 bad input(s))" in err, err
    assert "a.jsonl:1" in err and "b.jsonl:1" in err, err
    assert not out.exists()
    with pytest.warns(UserWarning, match="skipped 2"), pytest.raises(ValueError, match="every input was skipped"):
        bytepair.train(bad, vocab_size=300, on_error="skip", progress=False)
    good = tmp_path / "c.jsonl"
    good.write_text('{"text": "hello world"}\n{bad\n')
    argv = [
        "train",
        str(bad[0]),
        str(good),
        "--vocab-size",
        "258",
        "-o",
        str(out),
        "--no-progress",
        "--on-error",
        "skip",
    ]
    assert cli.main(argv) == 0
    assert bytepair.load(out).n_vocab == 258


@pytest.mark.parametrize(
    "args,message",
    [
        (["--vocab-size", "100"], "vocab_size must be at least 256"),
        (["--vocab-size", "0"], "vocab_size must be at least 256"),
        (["--min-frequency", "-1"], "min_frequency"),
        (["--pattern", "(bad"], "invalid pattern"),
        (["--pattern", "cl100k"], "unknown encoding name"),
        (["--pattern", ""], "pattern must not be empty"),
        (["--special-tokens", "a", "a"], "duplicate special token 'a'"),
        (["--special-tokens", ""], "special tokens must be non-empty"),
        (["--threads", "0"], "--threads must be at least 1"),
        (["--max-token-length", "0"], "--max-token-length must be at least 1"),
        (["-o", ""], "--out must name a directory"),  # not the current directory
    ],
)
def test_train_bad_arguments_exit_2_with_the_usage(tmp_path, monkeypatch, capsys, args, message):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "small.txt").write_text("hello world " * 100)
    argv = ["train", "small.txt", "--vocab-size", "300", "-o", "out", "--no-progress"]
    assert cli.main(argv + args) == 2
    err = capsys.readouterr().err
    assert err.startswith("usage: bytepair train") and f"bytepair train: error: {message}" in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["small.txt"]  # nothing written
    # Errors in the inputs are not bad arguments: 1, without the usage.
    (tmp_path / "bad.jsonl").write_text('{"text": 1}\n')
    assert cli.main(["train", "bad.jsonl", "--vocab-size", "300", "-o", "out", "--no-progress"]) == 1
    assert "usage:" not in capsys.readouterr().err


@pytest.mark.parametrize("command", ["train", "encode"])
def test_out_that_cannot_be_a_directory_is_refused_before_any_work(tmp_path, monkeypatch, capsys, command):
    monkeypatch.chdir(tmp_path)
    Path("small.txt").write_text("hello world " * 100)
    Path("afile").write_text("not a directory")

    def no_work(*args: object, **kwargs: object) -> None:
        raise AssertionError("started working")

    monkeypatch.setattr(bytepair, "train", no_work)
    monkeypatch.setattr(corpus, "encode_to_shards", no_work)
    extra = ["--vocab-size", "300"] if command == "train" else ["--encoding", ENC]
    bad = [("afile", "--out afile is not a directory"), ("afile/sub", "--out afile/sub: afile is not a directory")]
    if sys.platform == "linux" and os.path.isdir("/proc/self"):
        bad.append(("/proc/nope", "cannot create the output directory /proc/nope"))
    for out, message in bad:
        assert cli.main([command, "small.txt", *extra, "-o", out, "--no-progress"]) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"usage: bytepair {command}") and f"error: {message}" in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile", "small.txt"]
    assert Path("afile").read_text() == "not a directory"


def test_train_creates_the_output_directory_and_removes_it_again_on_failure(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    Path("bad.jsonl").write_text('{"text": 1}\n')
    Path("good.txt").write_text("hello world " * 100)
    assert cli.main(["train", "bad.jsonl", "--vocab-size", "300", "-o", "new/tok", "--no-progress"]) == 1
    assert "bad.jsonl:1" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.jsonl", "good.txt"]  # nothing left behind
    assert cli.main(["train", "good.txt", "--vocab-size", "300", "-o", "new/tok", "--no-progress"]) == 0
    assert bytepair.load("new/tok").name == "tok"


@pytest.mark.skipif(sys.platform != "linux", reason="needs RLIMIT_FSIZE")
def test_train_save_failure_names_the_output_directory(tmp_path):
    import resource

    (tmp_path / "a.txt").write_text(" ".join(_texts(200, seed=3)), encoding="utf-8")
    out = tmp_path / "tok"

    def small_files() -> None:  # a full disk, for the files written after training
        resource.setrlimit(resource.RLIMIT_FSIZE, (1000, 1000))

    proc = subprocess.run(
        [sys.executable, "-m", "bytepair", "train", str(tmp_path / "a.txt"), "--vocab-size", "400", "-o", str(out)],
        preexec_fn=small_files,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 1
    assert proc.stderr.startswith(f"bytepair train: cannot save the encoding to {out}: "), proc.stderr
    assert "File too large" in proc.stderr and "Traceback" not in proc.stderr


def test_train_field_option(tmp_path, capsys):
    docs = _texts(40, seed=5)
    (tmp_path / "f.jsonl").write_text("".join(json.dumps({"content": d}) + "\n" for d in docs), encoding="utf-8")
    out = tmp_path / "tok"
    argv = ["train", str(tmp_path / "f.jsonl"), "--vocab-size", "300", "-o", str(out), "--no-progress"]
    assert cli.main([*argv, "--field", "content"]) == 0, capsys.readouterr().err
    assert bytepair.load(out)._mergeable_ranks == bytepair.train(docs, vocab_size=300, progress=False)._mergeable_ranks
    assert cli.main(argv) == 1
    assert 'missing field "text"' in capsys.readouterr().err


def test_output_inside_the_input_directory_is_not_read_back(tmp_path, capsys):
    d = tmp_path / "data"
    d.mkdir()
    docs = _texts(40, seed=5)
    (d / "a.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in docs), encoding="utf-8")
    enc = bytepair.get_encoding(ENC)
    want = [t for doc in docs for t in [*enc.encode_ordinary(doc), enc.eot_token]]
    for _ in range(2):  # the second run finds its own complete output, not new inputs
        assert cli.main(["encode", str(d), "--encoding", ENC, "-o", str(d / "shards")]) == 0
        assert np.concatenate(_shards(d / "shards")).tolist() == want
    assert "already holds this run, complete" in capsys.readouterr().err
    m = corpus.encode_to_shards([d], encoding=ENC, out=d / "shards", overwrite=True, progress=False)
    assert m["inputs"] == [str(d / "a.jsonl")] and m["documents"] == 40
    # train: the saved tokenizer under -o is not trained on the next time.
    ranks = []
    for _ in range(2):
        assert cli.main(["train", str(d), "--vocab-size", "400", "-o", str(d / "tok")]) == 0
        ranks.append(bytepair.load(d / "tok")._mergeable_ranks)
    assert ranks[0] == ranks[1]
    # Only the output given: nothing left to read.
    with pytest.raises(ValueError, match="inside the output directory"):
        corpus.encode_to_shards([d / "shards"], encoding=ENC, out=d / "shards", overwrite=True, progress=False)


def test_special_tokens_option_does_not_swallow_input_files(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    Path("a.txt").write_text("hello world " * 50)
    Path("b.txt").write_text("goodbye world " * 50)
    for bad in ("b.txt", "missing.jsonl"):
        code = cli.main(["train", "a.txt", "--special-tokens", "<|eot|>", bad, "--vocab-size", "300", "-o", "t"])
        assert code == 2
        err = capsys.readouterr().err
        assert "usage:" in err and f"--special-tokens took '{bad}'" in err
    assert not Path("t").exists()
    assert cli.main(["train", "a.txt", "b.txt", "--special-tokens", "<|eot|>", "--vocab-size", "300", "-o", "t"]) == 0
    assert list(bytepair.load("t")._special_tokens) == ["<|eot|>"]


def test_json_lines_read_as_pythons_json_reads_them(tmp_path):
    # What Python's json.dumps writes: NaN and infinities in other fields, lone surrogates; a
    # repeated key takes its last value; a byte order mark before the first line is ignored.
    docs = ["first doc", "second \udc80 doc", "third doc"]
    lines = [
        json.dumps({"score": float("nan"), "text": docs[0], "w": [float("inf"), -float("inf")]}),
        json.dumps({"text": docs[1]}),
        '{"text": "ignored", "text": "third doc"}',
    ]
    assert all(json.loads(line)["text"] == d for line, d in zip(lines, docs))
    p = tmp_path / "py.jsonl"
    p.write_bytes(b"\xef\xbb\xbf" + "\n".join(lines).encode("utf-8", "surrogatepass") + b"\n")
    enc = bytepair.get_encoding(ENC)
    fixed = [d.replace("\udc80", "\ufffd") for d in docs]
    assert corpus.count_files([p], encoding=ENC) == {str(p): sum(len(enc.encode_ordinary(d)) for d in fixed)}
    corpus.encode_to_shards([p], encoding=ENC, out=tmp_path / "s", progress=False)
    want = [t for d in fixed for t in [*enc.encode_ordinary(d), enc.eot_token]]
    assert np.concatenate(_shards(tmp_path / "s")).tolist() == want


def test_train_and_encode_say_which_files_are_named_twice(tmp_path, capsys):
    """A folder and a file in it: the file is read twice (as named), and the command says so."""
    data = tmp_path / "data"
    data.mkdir()
    (data / "a.txt").write_text("hello world")
    (data / "b.txt").write_text("bye now")
    out = tmp_path / "tok"
    argv = ["train", str(data), str(data / "a.txt"), "--vocab-size", "258", "-o", str(out), "--no-progress"]
    assert cli.main(argv) == 0
    err = capsys.readouterr().err
    assert f"files named more than once are read each time: {data / 'a.txt'} (2 times)" in err, err
    assert "b.txt" not in err
    shards = tmp_path / "shards"
    argv = ["encode", str(data), str(data / "b.txt"), "--encoding", ENC, "-o", str(shards), "--no-progress"]
    assert cli.main(argv) == 0
    err = capsys.readouterr().err
    assert f"{data / 'b.txt'} (2 times)" in err and "a.txt" not in err, err
    assert "3 documents" in err, err
    assert cli.main(["train", str(data), "--vocab-size", "258", "-o", str(tmp_path / "t2"), "--no-progress"]) == 0
    assert "more than once" not in capsys.readouterr().err


def test_compressed_parquet_files_are_read(tmp_path):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    texts = _texts(30, seed=4)
    pq.write_table(pa.table({"text": texts}), tmp_path / "p.parquet")
    raw = (tmp_path / "p.parquet").read_bytes()
    (tmp_path / "p.parquet.gz").write_bytes(gzip.compress(raw))
    with pa.output_stream(str(tmp_path / "p.parquet.zst"), compression="zstd") as f:
        f.write(raw)
    enc = bytepair.get_encoding(ENC)
    want = sum(len(enc.encode_ordinary(t)) for t in texts)
    for name in ("p.parquet.gz", "p.parquet.zst"):
        assert list(corpus.count_files([tmp_path / name], encoding=ENC).values()) == [want]
        assert bytepair.WordCounts([tmp_path / name], progress=False) == bytepair.WordCounts(texts, progress=False)
    m = corpus.encode_to_shards([tmp_path / "p.parquet.gz"], encoding=ENC, out=tmp_path / "o", progress=False)
    assert m["documents"] == len(texts)
    (tmp_path / "bad.parquet.gz").write_bytes(gzip.compress(raw)[:-20])
    with pytest.raises(OSError, match=r"bad\.parquet\.gz"):
        corpus.count_files([tmp_path / "bad.parquet.gz"], encoding=ENC)


def test_parquet_without_pyarrow_fails_before_any_output(tmp_path, monkeypatch, capsys):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"text": ["hello world"]}), tmp_path / "p.parquet")
    for name in ("pyarrow", "pyarrow.parquet"):
        monkeypatch.setitem(sys.modules, name, None)  # import pyarrow raises ImportError
    with pytest.raises(ImportError, match="needs pyarrow"):
        corpus.encode_to_shards([tmp_path / "p.parquet"], encoding=ENC, out=tmp_path / "o")
    assert not (tmp_path / "o").exists()
    assert cli.main(["count", str(tmp_path / "p.parquet"), "--encoding", ENC]) == 1
    assert cli.main(["encode", str(tmp_path / "p.parquet"), "--encoding", ENC, "-o", str(tmp_path / "o")]) == 1
    err = capsys.readouterr().err
    assert err.count("needs pyarrow") == 2 and "Traceback" not in err
    assert not (tmp_path / "o").exists() or not any((tmp_path / "o").iterdir())


def test_corpus_arguments_are_checked_before_any_output(tmp_path, corpus_files):
    files, _ = corpus_files
    for kw, exc, name in [
        (dict(num_threads=-1), ValueError, "num_threads"),
        (dict(num_threads=2**64), ValueError, "num_threads"),
        (dict(field=5), TypeError, "field"),
        (dict(on_error="ignore"), ValueError, "on_error"),
    ]:
        with pytest.raises(exc, match=name):
            corpus.encode_to_shards(files, encoding=ENC, out=tmp_path / "o", **kw)
        assert not (tmp_path / "o").exists()
        with pytest.raises(exc, match=name):
            corpus.count_files(files, encoding=ENC, **kw)
    for bad in (True, 0, 2**64, 1.5):
        with pytest.raises(ValueError, match="docs_per_shard"):
            corpus.encode_to_shards(files, encoding=ENC, out=tmp_path / "o", docs_per_shard=bad)
        assert not (tmp_path / "o").exists()
    for bad in (True, False):  # ints to operator.index, but not token ids
        with pytest.raises(ValueError, match="eot_token"):
            corpus.encode_to_shards(files, encoding=ENC, out=tmp_path / "o", eot_token=bad)
        assert not (tmp_path / "o").exists()


@pytest.mark.parametrize(
    "damage",
    [
        lambda m: m.update(shards="shard_00000.npy"),
        lambda m: m.update(shards={"file": "shard_00000.npy"}),
        lambda m: m["shards"].append(None),
        lambda m: m["shards"][0].pop("tokens"),
        lambda m: m["shards"][0].pop("file"),
        lambda m: m["shards"][0].update(documents="3"),
        lambda m: m["shards"][0].update(tokens=-1),
        lambda m: m["shards"][0].update(file="../elsewhere.npy"),
    ],
)
def test_a_damaged_manifest_is_a_shards_error(tmp_path, corpus_files, damage, capsys):
    files, _ = corpus_files
    out = tmp_path / "o"
    corpus.encode_to_shards(files, encoding=ENC, out=out, docs_per_shard=50, progress=False)
    m = json.loads((out / "manifest.json").read_text())
    damage(m)
    (out / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(corpus.ShardsError, match="damaged manifest"):
        corpus.encode_to_shards(files, encoding=ENC, out=out, docs_per_shard=50, progress=False)
    assert cli.main(["encode", *files, "--encoding", ENC, "-o", str(out), "--docs-per-shard", "50"]) == 2
    assert "damaged manifest" in capsys.readouterr().err
    # overwrite starts over
    m = corpus.encode_to_shards(files, encoding=ENC, out=out, docs_per_shard=50, progress=False, overwrite=True)
    assert m["complete"]


def test_a_broken_link_among_the_inputs_is_skipped_under_skip(tmp_path):
    (tmp_path / "a.txt").write_text("hello world")
    (tmp_path / "b.txt").symlink_to(tmp_path / "gone.txt")
    for inputs in ([str(tmp_path / "*.txt")], [tmp_path / "a.txt", tmp_path / "b.txt"]):
        with pytest.warns(UserWarning, match=r"skipped 1 .*b\.txt"):
            wc = bytepair.WordCounts(inputs, on_error="skip", progress=False)
        assert wc["hello"] == 1
        errors: list[str] = []
        got = corpus.count_files(inputs, encoding=ENC, on_error="skip", errors=errors)
        assert got[str(tmp_path / "a.txt")] == 2 and len(errors) == 1 and "b.txt" in errors[0]
        with pytest.raises(FileNotFoundError, match=r"b\.txt"):
            bytepair.WordCounts(inputs, progress=False)


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs named pipes")
@pytest.mark.parametrize("command", ["count", "train", "encode"])
def test_ctrl_c_while_a_pipe_waits_for_its_writer(tmp_path, command):
    """The input is a pipe whose writer sent some text and then waits (``bytepair count
    <(slow producer)``): Ctrl-C still stops the command at once, with status 130."""
    fifo = tmp_path / "stream.txt"
    os.mkfifo(fifo)
    # Holds the pipe open for writing, sends a line, then waits.
    writer = subprocess.Popen(
        [
            sys.executable,
            "-c",
            f"import time; f = open({str(fifo)!r}, 'w'); f.write('hello world\\n'); f.flush(); time.sleep(60)",
        ]
    )
    extra = {
        "count": ["--encoding", ENC],
        "train": ["--vocab-size", "300", "-o", str(tmp_path / "tok")],
        "encode": ["--encoding", ENC, "-o", str(tmp_path / "shards")],
    }[command]
    p = subprocess.Popen(
        [sys.executable, "-m", "bytepair", command, str(fifo), "--no-progress", *extra],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        time.sleep(2.0)
        assert p.poll() is None, p.communicate()
        t0 = time.monotonic()
        p.send_signal(signal.SIGINT)
        _, err = p.communicate(timeout=15)
        took = time.monotonic() - t0
    finally:
        p.kill()
        writer.kill()
        writer.wait()
    assert p.returncode == 130, (p.returncode, err[-1000:])
    assert took < 5, took
    assert not (tmp_path / "tok").exists()


def test_resume_refuses_a_changed_encoding_or_input(tmp_path):
    """Two trained encodings with one name and size are different runs; so is an input edited in
    place to the same size. Neither returns the earlier shards as the answer."""
    (tmp_path / "in.txt").write_text("aaaa bbbb " * 50)
    e1 = bytepair.train(["aaaa aaaa aaaa"] * 9, vocab_size=257, name="tok", progress=False)
    e2 = bytepair.train(["bbbb bbbb cccc"] * 9, vocab_size=257, name="tok", progress=False)
    assert (e1.name, e1.n_vocab) == (e2.name, e2.n_vocab) and e1.encode("aaaa") != e2.encode("aaaa")
    kw = dict(out=tmp_path / "o", eot_token=0, progress=False)
    corpus.encode_to_shards([tmp_path / "in.txt"], encoding=e1, **kw)
    assert corpus.encode_to_shards([tmp_path / "in.txt"], encoding=e1, **kw)["complete"]  # same run: done
    with pytest.raises(corpus.ShardsError, match="encoding_sha256"):
        corpus.encode_to_shards([tmp_path / "in.txt"], encoding=e2, **kw)
    m = corpus.encode_to_shards([tmp_path / "in.txt"], encoding=e2, overwrite=True, **kw)
    assert np.concatenate(corpus.read_shards(tmp_path / "o")).tolist() == e2.encode_ordinary("aaaa bbbb " * 50) + [0]
    (tmp_path / "in.txt").write_text("cccc dddd " * 50)  # same size
    os.utime(tmp_path / "in.txt", ns=(m["input_mtime_ns"][0] + 10**9,) * 2)
    with pytest.raises(corpus.ShardsError, match="input_mtime_ns"):
        corpus.encode_to_shards([tmp_path / "in.txt"], encoding=e2, **kw)


def test_read_shards_reads_what_the_manifest_lists(tmp_path, corpus_files):
    files, docs = corpus_files
    out = tmp_path / "o"
    corpus.encode_to_shards(files, encoding=ENC, out=out, docs_per_shard=40, progress=False)
    shards = corpus.read_shards(out)
    m = json.loads((out / "manifest.json").read_text())
    assert len(shards) == len(m["shards"]) >= 3 and sum(len(a) for a in shards) == m["tokens"]
    (out / "shard_000002.npy").write_bytes((out / "shard_00002.npy").read_bytes())  # a stray copy
    assert len(corpus.read_shards(out)) == len(m["shards"])
    (out / "shard_00001.npy").unlink()
    with pytest.raises(corpus.ShardsError, match="shard_00001.npy"):
        corpus.read_shards(out)
    m = json.loads((out / "manifest.json").read_text())
    (out / "manifest.json").write_text(json.dumps(dict(m, complete=False)))
    with pytest.raises(corpus.ShardsError, match="not complete"):
        corpus.read_shards(out)
    (out / "manifest.json").unlink()
    with pytest.raises(corpus.ShardsError, match="no manifest.json"):
        corpus.read_shards(out)
    with pytest.raises(FileNotFoundError):
        corpus.read_shards(tmp_path / "missing")
    with pytest.raises(NotADirectoryError):
        corpus.read_shards(files[0])


def test_count_output_that_cannot_be_written_is_an_error(corpus_files, tmp_path):
    files, _ = corpus_files
    args = [sys.executable, "-m", "bytepair", "count", *files, "--encoding", ENC, "--no-progress"]
    closed = subprocess.run(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, close_fds=True,
                            preexec_fn=lambda: os.close(1))  # fmt: skip
    assert closed.returncode == 1 and "standard output is closed" in closed.stderr, closed.stderr[-500:]
    if os.path.exists("/dev/full"):
        with open("/dev/full", "w") as full:
            p = subprocess.run(args, stdout=full, stderr=subprocess.PIPE, text=True)
        assert p.returncode == 1 and "No space left" in p.stderr and "Traceback" not in p.stderr, p.stderr[-500:]
    (tmp_path / "afile").write_text("x")
    b = _run("bench", "--out", str(tmp_path / "afile"), "--only", "count", "--quick")
    assert b.returncode == 2 and "is a file" in b.stderr and "Traceback" not in b.stderr
