"""The tokenizer half of the public contract (``../shared/API.md``).

Behaviour is checked against tiktoken 0.14 (the reference) wherever tiktoken has the same entry
point, and against hand-checked facts otherwise (official SHA-256 sums, hand-built rank files).
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import http.server
import os
import pickle
import socket
import subprocess
import gc
import sys
import textwrap
import threading
import time
from pathlib import Path

import bytepair
import numpy as np
import pytest
from conftest import ENCODING_NAMES, FULL, RANK_FILE_OF, RANK_FILES, VOCAB_DIR, replace_surrogates
from forked import in_forked_child

# ============================================================================ helpers


def outcome(fn, *args, **kwargs):
    """("ok", result) or ("raise", exception type); numpy results become lists."""
    try:
        r = fn(*args, **kwargs)
    except BaseException as e:
        if type(e).__name__ == "PanicException":
            raise
        return ("raise", type(e))
    if isinstance(r, np.ndarray):
        r = r.tolist()
    return ("ok", r)


def tiny_ranks() -> dict[bytes, int]:
    ranks = {bytes([i]): i for i in range(256)}
    for tok in (b"ab", b"cd", b"abcd", b" a", b"  "):
        ranks[tok] = len(ranks)
    return ranks


def tiny_kwargs(name: str = "tiny") -> dict:
    return {
        "name": name,
        "pat_str": r"""'s|'t| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+""",
        "mergeable_ranks": tiny_ranks(),
        "special_tokens": {"<|eot|>": 261, "<|x|>": 262},
    }


# ============================================================================ module surface


def _public_names(module) -> set[str]:
    """Names tiktoken's module defines itself (functions, classes, tables), not its imports."""
    out = set()
    for name, obj in vars(module).items():
        if name.startswith("__") or name == "_tiktoken":
            continue
        if isinstance(obj, (dict, str, type(None))) or getattr(obj, "__module__", None) == module.__name__:
            out.add(name)
    return out


@pytest.mark.parametrize("sub", ["", "core", "load", "registry", "model"])
def test_module_has_tiktokens_names(sub, tiktoken):
    import importlib

    ref = importlib.import_module("tiktoken" + ("." + sub if sub else ""))
    mod = importlib.import_module("bytepair" + ("." + sub if sub else ""))
    missing = sorted(n for n in _public_names(ref) if not hasattr(mod, n))
    assert not missing, f"bytepair{'.' + sub if sub else ''} lacks {missing}"


def test_contract_names():
    for name in [
        "get_encoding",
        "encoding_for_model",
        "encoding_name_for_model",
        "list_encoding_names",
        "Encoding",
        "load_tiktoken_bpe",
        "dump_tiktoken_bpe",
        "core",
        "load",
        "registry",
        "model",
    ]:
        assert hasattr(bytepair, name), name
    assert isinstance(bytepair.__version__, str) and bytepair.__version__[0].isdigit()
    from bytepair.core import Encoding  # noqa: F401
    from bytepair.load import dump_tiktoken_bpe, load_tiktoken_bpe  # noqa: F401
    from bytepair.model import MODEL_PREFIX_TO_ENCODING, MODEL_TO_ENCODING  # noqa: F401
    from bytepair.registry import ENCODING_CONSTRUCTORS, ENCODINGS  # noqa: F401


def test_encoding_methods_exist():
    enc = bytepair.get_encoding("cl100k_base")
    for name in [
        "encode",
        "encode_ordinary",
        "encode_to_numpy",
        "encode_batch",
        "encode_ordinary_batch",
        "encode_with_unstable",
        "encode_single_token",
        "decode",
        "decode_bytes",
        "decode_single_token_bytes",
        "decode_tokens_bytes",
        "decode_with_offsets",
        "decode_batch",
        "decode_bytes_batch",
        "token_byte_values",
        "is_special_token",
        "count",
        "count_batch",
        "_encode_single_piece",
        "_encode_only_native_bpe",
        "_encode_bytes",
    ]:
        assert callable(getattr(enc, name)), name
    for name in [
        "name",
        "n_vocab",
        "max_token_value",
        "eot_token",
        "special_tokens_set",
        "_pat_str",
        "_mergeable_ranks",
        "_special_tokens",
    ]:
        assert hasattr(enc, name), name


def test_list_encoding_names():
    names = bytepair.list_encoding_names()
    assert names[: len(ENCODING_NAMES)] == ENCODING_NAMES


def test_bytepair_load_is_module_and_callable(tmp_path):
    import bytepair.load as load_mod
    from bytepair.load import load_tiktoken_bpe

    assert bytepair.load is load_mod
    assert load_tiktoken_bpe is bytepair.load_tiktoken_bpe
    assert callable(bytepair.load)


def test_save_then_bytepair_load(tmp_path):
    enc = bytepair.Encoding(**tiny_kwargs())
    try:
        import importlib

        importlib.import_module("bytepair.train")  # Encoding.save / bytepair.load live there
    except Exception as e:  # noqa: BLE001
        pytest.skip(f"training half not available: {e!r}")
    enc.save(str(tmp_path / "saved"))
    back = bytepair.load(str(tmp_path / "saved"))
    assert back.encode("abcd ab<|eot|>", allowed_special="all") == enc.encode("abcd ab<|eot|>", allowed_special="all")


# ============================================================================ attributes vs tiktoken


def test_attributes_match_tiktoken(pair, encoding_name):
    bp, tt = pair
    assert bp.name == encoding_name
    for attr in ("n_vocab", "max_token_value", "eot_token", "special_tokens_set", "_pat_str", "_special_tokens"):
        assert getattr(bp, attr) == getattr(tt, attr), attr
    assert list(bp._special_tokens.items()) == list(tt._special_tokens.items())
    assert bp._mergeable_ranks == tt._mergeable_ranks
    for tok in list(tt._special_tokens.values())[:50] + [0, 1, 255, 50255, tt.max_token_value]:
        assert bp.is_special_token(tok) == tt.is_special_token(tok)


def test_repr():
    for name in ENCODING_NAMES:
        assert repr(bytepair.get_encoding(name)) == f"<Encoding {name!r}>"
    assert repr(bytepair.Encoding(**tiny_kwargs("mine"))) == "<Encoding 'mine'>"


def test_model_tables_match_tiktoken(tiktoken):
    import bytepair.model as bm
    import tiktoken.model as tm

    assert bm.MODEL_TO_ENCODING == tm.MODEL_TO_ENCODING
    assert bm.MODEL_PREFIX_TO_ENCODING == tm.MODEL_PREFIX_TO_ENCODING
    models = list(tm.MODEL_TO_ENCODING) + [p + "2099-01-01" for p in tm.MODEL_PREFIX_TO_ENCODING]
    for m in models + ["gpt-4o", "gpt-4-0613", "gpt-3.5-turbo-16k", "ft:gpt-4o:org::id"]:
        assert outcome(bytepair.encoding_name_for_model, m) == outcome(tiktoken.encoding_name_for_model, m), m
        if m in tm.MODEL_TO_ENCODING:  # (tiktoken's gpt2 would need a download: compare names)
            assert bytepair.encoding_for_model(m).name == tm.MODEL_TO_ENCODING[m]
    for bad in ["not-a-model", "", "gpt", "GPT-4"]:
        assert outcome(bytepair.encoding_name_for_model, bad) == ("raise", KeyError)
        assert outcome(bytepair.encoding_for_model, bad) == ("raise", KeyError)


# ============================================================================ bad input

BAD_CALLS = [
    ("encode", (123,), {}),
    ("encode", (None,), {}),
    ("encode", (b"abc",), {}),
    ("encode_ordinary", (123,), {}),
    ("encode_ordinary", (b"abc",), {}),
    ("encode_to_numpy", (123,), {}),
    ("encode_to_numpy", (b"x",), {}),
    ("encode_batch", ([1, 2],), {}),
    ("encode_batch", ([b"a"],), {}),
    ("encode_ordinary_batch", ([b"a"],), {}),
    ("encode_ordinary_batch", ([None],), {}),
    ("encode_with_unstable", (1,), {}),
    ("decode", ("abc",), {}),
    ("decode", ([1.5],), {}),
    ("decode", ([-1],), {}),
    ("decode", ([2**32],), {}),
    ("decode", ([2**64],), {}),
    ("decode", ([10**7],), {}),
    ("decode_bytes", ([-1],), {}),
    ("decode_bytes", ([10**7],), {}),
    ("decode_single_token_bytes", (-5,), {}),
    ("decode_single_token_bytes", ("a",), {}),
    ("decode_single_token_bytes", (10**7,), {}),
    ("decode_tokens_bytes", ([1, 10**7],), {}),
    ("decode_tokens_bytes", ([1, -1],), {}),
    ("decode_with_offsets", ([9468, 239],), {}),
    ("decode_with_offsets", ([10**7],), {}),
    ("decode_batch", ([[1], [-1]],), {}),
    ("decode_batch", ([[1], [10**7]],), {}),
    ("decode_bytes_batch", ([[1], [10**7]],), {}),
    ("decode", ([9468, 239],), {"errors": "strict"}),
    # An `errors` that is not a str: a TypeError from bytes.decode, whatever its == does.
    ("decode", ([1, 2],), {"errors": 1}),
    ("decode", ([1, 2],), {"errors": np.array([1, 2])}),
    ("decode_batch", ([[1, 2]],), {"errors": np.array([1, 2])}),
    ("encode_single_token", (5,), {}),
    ("encode_single_token", ("",), {}),
    ("encode_single_token", ("hello world",), {}),
    ("is_special_token", ("x",), {}),
    ("encode", ("x",), {"allowed_special": "al"}),
    ("encode", ("<|endoftext|>",), {}),
    ("encode", ("a<|endoftext|>",), {"allowed_special": set()}),
    ("encode", ("<|endoftext|>",), {"allowed_special": {"<|endoftext|>"}, "disallowed_special": {"<|endoftext|>"}}),
    ("encode", (), {}),
    ("encode", ("x", "y"), {}),
    ("encode_batch", (["ok", "<|endoftext|>"],), {}),
    ("encode_to_numpy", ("<|endoftext|>",), {}),
    ("encode_with_unstable", ("<|endoftext|>",), {}),
    # Special-token sets hold str; tiktoken still looks for disallowed tokens first.
    ("encode", ("hi",), {"allowed_special": {1}}),
    ("encode", ("<|endoftext|>",), {"allowed_special": {1}}),
    ("encode", ("hi",), {"allowed_special": {"<|endoftext|>", 1}}),
    ("encode", ("hi",), {"disallowed_special": {1}}),
    ("encode_batch", (["hi"],), {"allowed_special": {1}}),
    ("encode_batch", ([],), {"allowed_special": {1}}),
    ("encode_single_token", (bytearray(b"hello"),), {}),
    ("encode_single_token", (memoryview(b"hello"),), {}),
    # Thread counts go to a ThreadPoolExecutor in tiktoken: None, floats and huge ints work.
    ("encode_batch", (["hi"],), {"num_threads": None}),
    ("encode_batch", (["hi"],), {"num_threads": 2.0}),
    ("encode_batch", (["hi"],), {"num_threads": 0.5}),
    ("encode_batch", (["hi"],), {"num_threads": 2**64}),
    ("encode_ordinary_batch", (["hi"],), {"num_threads": float("inf")}),
    ("decode_batch", ([[1]],), {"num_threads": None}),
    ("decode_bytes_batch", ([[1]],), {"num_threads": 3.5}),
    ("encode_batch", (["hi"],), {"num_threads": "2"}),
    ("encode_batch", (["hi"],), {"num_threads": -1.5}),
]


