"""``bytepair.distributed`` on a 2-worker LocalCluster (127.0.0.1): identity with one machine
(word counts, merges, shards), a worker killed mid-job, and bad inputs."""

from __future__ import annotations

import gzip
import json
import os
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

distributed_lib = pytest.importorskip("distributed")
pytest.importorskip("dask.bag")

import bytepair  # noqa: E402
from bytepair import distributed  # noqa: E402

ENC = "cl100k_base"
TIMEOUT = 120


@pytest.fixture(scope="module")
def client():
    with distributed.local_client(n_workers=2, threads_per_worker=1) as c:
        c.wait_for_workers(2, timeout=60)
        yield c


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> list[str]:
    """A dozen files of all formats (one of them with no documents)."""
    import random

    d = tmp_path_factory.mktemp("dcorpus")
    rng = random.Random(7)
    words = ["the", "cat", "sat", "naïve", "日本語", "don't", "  ", "\n", "42", "<|endoftext|>", "ε"]

    def text() -> str:
        return " ".join(rng.choice(words) for _ in range(rng.randint(0, 40)))

    out = []
    for i in range(8):
        p = d / f"f{i:02d}.jsonl"
        p.write_text("".join(json.dumps({"text": text()}) + "\n" for _ in range(rng.randint(0, 30))), encoding="utf-8")
        out.append(p)
    for i in range(3):
        p = d / f"t{i}.txt"
        p.write_text(text(), encoding="utf-8")
        out.append(p)
    with gzip.open(d / "z.jsonl.gz", "wt", encoding="utf-8") as f:
        for _ in range(25):
            f.write(json.dumps({"text": text()}) + "\n")
    out.append(d / "z.jsonl.gz")
    return [str(p) for p in out]


def _dir_bytes(out: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(out.iterdir())}


def _cli_encode(files: list[str], out: Path, *extra: str) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "bytepair", "encode", *files, "--encoding", ENC, "-o", str(out), *extra],
        check=False,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )
    assert proc.returncode == 0, proc.stderr


def test_count_words_is_bit_identical(client, files):
    local = bytepair.WordCounts([Path(f) for f in files], pattern=ENC, progress=False)
    got = distributed.count_words(files, pattern=ENC, client=client, task_bytes=1)
    assert len(local) > 20
    assert got == local and got.to_bytes() == local.to_bytes()
    # Fewer, larger tasks; special tokens cut out.
    local = bytepair.WordCounts([Path(f) for f in files], pattern=ENC, special_tokens=["<|endoftext|>"], progress=False)
    got = distributed.count_words(files, pattern=ENC, special_tokens=["<|endoftext|>"], client=client)
    assert got.to_bytes() == local.to_bytes()


def test_count_words_from_a_bag(client):
    import dask.bag as db

    docs = [f"doc {i} " + "word " * (i % 7) + "日本" * (i % 3) for i in range(300)]
    got = distributed.count_words(
        db.from_sequence(docs, npartitions=7), pattern="o200k_base", client=client, split_every=2
    )
    local = bytepair.WordCounts(docs, pattern="o200k_base", progress=False)
    assert got.to_bytes() == local.to_bytes()


def test_train_has_the_merges_of_bytepair_train(client, files):
    want = bytepair.train([Path(f) for f in files], vocab_size=400, special_tokens=["<|endoftext|>"], progress=False)
    got = distributed.train(
        files, vocab_size=400, special_tokens=["<|endoftext|>"], client=client, task_bytes=1, progress=False
    )
    assert got._mergeable_ranks == want._mergeable_ranks
    assert got._special_tokens == want._special_tokens
    assert got._pat_str == want._pat_str


@pytest.mark.parametrize("shards_per_task", [1, 3])
def test_encode_to_shards_equals_the_cli(client, files, tmp_path, shards_per_task):
    _cli_encode(files, tmp_path / "cli", "--docs-per-shard", "7")
    m = distributed.encode_to_shards(
        files,
        encoding=ENC,
        out=tmp_path / "dask",
        docs_per_shard=7,
        client=client,
        task_bytes=1,
        shards_per_task=shards_per_task,
    )
    want = _dir_bytes(tmp_path / "cli")
    assert len(want) > 10 and m["complete"]
    assert _dir_bytes(tmp_path / "dask") == want


