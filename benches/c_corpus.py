"""Builds the C-source training corpus of issue #4 from an extracted Linux source tree.

The corpus is real C: ``.c`` and ``.h`` files of the kernel's Debian orig tarball, without the
generated AMD register headers (``drivers/gpu/drm/amd/include/asic_reg``: 446 files, a third of
the tree's C bytes, nothing but ``#define`` lists), a fixed pseudo-random share of the files
(chosen by a hash of their path, so the sample spans the whole tree and is the same on every
machine), files that are not valid UTF-8 left out, written in path order as ``c-NN.txt`` files of
about 64 MB each, up to ``--bytes`` in total::

    curl -O http://deb.debian.org/debian/pool/main/l/linux/linux_6.12.8.orig.tar.xz  # 150933284 B,
    # sha256 3f258de1f486f02871255d100e8cdf0b9daec4d14994b9fe46184d984120f254 (the kernel of Debian stable's Sources index)
    tar -xJf linux_6.12.8.orig.tar.xz --wildcards '*.c' '*.h'
    python benches/c_corpus.py linux-6.12.8 /tmp/c-corpus   # 33741 files, 499010090 bytes
    BYTEPAIR_BENCH_TRAIN_CORPUS=/tmp/c-corpus pytest benches/bench_train.py --benchmark-enable \
        -s -k "not hf and not flat"

Never commit the output.
"""

from __future__ import annotations

import argparse
import hashlib
import os
from pathlib import Path

EXCLUDE = ("drivers/gpu/drm/amd/include/asic_reg/",)
SHARD_BYTES = 64_000_000


def c_files(root: Path) -> list[tuple[str, int]]:
    """(relative path, size) of every .c/.h file outside EXCLUDE, in path order."""
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in filenames:
            if name.endswith((".c", ".h")):
                p = Path(dirpath, name)
                rel = p.relative_to(root).as_posix()
                if not rel.startswith(EXCLUDE) and p.is_file() and not p.is_symlink():
                    out.append((rel, p.stat().st_size))
    out.sort()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("tree", type=Path, help="extracted source tree")
    ap.add_argument("out", type=Path, help="output directory")
    ap.add_argument("--bytes", type=int, default=500_000_000, help="total size (default 500 MB)")
    args = ap.parse_args()
    files = c_files(args.tree)
    total = sum(s for _, s in files)
    # Keep the files whose path hash falls under the share that gives --bytes (a little over,
    # to make up for files that are not UTF-8; the output stops at --bytes).
    share = min(1.0, 1.02 * args.bytes / max(1, total))
    args.out.mkdir(parents=True, exist_ok=True)
    written, shard, n_shards, n_files, n_bad = 0, None, 0, 0, 0
    for rel, _ in files:
        h = int.from_bytes(hashlib.sha1(rel.encode()).digest()[:8], "big") / 2**64
        if h >= share:
            continue
        data = (args.tree / rel).read_bytes()
        try:
            data.decode("utf-8")
        except UnicodeDecodeError:
            n_bad += 1
            continue
        if written + len(data) > args.bytes:
            break
        if shard is None or shard.tell() >= SHARD_BYTES:
            if shard is not None:
                shard.close()
            shard = open(args.out / f"c-{n_shards:02d}.txt", "wb")
            n_shards += 1
        if data and not data.endswith(b"\n"):
            data += b"\n"
        shard.write(data)
        written += len(data)
        n_files += 1
    if shard is not None:
        shard.close()
    print(
        f"{n_files} files, {written} bytes in {args.out} ({n_bad} non-UTF-8 files skipped; "
        f"{len(files)} candidates, {total} bytes)"
    )


if __name__ == "__main__":
    main()