@pytest.mark.parametrize("method,args,kwargs", BAD_CALLS, ids=[f"{m}{a!r}{k or ''}"[:60] for m, a, k in BAD_CALLS])
def test_bad_input_same_exception_as_tiktoken(method, args, kwargs, bp_encodings, tt_encodings):
    for name in ("cl100k_base", "o200k_harmony"):
        bp, tt = bp_encodings[name], tt_encodings[name]
        exp = outcome(getattr(tt, method), *args, **kwargs)
        assert outcome(getattr(bp, method), *args, **kwargs) == exp, name


def test_count_refuses_what_encode_refuses(bp_encodings):
    enc = bp_encodings["cl100k_base"]
    for kwargs in ({"allowed_special": {1}}, {"disallowed_special": {1}}, {"allowed_special": "al"}):
        with pytest.raises(TypeError):
            enc.encode("hi", **kwargs)
        with pytest.raises(TypeError):
            enc.count("hi", **kwargs)
        with pytest.raises(TypeError):
            enc.count_batch(["hi"], **kwargs)
    with pytest.raises(ValueError):
        enc.count("<|endoftext|>", allowed_special={1})


def test_decode_error_kinds(pair):
    bp, tt = pair
    for ids in ([tt.n_vocab], [tt.n_vocab + 10**6], [2**32 - 1], [-1], [-(2**40)], [2**32], [2**70]):
        exp = outcome(tt.decode, ids)
        assert exp[0] == "raise"
        assert outcome(bp.decode, ids) == exp, ids
        assert outcome(bp.decode_single_token_bytes, ids[0]) == outcome(tt.decode_single_token_bytes, ids[0]), ids


def test_cl100k_holes(bp_encodings):
    enc = bp_encodings["cl100k_base"]
    for i in [100256] + list(range(100261, 100276)):
        with pytest.raises(KeyError):
            enc.decode([i])
        with pytest.raises(KeyError):
            enc.decode_single_token_bytes(i)
        with pytest.raises(KeyError):
            enc.decode_bytes([1, i, 2])
    assert enc.decode([100257, 100276]) == "<|endoftext|><|endofprompt|>"


def test_harmony_duplicate_id(bp_encodings, tt_encodings):
    enc = bp_encodings["o200k_harmony"]
    assert enc.decode([200018]) == "<|endofprompt|>" == tt_encodings["o200k_harmony"].decode([200018])
    assert enc.encode_single_token("<|reserved_200018|>") == 200018
    assert enc.encode_single_token("<|endofprompt|>") == 200018
    assert enc.encode("<|reserved_200018|><|endofprompt|>", allowed_special="all") == [200018, 200018]
    assert enc.n_vocab == 201088


def test_unknown_encoding():
    with pytest.raises(ValueError, match="nope"):
        bytepair.get_encoding("nope")
    with pytest.raises(ValueError):
        bytepair.get_encoding(123)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        bytepair.get_encoding("")


def test_encoding_constructor_checks(tiktoken):
    """explicit_n_vocab is checked the way tiktoken checks it (263 is right; others assert)."""
    kw = tiny_kwargs()
    for n_vocab in (263, 100, 264, None, 0):
        assert (
            outcome(bytepair.Encoding, **kw, explicit_n_vocab=n_vocab)[0]
            == outcome(tiktoken.Encoding, **kw, explicit_n_vocab=n_vocab)[0]
        ), n_vocab
        exp = outcome(tiktoken.Encoding, **kw, explicit_n_vocab=n_vocab)
        if exp[0] == "raise":
            assert outcome(bytepair.Encoding, **kw, explicit_n_vocab=n_vocab) == exp, n_vocab


def test_encoding_constructor_special_key_types(tiktoken):
    kw = tiny_kwargs()
    for key in ("\ud800", 5, b"<|b|>"):
        specials = kw["special_tokens"] | {key: 300}
        exp = outcome(tiktoken.Encoding, **kw | {"special_tokens": specials})
        assert exp[0] == "raise", key
        assert outcome(bytepair.Encoding, **kw | {"special_tokens": specials}) == exp, key


def test_custom_encoding_matches_tiktoken(tiktoken):
    kw = tiny_kwargs()
    bp, tt = bytepair.Encoding(**kw), tiktoken.Encoding(**kw)
    for text in ["abcd ab cd", "'s 123 !!", "a<|eot|>b<|x|>", "  a  b", "\u00e9t\u00e9 \U0001f600"]:
        assert bp.encode(text, allowed_special="all") == tt.encode(text, allowed_special="all")
        assert bp.encode_ordinary(text) == tt.encode_ordinary(text)
    assert bp.n_vocab == tt.n_vocab == 263
    assert bp.token_byte_values() == tt.token_byte_values()


# ============================================================================ misuse that tiktoken answers oddly
# (found by these tests, fixed in 9389667: bytepair now matches tiktoken here too)


@pytest.mark.parametrize("allowed", [["<|endoftext|>"], None])
def test_allowed_special_must_be_a_set(allowed, bp_encodings, tt_encodings):
    bp, tt = bp_encodings["cl100k_base"], tt_encodings["cl100k_base"]
    assert outcome(tt.encode, "x", allowed_special=allowed) == ("raise", TypeError)
    assert outcome(bp.encode, "x", allowed_special=allowed) == ("raise", TypeError)


def test_disallowed_special_other_string(bp_encodings, tt_encodings):
    bp, tt = bp_encodings["cl100k_base"], tt_encodings["cl100k_base"]
    for text in ("x", "one"):
        assert outcome(bp.encode, text, disallowed_special="none") == outcome(
            tt.encode, text, disallowed_special="none"
        )


def test_batch_disallowed_special_from_an_iterator(bp_encodings, tt_encodings):
    # tiktoken takes the iterator once for the whole batch; it must not be used up by the
    # check of the first text (which left the later checks with nothing to find).
    bp, tt = bp_encodings["cl100k_base"], tt_encodings["cl100k_base"]
    texts = ["<|endoftext|> x", "hello world", "a <|endoftext|>"]
    for bad in (None, 0, 1.5):  # tiktoken makes a frozenset of it for the batch
        assert outcome(bp.encode_batch, texts, disallowed_special=bad) == ("raise", TypeError)
        assert outcome(tt.encode_batch, texts, disallowed_special=bad) == ("raise", TypeError)
    for names in (["<|endoftext|>", "x"], ["hello"], ["<|endoftext|>"], [], "none", ()):
        for method in ("encode_batch", "count_batch"):
            got = outcome(getattr(bp, method), texts, disallowed_special=iter(names))
            want = outcome(tt.encode_batch, texts, disallowed_special=iter(names))
            if method == "count_batch" and want[0] == "ok":
                want = ("ok", [len(t) for t in want[1]])
            assert got == want, (method, names)


@pytest.mark.parametrize(
    ("special", "text"),
    [("\U0001f642", "x \ud83d\ude42 y"), ("<\ufffd>", "<\ud800>"), ("\U0001f642", "\U0001f642 \udc00")],
)
def test_disallowed_specials_are_looked_for_before_surrogates_are_replaced(special, text, tiktoken):
    # tiktoken searches the text as given (where a pair of lone surrogates is not yet the
    # character it spells), then replaces lone surrogates and encodes.
    base = {bytes([i]): i for i in range(256)}
    bp, tt = (
        lib.Encoding("s", pat_str=r"\S+|\s+", mergeable_ranks=base, special_tokens={special: 300})
        for lib in (bytepair, tiktoken)
    )
    for kwargs in ({}, {"disallowed_special": {special}}, {"allowed_special": {special}}, {"disallowed_special": ()}):
        want = outcome(tt.encode, text, **kwargs)
        assert outcome(bp.encode, text, **kwargs) == want, kwargs
        assert outcome(bp.encode_batch, [text, text], **kwargs) == outcome(tt.encode_batch, [text, text], **kwargs)
        if want[0] == "ok":
            assert bp.count(text, **kwargs) == len(want[1])
            assert bp.encode_to_numpy(text, **kwargs).tolist() == want[1]


def test_encode_ordinary_batch_of_a_str(bp_encodings, tt_encodings):
    bp, tt = bp_encodings["cl100k_base"], tt_encodings["cl100k_base"]
    assert outcome(bp.encode_ordinary_batch, "abc") == outcome(tt.encode_ordinary_batch, "abc")