def test_local_cluster_is_started_when_no_client(files, tmp_path):
    _cli_encode(files, tmp_path / "cli", "--docs-per-shard", "50")
    distributed.encode_to_shards(files, encoding=ENC, out=tmp_path / "dask", docs_per_shard=50)
    assert _dir_bytes(tmp_path / "dask") == _dir_bytes(tmp_path / "cli")


def _set_delay(client, seconds: float) -> None:
    """Slows every task of the workers down (``exec`` travels by reference, so this runs in the
    worker processes themselves)."""
    client.run(exec, f"import os; os.environ['_BYTEPAIR_TEST_TASK_DELAY'] = '{seconds}'")


def _kill_a_busy_worker(client) -> int:
    """SIGKILLs a worker process while it runs a task; waits for the nanny's replacement and
    slows it down too. Returns the killed pid."""
    pids = client.run(os.getpid)
    deadline = time.time() + 60
    while time.time() < deadline:
        busy = [w for w, keys in client.processing().items() if keys and w in pids]
        if busy:
            time.sleep(0.3)  # inside the task's delay
            os.kill(pids[busy[0]], signal.SIGKILL)
            break
        time.sleep(0.02)
    else:
        raise AssertionError("no task started")
    while time.time() < deadline:
        workers = set(client.scheduler_info()["workers"])
        if len(workers) == 2 and busy[0] not in workers:
            break
        time.sleep(0.05)
    _set_delay(client, 0.5)
    return pids[busy[0]]


@pytest.fixture
def slow_tasks(client):
    _set_delay(client, 0.5)
    yield
    client.run(exec, "import os; os.environ.pop('_BYTEPAIR_TEST_TASK_DELAY', None)", on_error="ignore")


def test_a_killed_worker_changes_nothing(client, files, tmp_path, slow_tasks):
    local = bytepair.WordCounts([Path(f) for f in files], pattern=ENC, progress=False)
    with ThreadPoolExecutor(1) as ex:
        fut = ex.submit(distributed.count_words, files, pattern=ENC, client=client, task_bytes=1)
        killed = _kill_a_busy_worker(client)  # only kills a worker with a task in processing
        assert not fut.done()  # so the kill hit a running job, whatever the machine's speed
        got = fut.result(timeout=TIMEOUT)
    assert killed not in client.run(os.getpid).values()
    assert got.to_bytes() == local.to_bytes()

    _cli_encode(files, tmp_path / "cli", "--docs-per-shard", "9")
    with ThreadPoolExecutor(1) as ex:
        fut = ex.submit(
            distributed.encode_to_shards,
            files,
            encoding=ENC,
            out=tmp_path / "dask",
            docs_per_shard=9,
            client=client,
            task_bytes=1,
        )
        time.sleep(1.5)  # past the plan, into the encoding tasks
        _kill_a_busy_worker(client)
        assert not fut.done()
        fut.result(timeout=TIMEOUT)
    assert _dir_bytes(tmp_path / "dask") == _dir_bytes(tmp_path / "cli")


def test_bad_inputs_fail_with_path_or_skip(client, files, tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "ok"}\n{"text": 1}\n{"text": "fine"}\n', encoding="utf-8")
    inputs = files[:3] + [str(bad)] + files[3:]
    with pytest.raises(ValueError, match=r"bad\.jsonl:2"):
        distributed.count_words(inputs, pattern=ENC, client=client, task_bytes=1)
    with pytest.raises(ValueError, match=r"bad\.jsonl:2"):
        distributed.encode_to_shards(inputs, encoding=ENC, out=tmp_path / "x", client=client)
    with pytest.warns(UserWarning, match=r"bad\.jsonl:2"):
        got = distributed.count_words(inputs, pattern=ENC, client=client, task_bytes=1, on_error="skip")
    with pytest.warns(UserWarning):
        local = bytepair.WordCounts([Path(f) for f in inputs], pattern=ENC, progress=False, on_error="skip")
    assert got.to_bytes() == local.to_bytes()
    _cli_encode(inputs, tmp_path / "cli", "--docs-per-shard", "8", "--on-error", "skip")
    m = distributed.encode_to_shards(
        inputs, encoding=ENC, out=tmp_path / "dask", docs_per_shard=8, client=client, task_bytes=1, on_error="skip"
    )
    assert m["skipped"] == 1 and "bad.jsonl:2" in m["errors"][0]
    assert _dir_bytes(tmp_path / "dask") == _dir_bytes(tmp_path / "cli")


