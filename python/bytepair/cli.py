"""The ``bytepair`` command line: ``bench``, ``train``, ``encode`` and ``count``.

>>> main(["bench", "--help"])  # doctest: +SKIP
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import warnings
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

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
        help="benchmark bytepair against tiktoken, rustbpe, tokenizers, numpy (installed peers)",
        description=(
            "Benchmarks bytepair side by side with tiktoken (and the fast forks bpe-openai and "
            "riptoken when installed) on fresh ~4 KB documents: encode_ordinary per category, "
            "encode with special tokens, "
            "count, batch with 1 and 2 threads, cold load time, and long single-character runs; "
            "BPE training on the corpus against rustbpe and Hugging Face tokenizers (time, peak "
            "memory, ranks checked against rustbpe's); and the embedding kernels against numpy "
            "and faiss-cpu (gather + mean, exact top-10, quantised indexes with recall@10, "
            "embed_texts). Peers that are not installed are skipped with a note. "
            "Checks that every output agrees with the baseline. Without --corpus it uses this "
            "Python's standard library (code), its docs and text files (prose) and the test "
            "suite's sample texts (multilingual); no download. Writes results.json and bench.png "
            "to --out. Exit status: 0 all of bytepair's outputs agree, 1 a mismatch of bytepair's "
            "(a peer's differences are printed as notes), 2 bad arguments."
        ),
    )
    bench.add_argument(
        "--corpus",
        nargs="+",
        action="extend",
        metavar="PATH",
        help="files or directories (.txt, .jsonl with a 'text' field, .parquet; .gz/.zst ok); one category per PATH",
    )
    bench.add_argument(
        "--encodings",
        nargs="+",
        default=list(DEFAULT_ENCODINGS),
        metavar="NAME",
        help="encodings to measure (default: %(default)s)",
    )
    bench.add_argument("--out", default="bench-out", metavar="DIR", help="output directory (default: %(default)s)")
    bench.add_argument("--quick", action="store_true", help="a smaller, faster run (CI smoke test)")
    bench.add_argument(
        "--only",
        nargs="+",
        metavar="WORKLOAD",
        help="run only these workloads, or groups of them: tokenizer, embeddings (see --list)",
    )
    bench.add_argument(
        "--turn-docs",
        type=_integer,
        default=16,
        metavar="N",
        help="documents each implementation encodes per turn in the throughput workloads "
        "(default: %(default)s; short turns start with another library's data in the caches, "
        "256 measures each tokenizer running by itself)",
    )
    bench.add_argument("--list", action="store_true", help="list the workloads and exit")
    bench.add_argument(
        "--no-progress",
        action="store_true",
        help="no progress display (off anyway when not a terminal)",
    )
    bench.set_defaults(func=_bench, parser=bench)

    _add_train(sub)
    _add_encode(sub)
    _add_count(sub)
    return parser


def _integer(text: str) -> int:
    """An integer argument; one too large for the native side (64 bits) is refused by argparse,
    with the usage message, instead of failing later with a traceback."""
    value = int(text)
    if abs(value) >= 1 << 63:
        raise argparse.ArgumentTypeError(f"{text} is too large")
    return value


_integer.__name__ = "int"  # argparse names the type in its messages ("invalid int value")


def _add_input_options(p: argparse.ArgumentParser, stdin: bool = False) -> None:
    p.add_argument(
        "files",
        nargs="+",
        metavar="FILES",
        help="files, directories (every file under them, sorted, folders of token shards left out) "
        "or globs: .txt (one document per file), .jsonl (one document per line, in the 'text' "
        "field), .parquet ('text' column, needs pyarrow), .gz/.zst variants"
        + ("; - reads standard input as one text document" if stdin else ""),
    )
    p.add_argument(
        "--on-error",
        choices=("fail", "skip"),
        default="fail",
        help="a bad JSON line, a missing 'text' field, invalid UTF-8 (training reads .txt files "
        "as bytes, so there it is counted, each bad byte a word of its own) or an "
        "unreadable file: stop with an error naming the file and line (fail, the default), or "
        "skip it and report how many were skipped (skip)",
    )
    p.add_argument("--field", default="text", help="the JSON field holding the text (default: text)")
    p.add_argument("--threads", type=_integer, default=None, metavar="N", help="threads (default: one per core)")
    p.add_argument(
        "--no-progress",
        action="store_true",
        help="no progress bar (it is shown only when stderr is a terminal anyway)",
    )


def _add_train(sub: Any) -> None:
    p = sub.add_parser(
        "train",
        help="train a BPE vocabulary on a corpus",
        description="Trains a byte-level BPE encoding on FILES (bytepair.train) and saves it to "
        "DIR (<name>.tiktoken and bytepair.json; load it with bytepair.load(DIR)). "
        "Exit status: 0 done, 1 an input error, 2 bad arguments, 130 interrupted.",
    )
    _add_input_options(p)
    p.add_argument(
        "--vocab-size",
        type=_integer,
        required=True,
        metavar="N",
        help="vocabulary size, special tokens included (at least 256 + their number)",
    )
    p.add_argument(
        "--pattern",
        default="cl100k_base",
        metavar="P",
        help="split pattern: a built-in encoding name or a regex (default: %(default)s)",
    )
    p.add_argument(
        "--special-tokens",
        nargs="*",
        default=None,
        metavar="TOKEN",
        help="special tokens, given the ids after the last merge in this order (e.g. '<|endoftext|>'); "
        "it takes every argument up to the next option, so put it after the input files",
    )
    p.add_argument(
        "--min-frequency",
        type=_integer,
        default=1,
        metavar="N",
        help="stop when the best pair occurs fewer than N times (default: 1)",
    )
    p.add_argument(
        "--max-token-length",
        type=_integer,
        default=None,
        metavar="BYTES",
        help="never create tokens longer than this many bytes",
    )
    p.add_argument("--name", default=None, help="the encoding's name (default: the name of DIR)")
    p.add_argument(
        "--max-memory",
        type=_integer,
        default=None,
        metavar="BYTES",
        help="spill word counts to disk beyond this many bytes",
    )
    p.add_argument(
        "-o", "--out", required=True, metavar="DIR", help="output directory (files under it are never read as input)"
    )
    p.set_defaults(func=_train, parser=p)


def _add_encode(sub: Any) -> None:
    from bytepair.corpus import DEFAULT_DOCS_PER_SHARD, MANIFEST

    p = sub.add_parser(
        "encode",
        help="encode a corpus into token shards",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=f"""\
