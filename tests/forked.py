"""Runs a function in a forked child and brings its result back, failing on a hang: the check
that native calls keep working in processes forked after the parent used its threads (as
``multiprocessing`` and data-loader workers do on Linux)."""

from __future__ import annotations

import os
import pickle
import time
from typing import Any, Callable

import pytest


def in_forked_child(fn: Callable[[], Any], what: str, timeout: float = 120.0) -> Any:
    """``fn()`` run in a child forked now; its (picklable) result, or the test fails when
    the child raises, dies, or is still running after ``timeout`` seconds."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover (the child)
        code = 1
        try:
            os.close(r)
            with os.fdopen(w, "wb") as f:
                pickle.dump(fn(), f)
            code = 0
        finally:
            os._exit(code)
    os.close(w)
    os.set_blocking(r, False)
    chunks: list[bytes] = []
    deadline = time.monotonic() + timeout
    try:
        while True:
            # Drain the pipe as the child writes, so that a large result cannot block it.
            while True:
                try:
                    chunk = os.read(r, 1 << 16)
                except BlockingIOError:
                    break
                if not chunk:
                    break
                chunks.append(chunk)
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                break
            if time.monotonic() > deadline:
                os.kill(pid, 9)
                os.waitpid(pid, 0)
                pytest.fail(f"the forked child hung in {what}")
            time.sleep(0.01)
        os.set_blocking(r, True)
        with os.fdopen(r, "rb", closefd=False) as f:
            chunks.append(f.read())
    finally:
        os.close(r)
    assert os.waitstatus_to_exitcode(status) == 0, f"the forked child failed in {what}"
    return pickle.loads(b"".join(chunks))
