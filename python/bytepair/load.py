"""Rank files: reading (local paths and URLs, with tiktoken's cache rules) and writing."""

from __future__ import annotations

import os

__all__ = [
    "check_hash",
    "data_gym_to_mergeable_bpe_ranks",
    "dump_tiktoken_bpe",
    "load_tiktoken_bpe",
    "read_file",
    "read_file_cached",
]


def read_file(blobpath: str) -> bytes:
    """Reads a local path, or an ``http(s)://`` URL (other schemes need ``blobfile``).

    >>> read_file("tiny.tiktoken")[:6]
    b'YQ== 0'
    """
    if "://" not in blobpath:
        with open(blobpath, "rb", buffering=0) as f:
            return f.read()
    if blobpath.startswith(("http://", "https://")):
        try:
            import requests
        except ImportError:
            return _read_url(blobpath)
        # With requests (which tiktoken fetches with), errors have tiktoken's types:
        # requests.HTTPError for a 404, requests.ConnectionError for a refused connection.
        resp = requests.get(blobpath, timeout=60)
        resp.raise_for_status()
        return resp.content
    try:
        import blobfile
    except ImportError as e:
        raise ImportError("blobfile is not installed. Please install it by running `pip install blobfile`.") from e
    return blobfile.read_bytes(blobpath)


def _read_url(url: str) -> bytes:
    """``read_file`` of a URL without requests: errors are urllib's (``urllib.error.HTTPError``,
    ``urllib.error.URLError``)."""
    import urllib.request

    with urllib.request.urlopen(url, timeout=60) as resp:  # noqa: S310 (user-given URL)
        data = resp.read()
        # A body stored compressed (as object stores serve it) is decoded, as requests does.
        if resp.headers.get("Content-Encoding", "").strip().lower() in ("gzip", "x-gzip"):
            import gzip

            data = gzip.decompress(data)
        return data


def check_hash(data: bytes, expected_hash: str) -> bool:
    """Whether ``data``'s SHA-256 hex digest is ``expected_hash``.

    >>> check_hash(b"abc", "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
    True
    """
    import hashlib

    return hashlib.sha256(data).hexdigest() == expected_hash


def _cache_dir() -> tuple[str, bool]:
    if "TIKTOKEN_CACHE_DIR" in os.environ:
        return os.environ["TIKTOKEN_CACHE_DIR"], True
    if "DATA_GYM_CACHE_DIR" in os.environ:
        return os.environ["DATA_GYM_CACHE_DIR"], True
    import tempfile

    return os.path.join(tempfile.gettempdir(), "data-gym-cache"), False


def read_file_cached(blobpath: str, expected_hash: str | None = None) -> bytes:
    """Reads ``blobpath`` through the cache directory (``TIKTOKEN_CACHE_DIR``, else
    ``DATA_GYM_CACHE_DIR``, else a temp folder; an empty value disables caching), keyed by
    ``sha1(blobpath)``. A cached copy with the wrong hash is fetched again; fetched data with the
    wrong hash raises ``ValueError``.

    >>> data = read_file_cached("https://example.com/my.tiktoken", expected_hash=None)  # doctest: +SKIP
    """
    cache_dir, user_specified = _cache_dir()
    if cache_dir == "":
        return read_file(blobpath)
    import hashlib

    cache_path = os.path.join(cache_dir, hashlib.sha1(blobpath.encode()).hexdigest())
    if os.path.exists(cache_path):
        with open(cache_path, "rb", buffering=0) as f:
            data = f.read()
        if expected_hash is None or check_hash(data, expected_hash):
            return data
        try:
            os.remove(cache_path)
        except OSError:
            pass
    contents = read_file(blobpath)
    if expected_hash and not check_hash(contents, expected_hash):
        raise ValueError(
            f"Hash mismatch for data downloaded from {blobpath} (expected {expected_hash}). "
            "This may indicate a corrupted download. Please try again."
        )
    import uuid

    try:
        os.makedirs(cache_dir, exist_ok=True)
        tmp = f"{cache_path}.{uuid.uuid4()}.tmp"
        with open(tmp, "wb") as f:
            f.write(contents)
        os.replace(tmp, cache_path)
    except OSError:
        if user_specified:
            raise
    return contents


