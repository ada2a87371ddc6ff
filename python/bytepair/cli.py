"""The ``bytepair`` command line: ``bench`` now; ``train``, ``encode`` and ``count`` to come.

>>> main(["bench", "--help"])  # doctest: +SKIP
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

__all__ = ["build_parser", "main"]

DEFAULT_ENCODINGS = ("cl100k_base", "o200k_base")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser for every subcommand."""
    from bytepair import __version__

    parser = argparse.ArgumentParser(
        prog="bytepair",
        description="bytepair: a fast, byte-identical drop-in for tiktoken.",
    )
    parser.add_argument("--version", action="version", version=f"bytepair {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    bench = sub.add_parser(
        "bench",
        help="benchmark bytepair against tiktoken (and other installed peers)",
        description=(
            "Benchmarks bytepair side by side with tiktoken (and bpe-openai when installed) on "
            "fresh ~4 KB documents: encode_ordinary per category, encode with special tokens, "
            "count, batch with 1 and 2 threads, cold load time, and long single-character runs. "
            "Checks that every output agrees with tiktoken. Without --corpus it uses this "
            "Python's standard library (code), its docs and text files (prose) and the test "
            "suite's sample texts (multilingual); no download. Writes results.json and bench.png "
            "to --out. Exit status: 0 all outputs agree, 1 a mismatch, 2 bad arguments."
        ),
    )
    bench.add_argument(
        "--corpus",
        nargs="+",
        action="extend",
        metavar="PATH",
        help="files or directories (.txt, .jsonl with a 'text' field, .parquet; .gz/.zst ok); "
        "one category per PATH",
    )
    bench.add_argument(
        "--encodings",
        nargs="+",
        default=list(DEFAULT_ENCODINGS),
        metavar="NAME",
        help="encodings to measure (default: %(default)s)",
    )
    bench.add_argument(
        "--out", default="bench-out", metavar="DIR", help="output directory (default: %(default)s)"
    )
    bench.add_argument("--quick", action="store_true", help="a smaller, faster run (CI smoke test)")
    bench.add_argument(
        "--only",
        nargs="+",
        metavar="WORKLOAD",
        help="run only these workloads (see --list)",
    )
    bench.add_argument("--list", action="store_true", help="list the workloads and exit")
    bench.add_argument(
        "--no-progress",
        action="store_true",
        help="no progress display (off anyway when not a terminal)",
    )
    bench.set_defaults(func=_bench)

    for name, what in (
        ("train", "train a BPE vocabulary on a corpus"),
        ("encode", "encode a corpus into token shards"),
        ("count", "count the tokens of a corpus"),
    ):
        p = sub.add_parser(name, help=f"{what} (not yet available)", add_help=False)
        p.add_argument("args", nargs=argparse.REMAINDER)
        p.set_defaults(func=_not_yet, name=name)
    return parser


def _not_yet(args: argparse.Namespace) -> int:
    print(f"bytepair {args.name}: not yet available in this version of bytepair", file=sys.stderr)
    return 2


def _bench(args: argparse.Namespace) -> int:
    from bytepair import bench, registry

    if args.list:
        for name, w in bench.workloads().items():
            print(f"{name:<16} {w.description}")
        return 0
    known = set(registry.list_encoding_names())
    unknown = [e for e in args.encodings if e not in known]
    if unknown:
        print(
            f"bytepair bench: unknown encoding(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}",
            file=sys.stderr,
        )
        return 2
    if args.only:
        missing = [w for w in args.only if w not in bench.workloads()]
        if missing:
            print(
                f"bytepair bench: unknown workload(s) {', '.join(missing)}; known: {', '.join(bench.workloads())}",
                file=sys.stderr,
            )
            return 2
    try:
        return bench.run(
            corpus_paths=args.corpus,
            encodings=args.encodings,
            out=args.out,
            quick=args.quick,
            only=args.only,
            progress=False if args.no_progress else None,
        )
    except bench.CorpusError as e:
        print(f"bytepair bench: {e}", file=sys.stderr)
        return 2
    except ImportError as e:
        print(
            f"bytepair bench: {e}; install the bench extra: pip install 'bytepair[bench]'",
            file=sys.stderr,
        )
        return 2


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the ``bytepair`` command; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args))
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
