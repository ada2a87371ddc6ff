"""Two builds of the extension side by side in one process: which encodes faster?

Runs from two processes (``sequential_encode.py`` old, then new) swing by tens of percent on a
shared VM, more than most changes to the encoder. This loads two builds of ``bytepair._native``
into one process and alternates them every 16 fresh 4 KB documents, each build first in every
other turn, so both see the same machine; it reports the ratio of their total times.

    python benches/ab_encode.py OLD/_native.so NEW/_native.so ../shared/corpus/en.txt cl100k_base

``OLD`` and ``NEW`` are the ``bytepair`` folders of two installed wheels (``pip install --no-deps
--target DIR wheel``), or a checkout's ``python/bytepair`` after ``maturin develop``.
"""

from __future__ import annotations

import importlib.util
import sys
import time
from types import ModuleType


def load(path: str, name: str) -> ModuleType:
    # The init function is found by the last part of the name, which must stay ``_native``.
    spec = importlib.util.spec_from_file_location(f"{name}._native", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def main(old_path: str, new_path: str, path: str, encoding: str, max_chars: int = 8_000_000) -> None:
    import bytepair

    pattern = bytepair.get_encoding(encoding)._pat_str
    cores = {
        name: load(p, f"ab_{name}").CoreBPE.builtin(encoding, {}, pattern)
        for name, p in (("old", old_path), ("new", new_path))
    }
    with open(path, encoding="utf-8", errors="replace") as f:
        text = f.read(max_chars)
    spent = {"old": 0.0, "new": 0.0}
    for _ in range(2):
        docs = [text[i : i + 4096].encode().decode() for i in range(0, len(text), 4096)]  # fresh strs
        for turn, i in enumerate(range(0, len(docs), 16)):
            for name in ("old", "new") if turn % 2 == 0 else ("new", "old"):
                encode = cores[name].encode_ordinary
                t = time.perf_counter()
                for d in docs[i : i + 16]:
                    encode(d)
                spent[name] += time.perf_counter() - t
    mb = 2 * len(text.encode()) / 1e6
    print(
        f"{path} {encoding}: old {mb / spent['old']:.1f} MB/s, new {mb / spent['new']:.1f} MB/s, "
        f"new/old {spent['old'] / spent['new']:.3f}"
    )


if __name__ == "__main__":
    main(*sys.argv[1:5], *(int(a) for a in sys.argv[5:6]))
