"""encode_ordinary throughput with each implementation run alone, one after the other.

``bytepair bench`` interleaves implementations in chunks of 16 documents, so each one starts its
chunk with caches full of the others' data; that is fair for noise but charges a fast encoder a
large fixed cost per chunk (o200k's tables are 8 MB). This script measures the other regime, a
tokenizer running by itself: every implementation encodes every document exactly once, fresh
``str`` objects of about 4 KB, the same documents for each, one implementation after the other.

    python benches/sequential_encode.py ../shared/corpus/en.txt cl100k_base [max_bytes]

Prints MB/s for bytepair and tiktoken and their ratio. Run it a few times: the machine is noisy.
With ``--calls``, it also times ``encode_to_numpy(d, disallowed_special=())`` for both (no
Python list of ints: the ids come back in one array) and bytepair's ``count``, over fresh copies
of the same documents, to show what part of a call building the list takes. With ``--peers``,
the fast forks that are installed (bpe-openai, riptoken) run alone too, after tiktoken, with their
MB/s, their ratio to tiktoken, and how many documents they encode differently from tiktoken.
With ``--turn-docs=K``, the implementations take turns every K documents (who goes first
rotates) instead of each running over all of them at once: a slow spell of this noisy machine
then falls on all of them alike (K=250 is about 1 MB a turn, so each turn still runs alone with
its tables warm after its first documents).
"""

from __future__ import annotations

import gc
import sys
import time


PEERS = {"bpe-openai": "bpe_openai", "riptoken": "riptoken"}


def main(
    path: str,
    encoding: str,
    max_bytes: int = 8_000_000,
    calls: bool = False,
    peers: bool = False,
    turn_docs: int | None = None,
) -> None:
    import importlib
    import tempfile

    import bytepair
    from bytepair.bench import prepare_tiktoken_cache

    # tiktoken offline, from the bundled rank files (unless TIKTOKEN_CACHE_DIR is set already)
    prepare_tiktoken_cache(tempfile.mkdtemp(prefix="tiktoken-cache-"), [encoding])
    import tiktoken

    with open(path, encoding="utf-8", errors="replace") as f:
        raw = f.read(max_bytes)
    docs = [raw[i : i + 4000] for i in range(0, len(raw), 4000)]
    mb = sum(len(d.encode()) for d in docs) / 1e6
    libs = {"bytepair": bytepair, "tiktoken": tiktoken}
    if peers:
        for name, module in PEERS.items():
            try:
                libs[name] = importlib.import_module(module)
            except ImportError:
                print(f"{name}: not installed (pip install {name})")
    # Every (implementation, call) to time, each with fresh copies of the documents (no cached
    # UTF-8 from an earlier run).
    jobs = {}
    for name, lib in libs.items():
        enc = lib.get_encoding(encoding)
        methods = {"encode_ordinary": enc.encode_ordinary}
        if calls and name in ("bytepair", "tiktoken"):
            methods["encode_to_numpy"] = lambda d, enc=enc: enc.encode_to_numpy(d, disallowed_special=())
            if hasattr(enc, "count"):
                methods["count"] = enc.count
        for what, fn in methods.items():
            fn("warm up the call")  # and the import, for the first
            jobs[name, what] = (fn, [d.encode().decode() for d in docs])
    # In turns of `turn_docs` documents, the jobs taking turns (who goes first rotates), so that
    # a slow spell of the machine falls on all of them; by default one turn each, one after the
    # other, each implementation alone for the whole text.
    step = turn_docs or len(docs)
    seconds = dict.fromkeys(jobs, 0.0)
    order = list(jobs)
    gc.disable()
    try:
        for turn, start in enumerate(range(0, len(docs), step)):
            k = turn % len(order)
            for key in order[k:] + order[:k]:
                fn, fresh = jobs[key]
                part = fresh[start : start + step]
                t0 = time.perf_counter()
                for d in part:
                    fn(d)
                seconds[key] += time.perf_counter() - t0
    finally:
        gc.enable()
    rates = {key: mb / t for key, t in seconds.items()}
    # The outputs to compare, untimed.
    tokens = {name: [jobs[name, "encode_ordinary"][0](d) for d in docs] for name in libs} if peers else {}
    bp, tk = rates["bytepair", "encode_ordinary"], rates["tiktoken", "encode_ordinary"]
    print(f"{path} {encoding}: bytepair {bp:.1f} MB/s, tiktoken {tk:.1f} MB/s, {bp / tk:.2f}x")
    for name in libs:
        if name in ("bytepair", "tiktoken"):
            continue
        r = rates[name, "encode_ordinary"]
        differ = sum(a != b for a, b in zip(tokens[name], tokens["tiktoken"]))
        print(
            f"  {name} {r:.1f} MB/s, {r / tk:.2f}x tiktoken (bytepair {bp / r:.2f}x {name}); "
            f"{differ} of {len(docs)} documents differ from tiktoken"
        )
    if peers and tokens["bytepair"] != tokens["tiktoken"]:
        raise SystemExit("MISMATCH: bytepair differs from tiktoken")
    if calls:
        bpn, tkn = rates["bytepair", "encode_to_numpy"], rates["tiktoken", "encode_to_numpy"]
        print(f"  encode_to_numpy: bytepair {bpn:.1f} MB/s, tiktoken {tkn:.1f} MB/s, {bpn / tkn:.2f}x")
        print(
            f"  bytepair count {rates['bytepair', 'count']:.1f} MB/s, {rates['bytepair', 'count'] / tk:.2f}x "
            "tiktoken's encode_ordinary"
        )


if __name__ == "__main__":
    turns = [a for a in sys.argv[1:] if a.startswith("--turn-docs=")]
    args = [a for a in sys.argv[1:] if a not in ("--calls", "--peers") and a not in turns]
    main(
        args[0],
        args[1],
        *(int(a) for a in args[2:3]),
        calls="--calls" in sys.argv,
        peers="--peers" in sys.argv,
        turn_docs=int(turns[-1].split("=", 1)[1]) if turns else None,
    )
