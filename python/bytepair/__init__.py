"""bytepair: a fast, byte-identical drop-in for tiktoken, a BPE trainer and embedding kernels.

>>> import bytepair as tiktoken
>>> enc = tiktoken.get_encoding("cl100k_base")
>>> enc.decode(enc.encode("hello world"))
'hello world'
"""
from __future__ import annotations

from bytepair import core, load, model, registry
from bytepair._native import __version__
from bytepair.core import Encoding
from bytepair.load import dump_tiktoken_bpe, load_tiktoken_bpe
from bytepair.model import encoding_for_model, encoding_name_for_model
from bytepair.registry import get_encoding, list_encoding_names

__all__ = [
    "Encoding",
    "__version__",
    "core",
    "dump_tiktoken_bpe",
    "encoding_for_model",
    "encoding_name_for_model",
    "get_encoding",
    "list_encoding_names",
    "load",
    "load_tiktoken_bpe",
    "model",
    "registry",
]