def load_tiktoken_bpe(tiktoken_bpe_file: str, expected_hash: str | None = None) -> dict[bytes, int]:
    """Reads a ``.tiktoken`` rank file (path or URL) into ``{token bytes: rank}``.

    Malformed lines raise ``ValueError`` naming the line.

    >>> import tempfile, os
    >>> p = os.path.join(tempfile.mkdtemp(), "tiny.tiktoken")
    >>> dump_tiktoken_bpe({b"a": 0, b"b": 1, b"ab": 2}, p)
    >>> load_tiktoken_bpe(p)
    {b'a': 0, b'b': 1, b'ab': 2}
    """
    import base64

    contents = read_file_cached(tiktoken_bpe_file, expected_hash)
    ret: dict[bytes, int] = {}
    for lineno, line in enumerate(contents.splitlines(), 1):
        if not line:
            continue
        try:
            token, rank = line.split()
            ret[base64.b64decode(token)] = int(rank)  # not validated, as in tiktoken
        except Exception as e:
            raise ValueError(f"Error parsing line {lineno} ({line[:80]!r}) in {tiktoken_bpe_file}") from e
    return ret


def dump_tiktoken_bpe(bpe_ranks: dict[bytes, int], tiktoken_bpe_file: str) -> None:
    """Writes ``{token bytes: rank}`` as a ``.tiktoken`` file (sorted by rank). Local paths are
    written directly; other URLs need ``blobfile``.

    >>> dump_tiktoken_bpe({b"a": 0, b"b": 1, b"ab": 2}, "tiny.tiktoken")
    >>> open("tiny.tiktoken", "rb").read().split()
    [b'YQ==', b'0', b'Yg==', b'1', b'YWI=', b'2']
    """
    import base64

    lines = b"".join(
        base64.b64encode(token) + b" " + str(rank).encode() + b"\n"
        for token, rank in sorted(bpe_ranks.items(), key=lambda x: x[1])
    )
    if "://" in tiktoken_bpe_file:
        try:
            import blobfile
        except ImportError as e:
            raise ImportError("blobfile is not installed. Please install it by running `pip install blobfile`.") from e
        with blobfile.BlobFile(tiktoken_bpe_file, "wb") as f:
            f.write(lines)
        return
    with open(tiktoken_bpe_file, "wb") as f:
        f.write(lines)


def data_gym_to_mergeable_bpe_ranks(
    vocab_bpe_file: str,
    encoder_json_file: str,
    vocab_bpe_hash: str | None = None,
    encoder_json_hash: str | None = None,
    clobber_one_byte_tokens: bool = False,
) -> dict[bytes, int]:
    """Converts GPT-2's ``vocab.bpe`` + ``encoder.json`` pair into mergeable ranks.

    >>> ranks = data_gym_to_mergeable_bpe_ranks("gpt2/vocab.bpe", "gpt2/encoder.json")  # doctest: +SKIP
    >>> len(ranks)  # doctest: +SKIP
    50256
    """
    # GPT-2 maps each byte to a printable char: printable non-space bytes map to themselves,
    # the rest to 256, 257, ... in byte order.
    printable = [b for b in range(256) if chr(b).isprintable() and chr(b) != " "]
    char_to_byte = {chr(b): b for b in printable}
    rank_order = list(printable)
    extra = 0
    for b in range(256):
        if b not in char_to_byte.values():
            char_to_byte[chr(256 + extra)] = b
            rank_order.append(b)
            extra += 1

    def decode(value: str) -> bytes:
        return bytes(char_to_byte[c] for c in value)

    ranks = {bytes([b]): i for i, b in enumerate(rank_order)}
    merges = read_file_cached(vocab_bpe_file, vocab_bpe_hash).decode().split("\n")[1:-1]
    # Each line takes the next rank, a repeated merge too (its first rank is then overwritten),
    # as GPT-2's encoder.json counts them.
    for n, line in enumerate(merges, start=len(ranks)):
        first, second = line.split()
        ranks[decode(first) + decode(second)] = n

    import json

    encoder = {decode(k): v for k, v in json.loads(read_file_cached(encoder_json_file, encoder_json_hash)).items()}
    encoder.pop(b"<|endoftext|>", None)
    encoder.pop(b"<|startoftext|>", None)
    if clobber_one_byte_tokens:
        for k, v in encoder.items():
            if len(k) == 1:
                ranks[k] = v
    assert ranks == encoder
    return ranks


def load_encoding(path: str):  # type: ignore[no-untyped-def]
    """Reads an encoding written by :meth:`bytepair.Encoding.save` (also callable as
    ``bytepair.load(path)``)."""
    from bytepair.train import load

    return load(path)


class _CallableModule(type(os)):  # type: ignore[misc]
    """Lets ``bytepair.load`` be both this module (tiktoken's ``tiktoken.load``) and the
    function ``bytepair.load(path)`` of the contract."""

    def __call__(self, path: str):  # type: ignore[no-untyped-def]
        return load_encoding(path)


import sys as _sys  # noqa: E402

_sys.modules[__name__].__class__ = _CallableModule