def test_surrogates_everywhere(pair):
    """tiktoken's encode/encode_ordinary replace lone surrogates; its encode_to_numpy and
    encode_with_unstable raise UnicodeEncodeError instead. bytepair replaces them everywhere (a
    documented superset): its results must equal tiktoken's encode of the same text."""
    bp, tt = pair
    text = "a\ud800b \ud83d\ude00 \udfff"
    exp = tt.encode(text)
    assert bp.encode(text) == exp
    assert bp.encode_to_numpy(text).tolist() == exp
    assert bp.count(text) == len(exp)
    fixed = replace_surrogates(text)
    stable, comps = bp.encode_with_unstable(text)
    t_stable, t_comps = tt.encode_with_unstable(fixed)
    assert (stable, {tuple(c) for c in comps}) == (t_stable, {tuple(c) for c in t_comps})


# ============================================================================ argument types


def _token_containers():
    import array

    ids = [15339, 1917, 0, 100257]
    return {
        "list": lambda: list(ids),
        "tuple": lambda: tuple(ids),
        "range": lambda: range(10, 20),
        "iterator": lambda: iter(ids),
        "generator": lambda: (i for i in ids),
        "np.uint32": lambda: np.array(ids, dtype=np.uint32),
        "np.int64": lambda: np.array(ids, dtype=np.int64),
        "np.int32": lambda: np.array(ids, dtype=np.int32),
        "np.uint64": lambda: np.array(ids, dtype=np.uint64),
        "np.float64": lambda: np.array(ids, dtype=np.float64),
        "array.array": lambda: array.array("I", ids),
        "np.int64[::2]": lambda: np.array(ids * 2, dtype=np.int64)[::2],
        "np.int64 2-D": lambda: np.array([ids]),
        "list of np.int64": lambda: [np.int64(i) for i in ids],
        "bytes": lambda: b"ab",
    }


@pytest.mark.parametrize("kind", sorted(_token_containers()))
def test_decode_argument_types(kind, bp_encodings, tt_encodings):
    bp, tt = bp_encodings["cl100k_base"], tt_encodings["cl100k_base"]
    make = _token_containers()[kind]
    for method in ("decode", "decode_bytes", "decode_tokens_bytes", "decode_with_offsets"):
        assert outcome(getattr(bp, method), make()) == outcome(getattr(tt, method), make()), method
    for method in ("decode_batch", "decode_bytes_batch"):
        assert outcome(getattr(bp, method), [make(), make()]) == outcome(getattr(tt, method), [make(), make()]), method


@pytest.mark.parametrize("kind", ["list", "tuple", "iterator", "generator", "np.str_", "str subclass", "dict keys"])
def test_encode_batch_argument_types(kind, bp_encodings, tt_encodings):
    bp, tt = bp_encodings["cl100k_base"], tt_encodings["cl100k_base"]

    class S(str):
        pass

    texts = ["hello world", "b c", ""]
    make = {
        "list": lambda: list(texts),
        "tuple": lambda: tuple(texts),
        "iterator": lambda: iter(texts),
        "generator": lambda: (t for t in texts),
        "np.str_": lambda: [np.str_(t) for t in texts],
        "str subclass": lambda: [S(t) for t in texts],
        "dict keys": lambda: dict.fromkeys(texts).keys(),
    }[kind]
    for method in ("encode_batch", "encode_ordinary_batch"):
        assert outcome(getattr(bp, method), make()) == outcome(getattr(tt, method), make()), method
    if kind in ("np.str_", "str subclass"):
        for t in make():
            assert outcome(bp.encode, t) == outcome(tt.encode, t)
            assert outcome(bp.encode_ordinary, t) == outcome(tt.encode_ordinary, t)
            assert outcome(bp.encode_to_numpy, t) == outcome(tt.encode_to_numpy, t)


def test_encode_with_unstable_on_a_huge_tail_raises_memoryerror_at_once(bp_encodings):
    """A million trailing spaces: every completion would hold the whole tail, over 340 million
    tokens in all (tiktoken would take hours); bytepair says so with MemoryError at once."""
    enc = bp_encodings["cl100k_base"]
    t0 = time.perf_counter()
    with pytest.raises(MemoryError, match="unstable"):
        enc.encode_with_unstable(" " * 1_000_000)
    assert time.perf_counter() - t0 < 5
    stable, completions = enc.encode_with_unstable("hello wor")
    assert stable == [15339] and [289, 371] in completions


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
def test_sigint_stops_encode_with_unstable(bp_encodings):
    """A long unstable tail (tens of thousands of spaces: seconds of work on a short text) stops
    on Ctrl-C."""
    import signal

    enc = bp_encodings["cl100k_base"]
    t0 = time.perf_counter()
    enc.encode_with_unstable(" " * 2000)
    per_byte = (time.perf_counter() - t0) / 2000
    n = min(max(2000, int(4.0 / max(per_byte, 1e-9))), 90_000)  # about 4 s of work
    timer = threading.Timer(0.3, lambda: os.kill(os.getpid(), signal.SIGINT))
    t0 = time.perf_counter()
    timer.start()
    try:
        with pytest.raises(KeyboardInterrupt):
            enc.encode_with_unstable(" " * n)
            time.sleep(5)
    finally:
        timer.cancel()
    elapsed = time.perf_counter() - t0
    assert elapsed < 1.5, f"KeyboardInterrupt after {elapsed:.2f} s (about {n * per_byte:.1f} s of work)"


@pytest.mark.parametrize("num_threads", [0, -1, 1, 3])
def test_batch_thread_counts_like_tiktoken(num_threads, bp_encodings, tt_encodings):
    """tiktoken's thread pools refuse fewer than one thread with ValueError; any count above
    gives the same results."""
    bp, tt = bp_encodings["cl100k_base"], tt_encodings["cl100k_base"]
    texts = ["hello world", "<|endoftext|> x", ""]
    calls = {
        "encode_ordinary_batch": lambda e: e.encode_ordinary_batch(texts, num_threads=num_threads),
        "encode_batch": lambda e: e.encode_batch(texts, num_threads=num_threads, allowed_special="all"),
        "decode_batch": lambda e: e.decode_batch([[15339], [1917]], num_threads=num_threads),
        "decode_bytes_batch": lambda e: e.decode_bytes_batch([[15339], [1917]], num_threads=num_threads),
    }
    for name, call in calls.items():
        assert outcome(call, bp) == outcome(call, tt), name
    if num_threads < 1:
        with pytest.raises(ValueError):
            bp.count_batch(texts, num_threads=num_threads)
        with pytest.raises(ValueError):
            bp.encode_ordinary("hello", num_threads=num_threads)


# ============================================================================ numpy


def test_encode_to_numpy_dtype_and_layout(bp_encodings):
    enc = bp_encodings["o200k_base"]
    arr = enc.encode_to_numpy("hello world " * 100)
    assert isinstance(arr, np.ndarray)
    assert arr.dtype == np.uint32 and arr.ndim == 1 and arr.flags.c_contiguous
    assert arr.tolist() == enc.encode("hello world " * 100)
    assert enc.encode_to_numpy("").dtype == np.uint32
    assert enc.encode_to_numpy("").shape == (0,)
    assert enc.decode(arr) == "hello world " * 100
    # Writeable and its own (tiktoken's is a read-only view of a bytes buffer): editing it
    # changes no other call's result.
    assert arr.flags.writeable
    arr[0] = 7
    assert enc.encode_to_numpy("hello world " * 100)[0] != 7


