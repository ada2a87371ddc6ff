"""bytepair: a fast, byte-identical drop-in for tiktoken, a BPE trainer and embedding kernels.

>>> import bytepair as tiktoken
>>> enc = tiktoken.get_encoding("cl100k_base")
>>> enc.decode(enc.encode("hello world"))
'hello world'
"""

from __future__ import annotations

from bytepair import core, model, registry
from bytepair import load as _load  # noqa: F401  (sets `bytepair.load`: the submodule, callable)
from bytepair._native import __version__
from bytepair.core import Encoding
from bytepair.load import dump_tiktoken_bpe, load_tiktoken_bpe
from bytepair.model import encoding_for_model, encoding_name_for_model
from bytepair.registry import get_encoding, list_encoding_names

__all__ = [
    "Encoding",
    "WordCounts",
    "__version__",
    "core",
    "dump_tiktoken_bpe",
    "embed",
    "encoding_for_model",
    "encoding_name_for_model",
    "get_encoding",
    "list_encoding_names",
    "load",
    "load_tiktoken_bpe",
    "model",
    "registry",
    "train",
    "train_from_counts",
]


TYPE_CHECKING = False
if TYPE_CHECKING:
    # For type checkers, what these names are called as: `bytepair.load(path)` and
    # `bytepair.train(data, ...)`. At run time they are the submodules, made callable (and
    # `from bytepair.load import load_tiktoken_bpe` still finds the module).
    from bytepair import embed as embed
    from bytepair.train import WordCounts as WordCounts
    from bytepair.train import load as load
    from bytepair.train import train as train
    from bytepair.train import train_from_counts as train_from_counts


def __getattr__(name: str):  # type: ignore[no-untyped-def]
    # The trainer and the embedding kernels load on first use, to keep `import bytepair` fast.
    # `bytepair.train` is the submodule, which is callable as `bytepair.train(data, ...)`.
    if name in ("train", "train_from_counts", "WordCounts"):
        import bytepair.train as train_module

        return train_module if name == "train" else getattr(train_module, name)
    if name == "embed":
        import bytepair.embed as embed_module

        return embed_module
    if name == "_tiktoken":
        # tiktoken's native module name (`tiktoken._tiktoken.CoreBPE`).
        import bytepair._tiktoken as native_alias

        return native_alias
    raise AttributeError(f"module 'bytepair' has no attribute {name!r}")


def __dir__() -> list[str]:
    # The names loaded on first use (`__getattr__`) are listed before that too.
    return sorted(set(globals()) | set(__all__) | {"_tiktoken"})