Encodes FILES into token shards for model training: DIR/shard_00000.npy, shard_00001.npy, ...
(numpy .npy, 1-D; uint16 when every id of the encoding fits, else uint32). Each document's
tokens (encode_ordinary) are followed by the encoding's <|endoftext|> token, documents in input
order. Shard k holds documents k*D .. (k+1)*D-1, D = --docs-per-shard (default {DEFAULT_DOCS_PER_SHARD:,},
about 100M tokens for ~1k-token documents); the last shard may hold fewer. The same layout is
what bytepair.distributed.encode_to_shards writes on a cluster, byte for byte.

Resuming: every shard is written as shard_NNNNN.npy.tmp and renamed when complete, then
DIR/{MANIFEST} records the documents and tokens of each completed shard. If a run is
interrupted (Ctrl-C, kill, crash), run the same command again: it continues automatically after
the last completed shard, skipping (reading, not encoding) the documents already written, and
the shards end up byte for byte those of an uninterrupted run; a finished run is not redone.
A DIR holding shards of a different run (other files, encoding or settings) is refused unless
--overwrite is given; one whose manifest lists no shard (a run that failed, or was stopped,
before its first shard was complete) counts as empty and is used by any run.

Work: one thread reads and parses, the others encode batches of documents in parallel;
memory stays bounded by a few batches plus the largest single document.
Exit status: 0 done, 1 an input error (named with file and line), 2 bad arguments,
130 interrupted (resumable).""",
    )
    _add_input_options(p)
    p.add_argument(
        "--encoding",
        required=True,
        metavar="NAME",
        help="a built-in encoding name, or a directory written by 'bytepair train'",
    )
    p.add_argument("-o", "--out", required=True, metavar="DIR", help="output directory")
    p.add_argument(
        "--docs-per-shard",
        type=_integer,
        default=DEFAULT_DOCS_PER_SHARD,
        metavar="D",
        help="documents per shard (default: %(default)s)",
    )
    p.add_argument(
        "--eot-token",
        type=_integer,
        default=None,
        metavar="ID",
        help=(
            "the token written after every document (default: the encoding's <|endoftext|>); any id "
            "below 2**32, also one the encoding does not have (such as its n_vocab, for a trained "
            "encoding without <|endoftext|>)"
        ),
    )
    p.add_argument(
        "--overwrite", action="store_true", help="delete shards of an earlier, different run in DIR instead of refusing"
    )
    p.add_argument(
        "--no-resume", action="store_true", help="refuse to continue an earlier run in DIR (default: continue it)"
    )
    p.set_defaults(func=_encode, parser=p)


def _add_count(sub: Any) -> None:
    p = sub.add_parser(
        "count",
        help="count the tokens of a corpus",
        description="Prints '<path>\\t<count>' for each file and a final 'total <N>': the sum over "
        "its documents of len(encoding.encode_ordinary(document)). Exit status: 0 done, 1 an "
        "input error, 2 bad arguments, 130 interrupted.",
    )
    _add_input_options(p, stdin=True)
    p.add_argument(
        "--encoding",
        required=True,
        metavar="NAME",
        help="a built-in encoding name, or a directory written by 'bytepair train'",
    )
    p.set_defaults(func=_count, parser=p)


def _fail(command: str, e: BaseException) -> int:
    msg = str(e)
    if isinstance(e, OSError) and e.filename and str(e.filename) not in msg:
        msg = f"{e.filename}: {e.strerror or msg}"
    print(f"bytepair {command}: {msg}", file=sys.stderr)
    return 1


def _usage_error(args: argparse.Namespace, message: str) -> int:
    """Bad arguments: the command's usage and ``message``, as argparse reports its own errors;
    returns the exit status 2."""
    parser: argparse.ArgumentParser = args.parser
    parser.print_usage(sys.stderr)
    print(f"{parser.prog}: error: {message}", file=sys.stderr)
    return 2


def _check_encoding(args: argparse.Namespace) -> Any:
    from bytepair import registry
    from bytepair.corpus import _encoding

    name = args.encoding
    try:
        return _encoding(name)
    except (ValueError, KeyError, OSError) as e:
        if not os.path.exists(name):
            known = ", ".join(sorted(registry.list_encoding_names()))
            _usage_error(
                args, f"unknown encoding {name!r}; known: {known} (or a directory written by 'bytepair train')"
            )
        else:
            _usage_error(args, f"cannot load encoding {name}: {e}")
        return None


def _report_skipped(command: str, skipped: int, errors: Sequence[str]) -> None:
    if skipped:
        print(f"bytepair {command}: skipped {skipped} bad input(s):", file=sys.stderr)
        for m in errors[:10]:
            print(f"  {m}", file=sys.stderr)
        if skipped > len(errors[:10]):
            print(f"  ... and {skipped - len(errors[:10])} more", file=sys.stderr)


def _progress(args: argparse.Namespace) -> bool | None:
    return False if args.no_progress else None


def _positive(args: argparse.Namespace, **values: int | None) -> bool:
    """Whether every value given is at least 1; if not, reports the first as a usage error."""
    for k, v in values.items():
        if v is not None and v < 1:
            _usage_error(args, f"--{k.replace('_', '-')} must be at least 1")
            return False
    return True


def _output_dir(args: argparse.Namespace) -> list[str] | None:
    """Makes sure ``--out`` can hold the output before any work: an existing directory, or one
    created here (with its missing parents). Returns the directories created, deepest first
    (:func:`_remove_created` takes them away again if the command fails), or ``None`` after
    reporting a bad ``--out`` as a usage error."""
    out = args.out
    missing: list[str] = []
    p = out.rstrip(os.sep + (os.altsep or "")) or out  # "new/" is "new"
    while not os.path.lexists(p):
        missing.append(p)
        parent = os.path.dirname(p)
        if not parent or parent == p:
            p = ""
            break
        p = parent
    if p and not os.path.isdir(p):
        what = f"--out {out}: {p}" if missing else f"--out {out}"
        _usage_error(args, f"{what} is not a directory")
        return None
    created: list[str] = []
    try:
        for d in reversed(missing):
            if not os.path.isdir(d):  # made in the meantime, by another command
                os.mkdir(d)
                created.insert(0, d)
    except OSError as e:
        _remove_created(created)
        _usage_error(args, f"cannot create the output directory {out}: {e.strerror or e}")
        return None
    if not os.access(out, os.W_OK | os.X_OK):
        _usage_error(args, f"--out {out}: the directory is not writable")
        return None
    return created


def _remove_created(created: Sequence[str]) -> None:
    """Removes the directories :func:`_output_dir` created, deepest first, as long as they are
    empty (a failed command leaves no empty output directory behind)."""
    for d in created:
        try:
            os.rmdir(d)
        except OSError:
            return


class _OutputError(Exception):
    """Standard output cannot take the results (closed, a full disk): exit status 1."""


@contextlib.contextmanager
def _output_errors() -> Iterator[None]:
    """A write error on stdout other than a reader gone (a full disk) as an :class:`_OutputError`:
    the results would be lost."""
    try:
        yield
    except BrokenPipeError:
        raise
    except OSError as e:
        raise _OutputError(f"standard output: {e.strerror or e}") from e


def _print_out(line: str) -> None:
    """Prints ``line`` to stdout; a file name that is not UTF-8 (surrogates, from os.fsdecode)
    is written as the bytes it was read from. A closed stdout (``>&-``) is an error: the results
    would be lost."""
    if sys.stdout is None:
        raise _OutputError("standard output is closed")
    with _output_errors():
        _print_line(line)


def _print_line(line: str) -> None:
    try:
        print(line)
    except UnicodeEncodeError:
        out = sys.stdout
        buffer = getattr(out, "buffer", None)
        if buffer is None:  # a text-only stream: escape what it cannot take
            print(line.encode(out.encoding or "utf-8", "backslashreplace").decode(out.encoding or "utf-8"))
            return
        data = (line + "\n").encode(out.encoding or "utf-8", "surrogateescape")
        out.flush()
        buffer.write(data)
        buffer.flush()


def _encode(args: argparse.Namespace) -> int:
    from bytepair import corpus

    if not _positive(args, docs_per_shard=args.docs_per_shard, threads=args.threads):
        return 2
    if not args.out:
        return _usage_error(args, "--out must name a directory")
    enc = _check_encoding(args)
    if enc is None:
        return 2
    try:
        corpus._eot(enc, args.eot_token)
    except ValueError as e:
        return _usage_error(args, str(e))
    return _with_output_dir(args, lambda: _encode_into(args, enc))


def _with_output_dir(args: argparse.Namespace, run: Callable[[], int]) -> int:
    """Checks (and makes) ``--out`` before ``run`` does any work; a directory made here is
    removed again when ``run`` fails and leaves it empty."""
    created = _output_dir(args)
    if created is None:
        return 2
    status = 1
    try:
        status = run()
    finally:
        if status != 0:
            _remove_created(created)
    return status


def _warn_repeated(command: str, files: Sequence[str]) -> None:
    """Says which input files the arguments name more than once (a folder and a file in it, two
    globs): they are read as often as they are named."""
    times: dict[str, tuple[str, int]] = {}
    for f in files:
        key = os.path.realpath(f)
        name, n = times.get(key, (f, 0))
        times[key] = (name, n + 1)
    repeated = [f"{name} ({n} times)" for name, n in times.values() if n > 1]
    if not repeated:
        return
    shown = ", ".join(repeated[:5]) + (f" and {len(repeated) - 5} more" if len(repeated) > 5 else "")
    print(f"bytepair {command}: note: files named more than once are read each time: {shown}", file=sys.stderr)


def _encode_into(args: argparse.Namespace, enc: Any) -> int:
    from bytepair import corpus

    # Expanded once: the files (each names itself) go to encode_to_shards as they are.
    try:
        files = corpus._expand(args.files, output=args.out)
    except (ValueError, OSError) as e:
        return _fail("encode", e)
    _warn_repeated("encode", files)
    try:
        m = corpus.encode_to_shards(
            files,
            encoding=enc,
            out=args.out,
            docs_per_shard=args.docs_per_shard,
            eot_token=args.eot_token,
            on_error=args.on_error,
            field=args.field,
            num_threads=args.threads,
            progress=_progress(args),
            resume=not args.no_resume,
            overwrite=args.overwrite,
        )
    except corpus.ShardsError as e:
        print(f"bytepair encode: {e} (--overwrite)", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("bytepair encode: interrupted; run the same command again to resume", file=sys.stderr)
        return 130
    except (ValueError, OSError, ImportError) as e:
        return _fail("encode", e)
    if "skipped" not in m:
        print(f"bytepair encode: {args.out} already holds this run, complete", file=sys.stderr)
    _report_skipped("encode", m.get("skipped", 0), m.get("errors", []))
    print(
        f"{m['documents']} documents, {m['tokens']} tokens in {len(m['shards'])} shard(s) ({m['dtype']}) in {args.out}",
        file=sys.stderr,
    )
    return 0


def _count(args: argparse.Namespace) -> int:
    from bytepair import corpus

    if not _positive(args, threads=args.threads):
        return 2
    enc = _check_encoding(args)
    if enc is None:
        return 2
    errors: list[str] = []
    files = [f for f in args.files if f != "-"]
    try:
        counts = (
            corpus.count_files(
                files,
                encoding=enc,
                on_error=args.on_error,
                field=args.field,
                num_threads=args.threads,
                progress=_progress(args),
                errors=errors,
            )
            if files
            else {}
        )
        if "-" in args.files:
            n, error = _count_stdin(enc)
            if error is not None:
                if args.on_error == "fail":
                    raise ValueError(error)
                errors.append(error)
            # Where "-" was named first among the inputs, as files named twice are listed: after
            # the files that the inputs before it name (directories and globs expanded).
            before = args.files[: args.files.index("-")]
            at = len(corpus._unique(corpus._expand(before))) if before else 0
            items = list(counts.items())
            counts = dict(items[:at] + [("-", n)] + items[at:])
    except (ValueError, OSError, ImportError) as e:
        return _fail("count", e)
    for path, n in counts.items():
        _print_out(f"{path}\t{n}")
    _print_out(f"total {sum(counts.values())}")
    _report_skipped("count", len(errors), errors)
    return 0


def _count_stdin(enc: Any) -> tuple[int, str | None]:
    """``-`` among the inputs: standard input read to its end as one text document, as a
    ``.txt`` file is. Returns its count (0 when it is not UTF-8) and the error, if any."""
    data = sys.stdin.buffer.read() if sys.stdin is not None else b""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        return 0, f"-: invalid UTF-8 at byte {e.start}"
    return enc.count(text, disallowed_special=()), None


def _train(args: argparse.Namespace) -> int:
    from bytepair.train import _check_train_call

    if not _positive(
        args,
        threads=args.threads,
        max_token_length=args.max_token_length,
        max_memory=args.max_memory,
    ):
        return 2
    if not args.out:
        return _usage_error(args, "--out must name a directory")
    # `--special-tokens` takes every argument up to the next option: input files listed after it
    # would silently become special tokens.
    from bytepair.train import _looks_like_file_name

    for tok in args.special_tokens or ():
        if os.path.exists(tok) or _looks_like_file_name(tok):
            return _usage_error(
                args,
                f"--special-tokens took {tok!r}, which looks like an input file; "
                "put --special-tokens after the input files (or end its list with another option)",
            )
    name = args.name or (Path(args.out).resolve().name or "trained")
    options = dict(
        vocab_size=args.vocab_size,
        pattern=args.pattern,
        special_tokens=args.special_tokens,
        min_frequency=args.min_frequency,
        max_token_length=args.max_token_length,
        num_threads=args.threads,
        name=name,
        max_memory=args.max_memory,
        on_error=args.on_error,
        field=args.field,
    )
    # Bad options are reported before any input is read; errors after that are the inputs'.
    try:
        _check_train_call(**options)
    except (ValueError, TypeError) as e:
        return _usage_error(args, str(e))
    # The output directory is checked (and made) before the training, which may take hours.
    return _with_output_dir(args, lambda: _train_into(args, options))


def _train_into(args: argparse.Namespace, options: dict[str, Any]) -> int:
    import bytepair
    from bytepair.corpus import _expand

    try:
        files = _expand(args.files, output=args.out)
    except (ValueError, OSError) as e:
        return _fail("train", e)
    _warn_repeated("train", files)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                enc = bytepair.train([Path(f) for f in files], progress=_progress(args), **options)
            finally:
                # The skipped inputs are named also when nothing was left to train on.
                for w in caught or ():
                    print(f"bytepair train: {w.message}", file=sys.stderr)
    except (ValueError, TypeError) as e:
        print(f"bytepair train: {e}", file=sys.stderr)
        return 1
    except (OSError, ImportError) as e:
        return _fail("train", e)
    try:
        enc.save(args.out)
    except (OSError, ValueError) as e:
        # A write error (a full disk) names no file: the message names the directory.
        msg = str(e)
        if isinstance(e, OSError) and e.strerror:
            msg = f"{e.filename}: {e.strerror}" if e.filename else e.strerror
        print(f"bytepair train: cannot save the encoding to {args.out}: {msg}", file=sys.stderr)
        return 1
    print(
        f"trained {enc.name!r}: {enc.n_vocab} tokens ({len(enc._special_tokens)} special), saved to {args.out}",
        file=sys.stderr,
    )
    return 0


def _bench(args: argparse.Namespace) -> int:
    from bytepair import bench, registry

    if args.list:
        for name, w in bench.workloads().items():
            print(f"{name:<16} {w.description} [baseline: {w.baseline}]")
        for group, members in bench.WORKLOAD_GROUPS.items():
            print(f"{group:<16} group: {' '.join(members)}")
        return 0
    known = set(registry.list_encoding_names())
    unknown = [e for e in args.encodings if e not in known]
    if unknown:
        return _usage_error(args, f"unknown encoding(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
    if args.turn_docs < 1:
        return _usage_error(args, f"--turn-docs must be at least 1, got {args.turn_docs}")
    if args.out and os.path.exists(args.out) and not os.path.isdir(args.out):
        return _usage_error(args, f"--out {args.out} is a file, not a directory")
    if args.only:
        missing = [w for w in bench.expand_workloads(args.only) if w not in bench.workloads()]
        if missing:
            return _usage_error(
                args,
                f"unknown workload(s) {', '.join(missing)}; known: "
                f"{', '.join([*bench.workloads(), *bench.WORKLOAD_GROUPS])}",
            )
    try:
        return bench.run(
            corpus_paths=args.corpus,
            encodings=args.encodings,
            out=args.out,
            quick=args.quick,
            only=args.only,
            progress=False if args.no_progress else None,
            turn_docs=args.turn_docs,
        )
    except bench.CorpusError as e:
        return _usage_error(args, str(e))
    except ImportError as e:
        print(
            f"bytepair bench: {e}; install the bench extra: pip install 'bytepair[bench]'",
            file=sys.stderr,
        )
        return 2


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the ``bytepair`` command; returns the exit status. Output cut short by its reader
    (``bytepair count ... | head``) ends the command quietly with 141 (128 + SIGPIPE, the status
    of a Unix tool the signal ends)."""
    try:
        try:
            return _main(argv)
        finally:
            # Output still buffered is written now, so a reader gone early is found here and not
            # reported by the interpreter at exit.
            if sys.stdout is not None:
                with _output_errors():
                    sys.stdout.flush()
    except BrokenPipeError:
        _stdout_to_devnull()
        return 141
    except _OutputError as e:
        print(f"bytepair: cannot write the results: {e}", file=sys.stderr)
        _stdout_to_devnull()
        return 1


def _stdout_to_devnull() -> None:
    """Points stdout (the file descriptor) at the null device: what is left in its buffer, flushed
    at exit, then goes nowhere instead of raising BrokenPipeError again."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
    except OSError:
        return
    try:
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):  # no file descriptor (a replaced sys.stdout)
        pass
    finally:
        os.close(devnull)


def _main(argv: Sequence[str] | None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra:
        # Reported with the command's own usage (`bytepair encode --bogus` shows encode's).
        getattr(args, "parser", parser).error(f"unrecognized arguments: {' '.join(extra)}")
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args))
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