def test_encode_to_numpy_when_the_numpy_import_is_interrupted():
    """A Ctrl-C (or any error) while numpy is first imported inside ``encode_to_numpy`` is an
    ordinary exception, not a Rust panic; the next call works."""
    code = textwrap.dedent(
        """
        import sys
        import bytepair
        assert "numpy" not in sys.modules
        enc = bytepair.get_encoding("cl100k_base")

        class Interrupt:
            def find_spec(self, name, path=None, target=None):
                if name == "numpy" or name.startswith("numpy."):
                    raise KeyboardInterrupt
                return None

        sys.meta_path.insert(0, Interrupt())
        try:
            enc.encode_to_numpy("hello world")
        except KeyboardInterrupt:
            print("KeyboardInterrupt")
        sys.meta_path.pop(0)
        print(enc.encode_to_numpy("hello world").tolist())
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["KeyboardInterrupt", "[15339,", "1917]"], out.stdout + out.stderr


def test_decode_of_other_sequences_needs_no_numpy():
    """``decode`` of an ``array.array`` or a ``range`` neither imports numpy nor needs it: with
    numpy unavailable (or its import failing) it decodes, where rust-numpy's type check panicked."""
    code = textwrap.dedent(
        """
        import array, sys
        import bytepair
        enc = bytepair.get_encoding("cl100k_base")
        ids = array.array("I", [15339, 1917])
        print(enc.decode(ids), "numpy" in sys.modules)
        sys.modules["numpy"] = None
        print(enc.decode(ids), enc.decode(range(33, 35)), enc.decode_batch([range(33, 35)]))
        del sys.modules["numpy"]
        import numpy as np
        print(enc.decode(np.array([15339, 1917], dtype=np.int64)), enc.decode(ids))
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == [
        "hello world False",
        "hello world BC ['BC']",
        "hello world hello world",
    ], out.stdout + out.stderr


@pytest.mark.parametrize(
    "make",
    [lambda n: "a" * n, lambda n: "".join(chr(0x4E00 + i % 500) for i in range(n))],
    ids=["letter", "cjk-cycle"],
)
def test_a_long_repetitive_special_token_builds_in_linear_time(make, tiktoken):
    """Building the special-token matcher for one long repetitive token took time quadratic in
    its length (0.4 s at 10,000 characters, over a minute at 100,000); tiktoken builds it in a
    fraction of a second. The tokens agree with tiktoken's, also with a second long token that
    overlaps the first (neither a prefix of the other: tiktoken's choice between those follows
    its hash order). tiktoken refuses tokens of 200,000 CJK characters and is slow on long ones, so
    the comparison uses 3,000."""
    ranks = {bytes([b]): b for b in range(256)}

    def build(lib, n):
        long_token, shorter = make(n), make(n * 3 // 4) + "!"
        specials = {long_token: 256, shorter: 257, "<|eot|>": 258}
        enc = lib.Encoding("long", pat_str=r"\S+|\s+", mergeable_ranks=ranks, special_tokens=specials)
        return enc, long_token, shorter

    t0 = time.perf_counter()
    bp, long_token, shorter = build(bytepair, 200_000)
    text = "x " + shorter + " " + long_token + "<|eot|>" + long_token[:1000]
    got = bp.encode(text, allowed_special="all")
    assert time.perf_counter() - t0 < 10
    assert got[:5] == [ord("x"), ord(" "), 257, ord(" "), 256] and got[5] == 258
    assert bp.decode(got) == text

    # Over 4 kB of special tokens in all, so the NFA matcher (tiktoken takes seconds on longer
    # ones: its special-token regex is slow on these texts).
    bp, long_token, shorter = build(bytepair, 3_000)
    tt, *_ = build(tiktoken, 3_000)
    text = "x " + shorter + " " + long_token + "<|eot|>" + long_token[:1000]
    for allowed in ("all", {shorter}, {long_token}, {"<|eot|>"}):
        assert bp.encode(text, allowed_special=allowed, disallowed_special=()) == tt.encode(
            text, allowed_special=allowed, disallowed_special=()
        )
    with pytest.raises(ValueError, match="disallowed special"):
        bp.encode(text, allowed_special={shorter})


def test_a_sparse_special_id_costs_no_memory_per_id():
    """A small vocabulary with a special token at a high id pays for the int-cache slots its ids
    use, not for all of them up to the highest (each such encoding kept 16 MB), and its ids
    still come out right."""
    code = textwrap.dedent(
        """
        import resource
        import bytepair
        ranks = {bytes([b]): b for b in range(256)}
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        encs = [
            bytepair.Encoding(f"e{i}", pat_str=r"\\S+|\\s+", mergeable_ranks=ranks,
                              special_tokens={"<|eot|>": 2**31})
            for i in range(40)
        ]
        for e in encs:
            assert e.encode("a<|eot|>", allowed_special="all") == [97, 2**31]
        print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) // 1024)
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    # A huge page (2 MB) at most for the ids in use, each, where the system maps them.
    assert int(out.stdout) < 200, f"{out.stdout} MB for 40 encodings"


@pytest.mark.parametrize("unit", ["\U0001f600", "\u00e9", "\u4e2d"])
def test_count_of_a_huge_run_takes_no_memory_per_token(unit):
    """``count`` of one piece of millions of tokens keeps a window of them, not all: it held
    every token and its end (12 bytes a token, over 100 MB for 10 million emoji)."""
    code = textwrap.dedent(
        f"""
        import resource
        import bytepair
        enc = bytepair.get_encoding("o200k_base")
        text = {unit!r} * 4_000_000
        text.encode()  # peaks by a UTF-8 copy, as count may make, so that only the rest shows
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        n = enc.count(text)
        grew = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) // 1024
        print(n == len(enc.encode_to_numpy(text)), grew)
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    same, mb = out.stdout.split()
    assert same == "True"
    assert int(mb) < 16, f"{mb} MB to count {unit!r} * 4,000,000"


def _long_encode_calls(enc):
    """(name, call(text)) for each single-text call that Ctrl-C must stop."""
    return {
        "encode_ordinary": enc.encode_ordinary,
        "encode": lambda t: enc.encode(t, allowed_special="all"),
        "count": enc.count,
        "encode_to_numpy": enc.encode_to_numpy,
        "encode_ordinary 2 threads": lambda t: enc.encode_ordinary(t, num_threads=2),
        # Two long documents on two threads: each thread has about the whole call's work.
        "encode_ordinary_batch": lambda t: enc.encode_ordinary_batch([t, t], num_threads=2),
        "encode_batch": lambda t: enc.encode_batch([t, t], num_threads=2, allowed_special="all"),
        "count_batch": lambda t: enc.count_batch([t, t], num_threads=2),
        # A short document, then a long one that the pool thread takes: the caller, done with the
        # short one, waits for it (and must still see Ctrl-C).
        "encode_ordinary_batch waiting": lambda t: enc.encode_ordinary_batch([t[: len(t) // 40], t], num_threads=2),
        # Its pieces become a list of str after the native split: that looks for Ctrl-C too.
        "split": enc.split,
    }


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
@pytest.mark.parametrize("name", list(_long_encode_calls(bytepair.get_encoding("cl100k_base"))))
def test_sigint_stops_a_long_encode(name, bp_encodings):
    """A real SIGINT while one big text is encoded (detached from the interpreter) raises
    KeyboardInterrupt long before the call would have finished; the next call works."""
    import random
    import signal

    enc = bp_encodings["cl100k_base"]
    call = _long_encode_calls(enc)[name]
    # Long made-up words (slow merges), on lines so that the threaded call can cut the text.
    rng = random.Random(5)
    words = ["".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(12)) for _ in range(4096)]
    unit = "\n".join(" ".join(words[i : i + 8]) for i in range(0, len(words), 8)) + "\n"
    call(unit * 4)
    t0 = time.perf_counter()
    call(unit * 16)
    per_unit = (time.perf_counter() - t0) / 16
    # About 4 s of work, within 512 MB of text.
    reps = min(max(16, int(4.0 / max(per_unit, 1e-6))), (512 << 20) // len(unit))
    text = unit * reps
    timer = threading.Timer(0.3, lambda: os.kill(os.getpid(), signal.SIGINT))
    t0 = time.perf_counter()
    timer.start()
    try:
        with pytest.raises(KeyboardInterrupt):
            call(text)
            time.sleep(5)  # the signal came after the call: the handler runs here
    finally:
        timer.cancel()
    elapsed = time.perf_counter() - t0
    del text
    assert elapsed < 1.5, f"{name}: KeyboardInterrupt after {elapsed:.2f} s (about {reps * per_unit:.1f} s of work)"
    after = call("hello world")
    after = after.tolist() if hasattr(after, "tolist") else after
    assert after in ([15339, 1917], 2, [[15339, 1917]] * 2, [2, 2], [[], [15339, 1917]], ["hello", " world"])


_LONG_DECODE_CALLS = {
    # name: (call, most tokens, numpy dtype or None for a list)
    "decode": (lambda enc, t: enc.decode(t), 120_000_000, None),
    "decode_bytes": (lambda enc, t: enc.decode_bytes(t), 120_000_000, None),
    "decode_tokens_bytes": (lambda enc, t: enc.decode_tokens_bytes(t), 30_000_000, None),
    "decode_batch": (lambda enc, t: enc.decode_batch([t, t]), 60_000_000, None),
    # uint32 (what encode_to_numpy gives) for the long one: half the memory of int64, which
    # took seconds to fault in on a fresh machine.
    "decode_bytes numpy": (lambda enc, t: enc.decode_bytes(t), 120_000_000, np.uint32),
    "decode_batch numpy": (lambda enc, t: enc.decode_batch([t] * 8), 30_000_000, np.int64),
}


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
@pytest.mark.parametrize("name", list(_LONG_DECODE_CALLS))
def test_sigint_stops_a_long_decode(name, bp_encodings):
    """Reading and decoding a long token list looks for Ctrl-C as it goes: a SIGINT raises
    KeyboardInterrupt long before the call would have finished; the next call works.

    The signal comes from another process, as Ctrl-C does: parts of these calls hold the
    interpreter, so a Python timer thread could not run to send it.
    """
    enc = bp_encodings["cl100k_base"]
    call, most, dtype = _LONG_DECODE_CALLS[name]
    unit = enc.encode_ordinary("hello world, and a few words more: 12345 \u00e9t\u00e9 \u4e2d\u6587\n") * 5000

    def repeated(reps: int):  # type: ignore[no-untyped-def]
        # An array is tiled, not converted from a list of ints (that took 8 s for 120 M).
        return unit * reps if dtype is None else np.tile(np.asarray(unit, dtype=dtype), reps)

    tokens = repeated(20)
    t0 = time.perf_counter()
    call(enc, tokens)
    per_token = (time.perf_counter() - t0) / len(tokens)
    # About 4 s of work, within `most` tokens.
    tokens = repeated(max(20, min(int(4.0 / max(per_token, 1e-9)), most) // len(unit)))
    expected = len(tokens) * per_token
    killer = subprocess.Popen(["sh", "-c", f"sleep 0.3; kill -INT {os.getpid()}"])
    t0 = time.perf_counter()
    try:
        with pytest.raises(KeyboardInterrupt):
            call(enc, tokens)
            time.sleep(5)  # the signal came after the call: the handler runs here
    finally:
        killer.kill()
        killer.wait()
    elapsed = time.perf_counter() - t0
    del tokens
    if expected > 1.5:
        assert elapsed < 1.2, f"{name}: KeyboardInterrupt after {elapsed:.2f} s (about {expected:.1f} s of work)"
    assert enc.decode([15339, 1917]) == "hello world"


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX timers")
def test_a_signal_handlers_exception_in_a_batch_is_raised_at_once(bp_encodings):
    """An exception from a signal handler (a deadline) stops a batch and is raised as it is: it
    once made the batch redo every item one by one, to find which item failed."""
    import signal as signal_module

    class Deadline(Exception):
        pass

    def handler(*_):
        raise Deadline

    enc = bp_encodings["cl100k_base"]
    docs = [f"document {i}: " + "hello world, naive cafe 12345 " * 150 for i in range(4000)]
    t0 = time.perf_counter()
    enc.count_batch(docs)
    whole = time.perf_counter() - t0
    docs = docs * max(1, int(3.0 / max(whole, 1e-3)))
    old = signal_module.signal(signal_module.SIGALRM, handler)
    try:
        signal_module.setitimer(signal_module.ITIMER_REAL, 0.2)
        t0 = time.perf_counter()
        with pytest.raises(Deadline):
            enc.count_batch(docs)
            time.sleep(5)
        elapsed = time.perf_counter() - t0
    finally:
        signal_module.setitimer(signal_module.ITIMER_REAL, 0)
        signal_module.signal(signal_module.SIGALRM, old)
    assert elapsed < 1.0, f"Deadline after {elapsed:.2f} s"


# ============================================================================ pickling


def test_pickle_builtin_by_name(pair, encoding_name):
    bp, tt = pair
    data = pickle.dumps(bp)
    assert len(data) < 500, "built-in encodings must pickle by name"
    back = pickle.loads(data)
    assert back.name == encoding_name
    assert back.encode("hello <|endoftext|>", allowed_special="all") == tt.encode(
        "hello <|endoftext|>", allowed_special="all"
    )
    assert pickle.loads(pickle.dumps(bp, protocol=0)).name == encoding_name


def test_pickle_custom_by_value(tiktoken):
    kw = tiny_kwargs("custom-pickle")
    enc = bytepair.Encoding(**kw)
    back = pickle.loads(pickle.dumps(enc))
    assert back is not enc
    assert back.name == "custom-pickle"
    assert back._mergeable_ranks == kw["mergeable_ranks"]
    assert back._special_tokens == kw["special_tokens"]
    text = "abcd ab<|eot|>cd<|x|>"
    assert back.encode(text, allowed_special="all") == tiktoken.Encoding(**kw).encode(text, allowed_special="all")


def test_pickle_in_subprocess():
    """Unpickling by name in a fresh interpreter (as multiprocessing does)."""
    data = pickle.dumps(bytepair.get_encoding("cl100k_base"))
    code = "import pickle,sys; e=pickle.loads(sys.stdin.buffer.read()); print(e.name, e.encode('hello world'))"
    out = subprocess.run([sys.executable, "-c", code], input=data, capture_output=True, check=True, timeout=120)
    assert out.stdout.decode().split(" ", 1)[0] == "cl100k_base"
    assert out.stdout.decode().strip().endswith("[15339, 1917]")


# ============================================================================ thread safety


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_batch_threads_work_in_a_forked_child(bp_encodings, tt_encodings):
    """A child forked after the helper threads started has none of them: its batch calls must
    still finish (on the calling thread) with the right tokens, as in a fork-based worker pool."""
    enc = bp_encodings["cl100k_base"]
    texts = [f"doc {i}: " + "fork-safe text, " * (i % 40) for i in range(64)]
    expected = [tt_encodings["cl100k_base"].encode_ordinary(t) for t in texts]
    assert enc.encode_ordinary_batch(texts, num_threads=2) == expected  # helpers now running
    runs = in_forked_child(
        lambda: [enc.encode_ordinary_batch(texts, num_threads=2) for _ in range(20)], "encode_ordinary_batch"
    )
    assert all(r == expected for r in runs)


def test_shared_encoding_across_threads(bp_encodings, tt_encodings):
    enc = bp_encodings["o200k_base"]
    ref = tt_encodings["o200k_base"]
    texts = [f"Thread text {i}: " + "héllo wörld 123 " * (i % 17) + "\U0001f600" * (i % 3) for i in range(200)]
    expected = [ref.encode(t, allowed_special="all") for t in texts]
    results: dict[int, list] = {}
    errors: list[BaseException] = []
    barrier = threading.Barrier(8)

    def worker(k: int) -> None:
        try:
            barrier.wait()
            mine = []
            for rep in range(5):
                for i, t in enumerate(texts):
                    if (i + k + rep) % 3 == 0:
                        mine.append(enc.encode(t, allowed_special="all"))
                    elif (i + k + rep) % 3 == 1:
                        mine.append(enc.encode_ordinary(t))
                    else:
                        mine.append(enc.encode_to_numpy(t, allowed_special="all").tolist())
                mine.append(enc.encode_batch(texts[:32], allowed_special="all", num_threads=2))
                mine.append(enc.decode_batch(expected[:32]))
            results[k] = mine
        except BaseException as e:  # noqa: BLE001
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert not errors, errors
    assert len(results) == 8
    for k, mine in results.items():
        pos = 0
        for rep in range(5):
            for i, t in enumerate(texts):
                exp = expected[i] if (i + k + rep) % 3 != 1 else ref.encode_ordinary(t)
                assert mine[pos] == exp, (k, rep, i)
                pos += 1
            assert mine[pos] == expected[:32]
            assert mine[pos + 1] == texts[:32]
            pos += 2


def test_get_encoding_concurrently_in_fresh_process():
    """Eight threads racing to load the same encodings get one object per name."""
    code = textwrap.dedent(
        """
        import threading, bytepair
        names = ["cl100k_base", "o200k_base", "gpt2"] * 3
        got = [None] * len(names)
        def w(i): got[i] = bytepair.get_encoding(names[i])
        ts = [threading.Thread(target=w, args=(i,)) for i in range(len(names))]
        [t.start() for t in ts]; [t.join() for t in ts]
        assert all(got[i] is bytepair.get_encoding(names[i]) for i in range(len(names)))
        print(got[0].encode("hello world"))
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=False)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[15339, 1917]"


# ============================================================================ rank files: load/dump


def test_dump_load_round_trip(tmp_path):
    ranks = {bytes([i]): i for i in range(256)}
    ranks.update({b"\x00\xff": 256, b" the": 257, b"\n\n": 258, "é".encode(): 259, b"==": 260})
    path = tmp_path / "r.tiktoken"
    bytepair.dump_tiktoken_bpe(ranks, str(path))
    expected = b"".join(
        base64.b64encode(t) + b" " + str(r).encode() + b"\n" for t, r in sorted(ranks.items(), key=lambda x: x[1])
    )
    assert path.read_bytes() == expected
    assert bytepair.load_tiktoken_bpe(str(path)) == ranks
    # an encoding built from the loaded ranks works
    enc = bytepair.Encoding(
        "rt", pat_str=r"\S+|\s+", mergeable_ranks=bytepair.load_tiktoken_bpe(str(path)), special_tokens={}
    )
    assert enc.decode(enc.encode(" the é")) == " the é"


@pytest.mark.parametrize(
    "content,bad_line",
    [
        (b"YQ== 0\nYg== 1\nnot-base64!! 2\n", b"not-base64!!"),
        (b"YQ== 0\nYg==\n", b"Yg=="),
        (b"YQ== 0\nYg== x\n", b"Yg== x"),
        (b"YQ== 0 1\n", b"YQ== 0 1"),
    ],
)
def test_bad_rank_file_names_the_line(tmp_path, content, bad_line, monkeypatch, tiktoken):
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", "")
    path = tmp_path / "bad.tiktoken"
    path.write_bytes(content)
    with pytest.raises(ValueError) as info:
        bytepair.load_tiktoken_bpe(str(path))
    assert bad_line.decode() in str(info.value) or repr(bad_line) in str(info.value)
    # same exception type as tiktoken (where tiktoken rejects the file at all)
    exp = outcome(tiktoken.load.load_tiktoken_bpe, str(path))
    if exp[0] == "raise":
        assert exp[1] is ValueError


@pytest.mark.parametrize(
    "content",
    [b"\xef\xbb\xbfYQ== 0\nYg== 1\n", b"YWJj* 0\n", b"YQ=== 0\n", b"YQ==YQ== 0\n", b"= 0\n", b"YQ 0\n"],
)
def test_rank_files_read_as_tiktoken_reads_them(tmp_path, content, monkeypatch, tiktoken):
    # tiktoken decodes base64 without validating it (a byte order mark, stray characters and
    # extra padding are skipped), so such files load there and must load here alike.
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", "")
    path = tmp_path / "odd.tiktoken"
    path.write_bytes(content)
    assert outcome(bytepair.load_tiktoken_bpe, str(path)) == outcome(tiktoken.load.load_tiktoken_bpe, str(path))


def test_local_hash_mismatch(tmp_path, monkeypatch):
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(tmp_path / "cache"))
    path = tmp_path / "r.tiktoken"
    path.write_bytes(b"YQ== 0\n")
    with pytest.raises(ValueError, match="[Hh]ash"):
        bytepair.load_tiktoken_bpe(str(path), expected_hash="0" * 64)
    good = hashlib.sha256(b"YQ== 0\n").hexdigest()
    assert bytepair.load_tiktoken_bpe(str(path), expected_hash=good) == {b"a": 0}