def test_skipped_inputs_are_all_reported_from_threaded_workers(tmp_path):
    """Tasks running at once on one worker's threads each report their own skipped inputs: the
    warning counts all of them and names the first ones in input order, as on one machine (they
    were recorded with process-wide warning filters, which such tasks swapped and lost)."""
    inputs = []
    for i in range(8):
        p = tmp_path / f"f{i}.jsonl"
        p.write_text('{"text": "hello world"}\n{"text": 1}\n{"text": "and more"}\n', encoding="utf-8")
        inputs.append(str(p))
    with pytest.warns(UserWarning) as local_warnings:
        local = bytepair.WordCounts([Path(f) for f in inputs], pattern=ENC, progress=False, on_error="skip")
    with distributed.local_client(n_workers=1, threads_per_worker=2) as c:
        for _ in range(3):
            with pytest.warns(UserWarning) as caught:
                got = distributed.count_words(inputs, pattern=ENC, client=c, task_bytes=1, on_error="skip")
            assert got.to_bytes() == local.to_bytes()
            assert len(caught) == 1
            message = str(caught[0].message)
            assert message == str(local_warnings[0].message), message
            assert message.startswith("skipped 8 bad input(s): ") and "f0.jsonl:2" in message


def test_a_cluster_of_threads_in_this_process(files):
    """``local_client(processes=False)``: workers as threads of this process (it failed to start:
    the in-process scheduler was given a TCP host). Counts equal one machine's."""
    local = bytepair.WordCounts([Path(f) for f in files], pattern=ENC, progress=False)
    with distributed.local_client(n_workers=1, threads_per_worker=2, processes=False) as c:
        assert c.scheduler.address.startswith("inproc://")
        got = distributed.count_words(files, pattern=ENC, client=c, task_bytes=1)
    assert got.to_bytes() == local.to_bytes()


def test_bad_shard_arguments_are_refused_before_any_output(client, files, tmp_path):
    for kw, name in [
        (dict(shards_per_task=1.5), "shards_per_task"),
        (dict(shards_per_task=0), "shards_per_task"),
        (dict(docs_per_shard=2**64), "docs_per_shard"),
        (dict(eot_token=True), "eot_token"),
    ]:
        with pytest.raises(ValueError, match=name):
            distributed.encode_to_shards(files, encoding=ENC, out=tmp_path / "o", client=client, **kw)
        assert not (tmp_path / "o").exists()


def test_shard_plan():
    # 3 files with 5, 0 and 6 documents; 4 documents a shard.
    assert distributed._shard_tasks([5, 0, 6], 4, 1) == [(0, 1, 0, 4, 0), (0, 3, 4, 4, 1), (2, 3, 3, 3, 2)]
    assert distributed._shard_tasks([5, 0, 6], 4, 2) == [(0, 3, 0, 8, 0), (2, 3, 3, 3, 2)]
    assert distributed._shard_tasks([0, 0], 4, 1) == []


def test_encode_with_a_trained_encoding(client, files, tmp_path):
    enc = bytepair.train([Path(f) for f in files], vocab_size=300, special_tokens=["<|endoftext|>"], progress=False)
    enc.save(tmp_path / "tok")
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "bytepair",
            "encode",
            *files,
            "--encoding",
            str(tmp_path / "tok"),
            "-o",
            str(tmp_path / "cli"),
            "--docs-per-shard",
            "10",
        ],
        check=False,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )
    assert proc.returncode == 0, proc.stderr
    distributed.encode_to_shards(
        files, encoding=enc, out=tmp_path / "dask", docs_per_shard=10, client=client, task_bytes=1
    )
    assert _dir_bytes(tmp_path / "dask") == _dir_bytes(tmp_path / "cli")


def test_bad_arguments_are_refused_before_any_work(files, tmp_path):
    for split_every in (1, 0, True):
        with pytest.raises(ValueError, match="split_every"):
            distributed.count_words(files, split_every=split_every)
    with pytest.raises(TypeError, match="field"):
        distributed.count_words(files, field=5)
    with pytest.raises(TypeError, match="field"):
        distributed.encode_to_shards(files, encoding="cl100k_base", out=tmp_path / "o", field=5)
    with pytest.raises(ValueError, match="docs_per_shard"):
        distributed.encode_to_shards(files, encoding="cl100k_base", out=tmp_path / "o", docs_per_shard=True)
    assert not (tmp_path / "o").exists()