# ---------------------------------------------------------------------------- URLs and the cache


class _Server:
    """A tiny HTTP server on 127.0.0.1 serving ``files`` (path -> bytes) and counting requests."""

    def __init__(self, files: dict[str, bytes]):
        self.files = files
        self.hits: list[str] = []
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                server.hits.append(self.path)
                # /gz/NAME: NAME's body stored gzipped, served with Content-Encoding: gzip
                gz = self.path.startswith("/gz/")
                body = server.files.get(self.path[3:] if gz else self.path)
                if body is None:
                    self.send_response(404)
                    self.end_headers()
                    return
                self.send_response(200)
                if gz:
                    body = gzip.compress(body)
                    self.send_header("Content-Encoding", "gzip")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def http_files():
    ranks = tiny_ranks()
    body = b"".join(base64.b64encode(t) + b" " + str(r).encode() + b"\n" for t, r in ranks.items())
    srv = _Server({"/tiny.tiktoken": body, "/other.tiktoken": b"YQ== 0\nYg== 1\n"})
    yield srv, ranks, body
    srv.close()


@pytest.fixture(params=["bytepair", "tiktoken"])
def loader(request, tiktoken):
    if request.param == "tiktoken":
        pytest.importorskip("requests")  # tiktoken fetches URLs with requests
        import tiktoken.load as mod
    else:
        mod = bytepair.load
    return mod


def test_url_cache_tiktoken_cache_dir(loader, http_files, tmp_path, monkeypatch):
    srv, ranks, body = http_files
    url = srv.url + "/tiny.tiktoken"
    cache = tmp_path / "tc"
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(cache))
    monkeypatch.setenv("DATA_GYM_CACHE_DIR", str(tmp_path / "unused"))
    good = hashlib.sha256(body).hexdigest()
    assert loader.load_tiktoken_bpe(url, expected_hash=good) == ranks
    key = hashlib.sha1(url.encode()).hexdigest()
    assert (cache / key).read_bytes() == body
    assert not (tmp_path / "unused").exists()
    n = len(srv.hits)
    assert loader.load_tiktoken_bpe(url, expected_hash=good) == ranks
    assert loader.load_tiktoken_bpe(url) == ranks
    assert len(srv.hits) == n, "cached file must be used"
    # a corrupted cache entry is refetched (and repaired) when a hash is given ...
    (cache / key).write_bytes(b"garbage")
    assert loader.load_tiktoken_bpe(url, expected_hash=good) == ranks
    assert len(srv.hits) == n + 1
    assert (cache / key).read_bytes() == body
    # ... and used as-is when none is given (tiktoken's rule)
    (cache / key).write_bytes(b"YQ== 7\n")
    assert loader.load_tiktoken_bpe(url) == {b"a": 7}
    assert len(srv.hits) == n + 1


def test_url_served_gzipped_is_decoded(loader, http_files, monkeypatch):
    srv, ranks, _body = http_files
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", "")
    assert loader.load_tiktoken_bpe(srv.url + "/gz/tiny.tiktoken") == ranks


def _raised(f, *args):
    try:
        f(*args)
    except Exception as e:  # noqa: BLE001 (the type is what is compared)
        return e
    raise AssertionError(f"{f.__qualname__}{args} raised nothing")


def test_url_errors_have_tiktokens_types(http_files, tiktoken, monkeypatch):
    """A missing file and a refused connection raise what tiktoken raises (requests' errors)."""
    requests = pytest.importorskip("requests")
    import tiktoken.load

    srv, _ranks, _body = http_files
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", "")
    with socket.socket() as s:  # a port nothing listens on once closed
        s.bind(("127.0.0.1", 0))
        refused = f"http://127.0.0.1:{s.getsockname()[1]}/tiny.tiktoken"
    for url, expected in [
        (srv.url + "/missing.tiktoken", requests.HTTPError),
        (refused, requests.ConnectionError),
    ]:
        ours = _raised(bytepair.load_tiktoken_bpe, url)
        theirs = _raised(tiktoken.load.load_tiktoken_bpe, url)
        assert type(ours) is type(theirs), (url, ours, theirs)
        assert isinstance(ours, expected)


def test_urls_without_requests_are_read_with_urllib(http_files, monkeypatch):
    import urllib.error

    srv, ranks, body = http_files
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", "")
    monkeypatch.setitem(sys.modules, "requests", None)  # `import requests` fails
    assert bytepair.load.read_file(srv.url + "/tiny.tiktoken") == body
    assert bytepair.load_tiktoken_bpe(srv.url + "/gz/tiny.tiktoken") == ranks
    with pytest.raises(urllib.error.HTTPError):
        bytepair.load_tiktoken_bpe(srv.url + "/missing.tiktoken")


def test_data_gym_ranks_count_a_repeated_merge(tmp_path, tiktoken):
    """Each line of vocab.bpe takes the next rank, a repeated one too, as tiktoken counts."""
    import json

    import tiktoken.load

    printable = [b for b in range(256) if chr(b).isprintable() and chr(b) != " "]
    chars = [chr(b) for b in printable] + [chr(256 + i) for i in range(256 - len(printable))]
    encoder = {c: i for i, c in enumerate(chars)} | {"ab": 257, "cd": 258}
    (tmp_path / "vocab.bpe").write_text("#version: 0.2\na b\na b\nc d\n")
    (tmp_path / "encoder.json").write_text(json.dumps(encoder))
    args = (str(tmp_path / "vocab.bpe"), str(tmp_path / "encoder.json"))
    got = bytepair.load.data_gym_to_mergeable_bpe_ranks(*args)
    assert got == tiktoken.load.data_gym_to_mergeable_bpe_ranks(*args)
    assert (got[b"ab"], got[b"cd"]) == (257, 258)


def test_url_cache_data_gym_dir(loader, http_files, tmp_path, monkeypatch):
    srv, ranks, body = http_files
    url = srv.url + "/tiny.tiktoken"
    monkeypatch.delenv("TIKTOKEN_CACHE_DIR", raising=False)
    monkeypatch.setenv("DATA_GYM_CACHE_DIR", str(tmp_path / "dg"))
    assert loader.load_tiktoken_bpe(url) == ranks
    assert (tmp_path / "dg" / hashlib.sha1(url.encode()).hexdigest()).read_bytes() == body


def test_url_cache_disabled_by_empty_string(loader, http_files, tmp_path, monkeypatch):
    srv, ranks, _body = http_files
    url = srv.url + "/tiny.tiktoken"
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", "")
    monkeypatch.setenv("DATA_GYM_CACHE_DIR", str(tmp_path / "dg"))
    for _ in range(3):
        assert loader.load_tiktoken_bpe(url) == ranks
    assert srv.hits.count("/tiny.tiktoken") == 3
    assert not (tmp_path / "dg").exists()


def test_url_hash_mismatch(loader, http_files, tmp_path, monkeypatch):
    srv, _ranks, _body = http_files
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(tmp_path / "tc"))
    with pytest.raises(ValueError, match="[Hh]ash"):
        loader.load_tiktoken_bpe(srv.url + "/other.tiktoken", expected_hash="ab" * 32)
    assert not (tmp_path / "tc" / hashlib.sha1((srv.url + "/other.tiktoken").encode()).hexdigest()).exists()


def test_url_not_found(loader, http_files, tmp_path, monkeypatch):
    srv, _ranks, _body = http_files
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", "")
    with pytest.raises(OSError):
        loader.load_tiktoken_bpe(srv.url + "/missing.tiktoken")


# ---------------------------------------------------------------------------- bundled rank files


def _official_sums() -> dict[str, str]:
    path = VOCAB_DIR / "SHA256SUMS"
    if not path.is_file():
        pytest.skip("SHA256SUMS not found")
    sums = {}
    for line in path.read_text().splitlines():
        if line.strip():
            digest, fname = line.split()
            sums[fname.lstrip("*").removesuffix(".tiktoken")] = digest
    return sums


@pytest.mark.parametrize("name", ENCODING_NAMES)
def test_bundled_ranks_hash_to_official_sums(name, tmp_path):
    sums = _official_sums()
    enc = bytepair.get_encoding(name)
    path = tmp_path / f"{name}.tiktoken"
    bytepair.dump_tiktoken_bpe(enc._mergeable_ranks, str(path))
    assert hashlib.sha256(path.read_bytes()).hexdigest() == sums[RANK_FILE_OF[name]]
    assert hashlib.sha256(enc._core_bpe.to_tiktoken_bytes()).hexdigest() == sums[RANK_FILE_OF[name]]


def test_sha256sums_cover_the_shared_files():
    sums = _official_sums()
    assert set(RANK_FILES) <= set(sums)
    for name in RANK_FILES:
        assert hashlib.sha256((VOCAB_DIR / f"{name}.tiktoken").read_bytes()).hexdigest() == sums[name]


# ---------------------------------------------------------------------------- no network


def test_get_encoding_never_touches_network_or_cache(tmp_path):
    """In a fresh interpreter with sockets disabled and every cache variable pointing at an empty
    folder, every built-in encoding loads and encodes."""
    code = textwrap.dedent(
        f"""
        import socket, sys
        def boom(*a, **k):
            raise RuntimeError("network access attempted")
        socket.socket.connect = boom
        socket.socket.connect_ex = boom
        socket.create_connection = boom
        socket.getaddrinfo = boom
        sys.modules["requests"] = None
        sys.modules["blobfile"] = None
        import bytepair, os
        for name in {ENCODING_NAMES!r}:
            enc = bytepair.get_encoding(name)
            assert enc.decode(enc.encode("hello world")) == "hello world"
        assert os.listdir({str(tmp_path / "cache")!r}) == []
        print("ok")
        """
    )
    (tmp_path / "cache").mkdir()
    env = dict(
        os.environ,
        TIKTOKEN_CACHE_DIR=str(tmp_path / "cache"),
        DATA_GYM_CACHE_DIR=str(tmp_path / "cache"),
        TMPDIR=str(tmp_path / "cache"),
        HOME=str(tmp_path),
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=300, env=env, check=False
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"


def test_get_encoding_no_socket_in_process(monkeypatch):
    """Same, in-process: a fresh registry, sockets monkeypatched to raise."""
    import socket

    import bytepair.registry as reg

    def boom(*a, **k):
        raise AssertionError("network access attempted")

    monkeypatch.setattr(socket.socket, "connect", boom)
    monkeypatch.setattr(socket, "create_connection", boom)
    monkeypatch.setattr(socket, "getaddrinfo", boom)
    monkeypatch.setattr(reg, "ENCODINGS", {})
    for name in ENCODING_NAMES:
        enc = bytepair.get_encoding(name)
        assert enc.encode("hello") == enc.encode_ordinary("hello")


# ============================================================================ plugins


@pytest.fixture
def fresh_registry(monkeypatch):
    import bytepair.registry as reg

    def reset_plugin_cache():
        # lru_cached in tiktoken's layout; a module global in others: reset whichever exists
        if hasattr(reg._available_plugin_modules, "cache_clear"):
            reg._available_plugin_modules.cache_clear()
        if hasattr(reg, "_plugin_modules"):
            reg._plugin_modules = None

    reset_plugin_cache()
    if hasattr(reg, "_plugin_modules"):
        monkeypatch.setattr(reg, "_plugin_modules", None)
    monkeypatch.setattr(reg, "ENCODING_CONSTRUCTORS", None)
    monkeypatch.setattr(reg, "ENCODINGS", dict(reg.ENCODINGS))
    saved = {k: v for k, v in sys.modules.items() if k.split(".")[0] in ("bytepair_ext", "tiktoken_ext")}
    yield reg
    reset_plugin_cache()
    for k in [k for k in sys.modules if k.split(".")[0] in ("bytepair_ext", "tiktoken_ext")]:
        if k not in saved:
            del sys.modules[k]
    sys.modules.update(saved)
    # ENCODING_CONSTRUCTORS/ENCODINGS are restored by monkeypatch after this


PLUGIN_SOURCE = """
def _ranks():
    ranks = {{bytes([i]): i for i in range(256)}}
    ranks[b"ab"] = 256
    ranks[b"abab"] = 257
    return ranks

def {fn}():
    return {{
        "name": "{enc}",
        "pat_str": r"\\S+|\\s+",
        "mergeable_ranks": _ranks(),
        "special_tokens": {{"<|end|>": 258}},
    }}

ENCODING_CONSTRUCTORS = {{"{enc}": {fn}}}
"""


def test_plugins_bytepair_ext_and_tiktoken_ext(fresh_registry, tmp_path, monkeypatch):
    for ns, enc_name in (("bytepair_ext", "bp_plugin_enc"), ("tiktoken_ext", "tk_plugin_enc")):
        d = tmp_path / ns
        d.mkdir()  # no __init__.py: a namespace package
        (d / f"{enc_name}_mod.py").write_text(PLUGIN_SOURCE.format(fn="make", enc=enc_name))
    monkeypatch.syspath_prepend(str(tmp_path))
    import importlib

    importlib.invalidate_caches()
    names = bytepair.list_encoding_names()
    assert "bp_plugin_enc" in names and "tk_plugin_enc" in names
    assert names[: len(ENCODING_NAMES)] == ENCODING_NAMES
    for enc_name in ("bp_plugin_enc", "tk_plugin_enc"):
        enc = bytepair.get_encoding(enc_name)
        assert enc.name == enc_name
        assert enc.encode("ababab ab<|end|>", allowed_special="all") == [257, 256, 32, 256, 258]
        assert enc is bytepair.get_encoding(enc_name)
    # built-ins are still the bundled ones (tiktoken_ext.openai_public is not used)
    assert bytepair.get_encoding("cl100k_base").encode("hello world") == [15339, 1917]


# ============================================================================ inputs tiktoken crashes on


_DISTINCT_PATTERNS = {"r50k_base", "cl100k_base", "o200k_base"}


@pytest.mark.parametrize("unit", [" ", "\t"])
def test_million_whitespace_then_letter(unit, pair, encoding_name, request):
    """tiktoken panics (fancy-regex backtrack limit) on ~1M spaces/tabs followed by a letter.
    bytepair must give what plain regex semantics define: the pieces of Python's ``regex`` module,
    each merged by tiktoken's own BPE (``tiktoken.Encoding._encode_only_native_bpe``)."""
    if encoding_name not in _DISTINCT_PATTERNS and not (FULL or request.config.getoption("--run-slow")):
        pytest.skip("same pattern as another encoding: runs with BYTEPAIR_FULL_DIFF=1")
    bp, tt = pair
    text = unit * 1_000_000 + "a"
    got = bp.encode_ordinary(text)
    assert bp.decode(got) == text
    assert bp.encode(text) == got
    assert bp.count(text) == len(got)
    assert bp.encode_to_numpy(text).tolist() == got
    assert got == tt._encode_only_native_bpe(text)


def test_plugin_errors(fresh_registry, tmp_path, monkeypatch):
    """A plugin without ENCODING_CONSTRUCTORS, or two plugins defining one name: ValueError
    (tiktoken's rules)."""
    d = tmp_path / "bytepair_ext"
    d.mkdir()
    (d / "a_mod.py").write_text(PLUGIN_SOURCE.format(fn="make", enc="dup_enc"))
    (d / "b_mod.py").write_text(PLUGIN_SOURCE.format(fn="make", enc="dup_enc"))
    monkeypatch.syspath_prepend(str(tmp_path))
    import importlib

    importlib.invalidate_caches()
    with pytest.raises(ValueError, match="dup_enc"):
        bytepair.get_encoding("dup_enc")
    (d / "b_mod.py").write_text("X = 1\n")
    sys.modules.pop("bytepair_ext.b_mod", None)
    import bytepair.registry as reg

    reg.ENCODING_CONSTRUCTORS = None
    with pytest.raises(ValueError, match="ENCODING_CONSTRUCTORS"):
        bytepair.get_encoding("dup_enc")


def test_specials_colliding_with_mergeable_tokens(tiktoken):
    """Special tokens that spell mergeable tokens (" ", "ab", "a") or reuse a mergeable id (97)."""
    ranks = {bytes([i]): i for i in range(256)} | {b"ab": 256}
    kw = {
        "name": "collide",
        "pat_str": r"\S+|\s+",
        "mergeable_ranks": ranks,
        "special_tokens": {" ": 300, "ab": 301, "a": 302, "zz": 97},
    }
    bp, tt = bytepair.Encoding(**kw), tiktoken.Encoding(**kw)
    for s in (" ", "ab", "a", "zz", "b"):
        assert outcome(bp.encode_single_token, s) == outcome(tt.encode_single_token, s), s
    for i in (32, 97, 256, 300, 301, 302, 303):
        assert outcome(bp.decode_single_token_bytes, i) == outcome(tt.decode_single_token_bytes, i), i
    for text in ("ab a zz", "abab  a", "zz zz", " "):
        for kwargs in ({"allowed_special": "all"}, {"disallowed_special": ()}, {}):
            assert outcome(bp.encode, text, **kwargs) == outcome(tt.encode, text, **kwargs), (text, kwargs)
    assert bp.decode([300, 301, 302, 97]) == tt.decode([300, 301, 302, 97])
    assert bp.token_byte_values() == tt.token_byte_values()
    assert bp.n_vocab == tt.n_vocab


@pytest.mark.skipif(
    sys.implementation.name != "cpython" or sys.byteorder != "little" or ".abi3." in bytepair._native.__file__,
    reason="bytepair reads CPython's string storage only on little-endian, non-stable-ABI builds",
)
def test_encoding_a_str_keeps_no_utf8_copy_on_it(bp_encodings):
    """Non-ASCII strings are converted to UTF-8 by bytepair into a buffer of the call, so
    encoding one does not leave CPython's cached UTF-8 copy on it (which doubles the memory of
    every Cyrillic or CJK string a corpus keeps), and the tokens are those of its UTF-8."""
    enc = bp_encodings["cl100k_base"]
    for text in ("привет мир " * 500, "naïve café " * 500, "中文 😀 " * 500):
        text = text.encode().decode()  # a fresh str with no cached UTF-8
        before = sys.getsizeof(text)
        tokens = enc.encode_ordinary(text)
        assert sys.getsizeof(text) == before
        assert tokens == enc._encode_bytes(text.encode())
        assert enc.decode(tokens) == text


# ============================================================================ token ints

# CPython 3.12 to 3.15 builds with the GIL (64-bit) hand out immortal, process-wide token ints.
_IMMORTAL_INTS = (
    sys.implementation.name == "cpython"
    and (3, 12) <= sys.version_info[:2] < (3, 16)
    and sys.maxsize > 2**32
    and getattr(sys, "_is_gil_enabled", lambda: True)()
    and ".abi3." not in bytepair._native.__file__
)


def _sparse_kwargs(name: str, high: int) -> dict:
    """tiny_kwargs, with the token ``b" the"`` at rank ``high`` (ranks may have gaps)."""
    kw = tiny_kwargs(name)
    ranks = dict(kw["mergeable_ranks"])
    ranks[b" the"] = high
    kw["mergeable_ranks"] = ranks
    kw["special_tokens"] = {"<|eot|>": high + 1}
    return kw


@pytest.mark.parametrize("high", [300, 2**18 - 1, 2**18, 2**18 + 7, 1_000_000])
def test_token_ints_are_right_and_reused_for_every_id(high):
    """Ids on both sides of the shared-int range (2**18 on CPython 3.12-3.15) come back as the
    right ints, the same object each time within an encoder, and stay valid after the encoder
    is gone."""
    enc = bytepair.Encoding(**_sparse_kwargs("sparse", high))
    text = "in the the end<|eot|>"
    first = enc.encode(text, allowed_special="all")
    assert high in first and high + 1 in first
    again = enc.encode(text, allowed_special="all")
    assert first == again
    for a, b in zip(first, again):
        assert a is b
    kept = enc.encode_ordinary(" the" * 1000)
    del enc
    gc.collect()
    assert kept == [high] * 1000 and all(type(t) is int for t in kept)
    assert sum(kept) == high * 1000


@pytest.mark.skipif(not _IMMORTAL_INTS, reason="immortal token ints only on CPython 3.12-3.15 with the GIL")
def test_token_ints_are_immortal_and_shared_between_encoders():
    """On CPython 3.12-3.15 token ints below 2**18 are immortal: building and freeing lists
    leaves their reference count alone, and two encoders hand out the same objects."""
    a = bytepair.Encoding(**_sparse_kwargs("a", 5000))
    b = bytepair.Encoding(**_sparse_kwargs("b", 5000))
    ta = a.encode_ordinary(" the")[0]
    tb = b.encode_ordinary(" the")[0]
    assert ta == tb == 5000 and ta is tb
    count = sys.getrefcount(ta)
    if hasattr(sys, "_is_immortal"):  # 3.14+: an immortal count is 3 << 30
        assert sys._is_immortal(ta) and count >= 2**31
    else:
        assert count >= 2**32 - 1
    for _ in range(100):
        a.encode_ordinary(" the" * 100)
    assert sys.getrefcount(ta) == count
    big = bytepair.Encoding(**_sparse_kwargs("big", 2**18 + 5))
    t = big.encode_ordinary(" the")[0]
    assert t == 2**18 + 5 and sys.getrefcount(t) < 2**20  # past the range: an ordinary int
    assert not getattr(sys, "_is_immortal", lambda _: False)(t)


def _run_mypy(tmp_path, module, *args):
    """Runs `python -m module args` (mypy or its stubtest) in `tmp_path`, with its cache there, and
    fails the test with mypy's report unless it passes."""
    pytest.importorskip("mypy")
    env = dict(os.environ, MYPY_CACHE_DIR=str(tmp_path / "mypy-cache"))
    out = subprocess.run(
        [sys.executable, "-m", module, *args], capture_output=True, text=True, timeout=600, env=env, cwd=tmp_path
    )
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-2000:]


def test_native_stubs_match_the_module(tmp_path):
    """`_native.pyi` against the compiled module (mypy's stubtest): every function, class,
    parameter and default the extension has, and nothing it lacks."""
    _run_mypy(tmp_path, "mypy.stubtest", "bytepair._native")


USER_CODE = """
import numpy as np

import bytepair
from bytepair import embed
from bytepair.load import load_tiktoken_bpe

enc: bytepair.Encoding = bytepair.get_encoding("cl100k_base")
ids: list[int] = enc.encode("hello", allowed_special="all")
n: int = enc.count("hello")
trained: bytepair.Encoding = bytepair.train(["a b c"], vocab_size=300)
loaded: bytepair.Encoding = bytepair.load("saved-dir")
counts = bytepair.WordCounts(["a b"])
again: bytepair.Encoding = bytepair.train_from_counts(counts, vocab_size=300)
ranks: dict[bytes, int] = load_tiktoken_bpe("x.tiktoken")
vectors = embed.gather(np.zeros((4, 2), np.float32), np.zeros((3, 2), np.int64))
scores, found = embed.Index(np.zeros((5, 2), np.float32)).search(np.zeros((1, 2), np.float32), 2)
"""


def test_user_code_type_checks(tmp_path):
    """What users write against the contract passes mypy: `bytepair.load(path)` and
    `bytepair.train(...)` are functions returning an Encoding to a type checker (they are callable
    submodules at run time)."""
    (tmp_path / "user.py").write_text(USER_CODE)
    _run_mypy(tmp_path, "mypy", "--strict", "user.py")


def test_package_type_checks(tmp_path):
    """The package's own sources pass mypy (optional dependencies without stubs aside)."""
    src = Path(__file__).resolve().parent.parent / "python" / "bytepair"
    if not src.is_dir():
        pytest.skip("needs the source tree")
    _run_mypy(tmp_path, "mypy", "--ignore-missing-imports", str(src))


@pytest.mark.parametrize(
    ("pat", "text"),
    [
        (r"(a(?i)b)c|\S|\s", "aBC"),  # an inline flag inside a group
        (r"(?=x|(x))\1x|\S+|\s+", "xxx"),  # a lookahead that captures
        (r"(a)?(?(1)(?:b|c))|\S|\s", "ac"),  # a conditional
        (r"(b*)(?<!\1)c|\S", "bbc"),  # a backreference in a lookbehind
    ],
)
def test_custom_patterns_split_as_tiktokens_regex_engine(pat, text, tiktoken):
    # The same regex engine version as tiktoken 0.14: later ones split these differently.
    ranks = bytepair.get_encoding("cl100k_base")._mergeable_ranks

    def run(lib):
        return outcome(lambda: lib.Encoding("p", pat_str=pat, mergeable_ranks=ranks, special_tokens={}).encode(text))

    assert run(bytepair) == run(tiktoken)


def test_custom_patterns_handle_million_character_runs(tiktoken):
    """A custom (regex) pattern on one piece of a million characters: tiktoken's regex engine
    does it, and so must bytepair's generic path (an older engine ran out of backtracking
    stack). Whitespace runs that long fail in tiktoken itself, so they are left out."""
    pat = r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"""
    ranks = bytepair.get_encoding("cl100k_base")._mergeable_ranks
    bp = bytepair.Encoding("llama3ish", pat_str=pat, mergeable_ranks=ranks, special_tokens={})
    tt = tiktoken.Encoding("llama3ish", pat_str=pat, mergeable_ranks=ranks, special_tokens={})
    for unit in ("a", "é", "中", "!"):
        text = unit * 1_000_000
        assert bp.encode_ordinary(text) == tt.encode_ordinary(text), unit


def test_an_allowed_special_token_is_found_inside_a_longer_one():
    """When a longer special token starts with an allowed one but is not allowed itself, the
    allowed one is used (tiktoken's choice between overlapping tokens follows its hash order)."""
    base = {bytes([i]): i for i in range(256)}
    enc = bytepair.Encoding(
        "ov", pat_str=r"\S+|\s+", mergeable_ranks=base, special_tokens={"<|im|>": 300, "<|im|>user": 301}
    )
    user = enc.encode_ordinary("user")
    assert enc.encode("<|im|>user", allowed_special={"<|im|>"}, disallowed_special=()) == [300, *user]
    assert enc.encode("x<|im|>user<|im|>", allowed_special={"<|im|>"}, disallowed_special=()) == [
        *enc.encode_ordinary("x"),
        300,
        *user,
        300,
    ]
    assert enc.encode("<|im|>user", allowed_special="all") == [301]
    assert enc.encode("<|im|>user", allowed_special={"<|im|>user"}, disallowed_special=()) == [301]
    assert enc.count("<|im|>user", allowed_special={"<|im|>"}, disallowed_special=()) == 1 + len(user)
    with pytest.raises(ValueError, match="disallowed special token"):
        enc.encode("<|im|>user", allowed_special={"<|im|>"})


def test_encoding_constructors_hold_the_built_in_encodings(tiktoken):
    # As in tiktoken, once the encodings are listed, ENCODING_CONSTRUCTORS maps every name to a
    # function returning Encoding's keyword arguments (gpt2 needs other files in tiktoken).
    bytepair.list_encoding_names()
    tiktoken.list_encoding_names()
    ours, theirs = bytepair.registry.ENCODING_CONSTRUCTORS, tiktoken.registry.ENCODING_CONSTRUCTORS
    assert list(ours)[: len(theirs)] == list(theirs)
    for name in ("r50k_base", "p50k_edit", "cl100k_base", "o200k_harmony"):
        a, b = ours[name](), theirs[name]()
        assert {k: v for k, v in a.items() if k != "mergeable_ranks"} == {
            k: v for k, v in b.items() if k != "mergeable_ranks"
        }
        assert len(a["mergeable_ranks"]) == len(b["mergeable_ranks"])
    r50k = ours["r50k_base"]()
    assert r50k["mergeable_ranks"] == theirs["r50k_base"]()["mergeable_ranks"]
    assert bytepair.Encoding(**r50k).encode("hello world") == [31373, 995]


@pytest.mark.parametrize(("pat", "text"), [(r"a*|\S|\s", "bab"), (r"a*|\S|\s", "aab <s>b<s>"), (r"\s*|\S+", "x  y ")])
def test_empty_matches_of_a_custom_pattern_encode_as_the_empty_token(pat, text, tiktoken):
    # tiktoken encodes every match, an empty one as the empty token (when the ranks have one:
    # without it tiktoken panics; bytepair then has nothing to add for it), also in the empty
    # text before, between and after special tokens.
    ranks = {bytes([i]): i for i in range(256)} | {b"": 256}
    bp, tt = (
        lib.Encoding("e", pat_str=pat, mergeable_ranks=ranks, special_tokens={"<s>": 300})
        for lib in (bytepair, tiktoken)
    )
    for t in (text, "<s>" + text + "<s>", ""):
        want = tt.encode(t, allowed_special="all")
        assert 256 in want or t == ""
        assert bp.encode(t, allowed_special="all") == want
        assert bp.count(t, allowed_special="all") == len(want)
        assert bp.encode_ordinary(t.replace("<s>", "")) == tt.encode_ordinary(t.replace("<s>", ""))
    # Training on such a pattern counts no empty words.
    counts = bytepair.WordCounts(["bab aab"], pattern=r"a*|\S|\s", progress=False)
    assert b"" not in dict(counts.most_common(100))


@pytest.mark.parametrize(
    ("method", "args", "kwargs"),
    [
        ("encode_batch", (["<|endoftext|>", None],), {}),
        ("count_batch", (["<|endoftext|>", None],), {}),
        ("encode_batch", (["hi"],), {"allowed_special": {1}, "num_threads": 0}),
        ("encode_batch", (["hi", "<|endoftext|>"],), {"allowed_special": ["x"]}),
        ("decode_batch", ([[10**7], [-1]],), {}),
        ("decode_batch", ([[9468], [-1]],), {"errors": "strict"}),
        ("decode_bytes_batch", ([[10**7], [-1]],), {}),
        ("decode_tokens_bytes", ([10**7, -1],), {}),
        ("decode_tokens_bytes", ([100256, 1.5],), {}),
        ("decode_with_offsets", ([10**7, -1],), {}),
    ],
)
def test_the_first_bad_item_decides_the_exception(method, args, kwargs, bp_encodings, tt_encodings):
    # tiktoken handles the items in order; bytepair converts them all at once, then finds the
    # first failing item when the call fails.
    bp, tt = bp_encodings["cl100k_base"], tt_encodings["cl100k_base"]
    want = outcome(getattr(tt, "encode_batch" if method == "count_batch" else method), *args, **kwargs)
    assert want[0] == "raise"
    assert outcome(getattr(bp, method), *args, **kwargs) == want


def test_a_memory_error_is_not_retried_item_by_item():
    from bytepair.core import _first_error

    calls = []
    with pytest.raises(MemoryError):
        _first_error(calls.append, [1, 2, 3], MemoryError("too big"))
    assert calls == []
    with pytest.raises(OverflowError):
        _first_error(calls.append, [1, 2, 3], OverflowError("original"))
    assert calls == [1, 2, 3]
