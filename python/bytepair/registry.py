"""Encoding registry: the built-in encodings (compiled into the wheel) and plugins.

Plugins register the way tiktoken's do: a module in the ``bytepair_ext`` (or ``tiktoken_ext``)
namespace package with an ``ENCODING_CONSTRUCTORS`` dict of name -> function returning the
keyword arguments of :class:`bytepair.Encoding`.
"""

from __future__ import annotations

import threading

from bytepair import _native
from bytepair.core import Encoding

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Callable, Sequence

__all__ = ["ENCODINGS", "ENCODING_CONSTRUCTORS", "get_encoding", "list_encoding_names"]

ENDOFTEXT = "<|endoftext|>"
FIM_PREFIX = "<|fim_prefix|>"
FIM_MIDDLE = "<|fim_middle|>"
FIM_SUFFIX = "<|fim_suffix|>"
ENDOFPROMPT = "<|endofprompt|>"

_lock = threading.RLock()
ENCODINGS: dict[str, Encoding] = {}
ENCODING_CONSTRUCTORS: dict[str, Callable[[], dict[str, Any]]] | None = None


def _harmony_specials() -> dict[str, int]:
    named = {
        "<|startoftext|>": 199998,
        ENDOFTEXT: 199999,
        "<|reserved_200000|>": 200000,
        "<|reserved_200001|>": 200001,
        "<|return|>": 200002,
        "<|constrain|>": 200003,
        "<|reserved_200004|>": 200004,
        "<|channel|>": 200005,
        "<|start|>": 200006,
        "<|end|>": 200007,
        "<|message|>": 200008,
        "<|reserved_200009|>": 200009,
        "<|reserved_200010|>": 200010,
        "<|reserved_200011|>": 200011,
        "<|call|>": 200012,
    }
    return {ENDOFTEXT: 199999, ENDOFPROMPT: 200018, **named} | {f"<|reserved_{i}|>": i for i in range(200013, 201088)}


# name -> (bundled rank file, pattern name, special tokens, explicit_n_vocab)
_BUILTINS: dict[str, tuple[str, str, Callable[[], dict[str, int]], int | None]] = {
    "gpt2": ("r50k_base", "gpt2", lambda: {ENDOFTEXT: 50256}, 50257),
    "r50k_base": ("r50k_base", "r50k_base", lambda: {ENDOFTEXT: 50256}, 50257),
    "p50k_base": ("p50k_base", "p50k_base", lambda: {ENDOFTEXT: 50256}, 50281),
    "p50k_edit": (
        "p50k_base",
        "p50k_edit",
        lambda: {ENDOFTEXT: 50256, FIM_PREFIX: 50281, FIM_MIDDLE: 50282, FIM_SUFFIX: 50283},
        None,
    ),
    "cl100k_base": (
        "cl100k_base",
        "cl100k_base",
        lambda: {ENDOFTEXT: 100257, FIM_PREFIX: 100258, FIM_MIDDLE: 100259, FIM_SUFFIX: 100260, ENDOFPROMPT: 100276},
        None,
    ),
    "o200k_base": ("o200k_base", "o200k_base", lambda: {ENDOFTEXT: 199999, ENDOFPROMPT: 200018}, None),
    "o200k_harmony": ("o200k_base", "o200k_harmony", _harmony_specials, None),
}


def _builtin(name: str) -> Encoding:
    rank_file, pattern_name, specials, n_vocab = _BUILTINS[name]
    special_tokens = specials()
    pattern = _native.builtin_pattern(pattern_name)
    assert pattern is not None, pattern_name
    core = _native.CoreBPE.builtin(rank_file, special_tokens, pattern)
    return Encoding._from_core(name, core, special_tokens, n_vocab)


def _builtin_constructor(name: str) -> Callable[[], dict[str, Any]]:
    """A constructor for ``ENCODING_CONSTRUCTORS`` as tiktoken's ``openai_public`` has: the
    keyword arguments of ``Encoding`` (the ranks as a dict, made when called)."""

    def constructor() -> dict[str, Any]:
        enc = get_encoding(name)
        kwargs: dict[str, Any] = {
            "name": name,
            "pat_str": enc._pat_str,
            "mergeable_ranks": enc._mergeable_ranks,
            "special_tokens": dict(enc._special_tokens),
        }
        if _BUILTINS[name][3] is not None:
            kwargs["explicit_n_vocab"] = _BUILTINS[name][3]
        return kwargs

    constructor.__name__ = constructor.__qualname__ = name
    return constructor


_plugin_modules: list[str] | None = None


def _available_plugin_modules() -> Sequence[str]:
    global _plugin_modules
    if _plugin_modules is not None:
        return _plugin_modules
    import importlib
    import pkgutil

    mods = []
    for ns in ("bytepair_ext", "tiktoken_ext"):
        try:
            pkg = importlib.import_module(ns)
        except ImportError:
            continue
        for _, mod_name, _ in pkgutil.iter_modules(pkg.__path__, ns + "."):
            if mod_name != "tiktoken_ext.openai_public":  # those encodings are built in here
                mods.append(mod_name)
    _plugin_modules = mods
    return mods


def _find_constructors() -> None:
    global ENCODING_CONSTRUCTORS
    with _lock:
        if ENCODING_CONSTRUCTORS is not None:
            return
        import importlib

        # The built-in encodings first, as tiktoken lists openai_public's (get_encoding builds
        # them from the bundled files without calling these).
        found: dict[str, Callable[[], dict[str, Any]]] = {name: _builtin_constructor(name) for name in _BUILTINS}
        for mod_name in _available_plugin_modules():
            mod = importlib.import_module(mod_name)
            try:
                constructors = mod.ENCODING_CONSTRUCTORS
            except AttributeError as e:
                raise ValueError(f"plugin {mod_name} does not define ENCODING_CONSTRUCTORS") from e
            for enc_name, constructor in constructors.items():
                if enc_name in _BUILTINS:
                    continue  # a plugin never replaces a built-in encoding
                if enc_name in found:
                    raise ValueError(f"Duplicate encoding name {enc_name} in plugin {mod_name}")
                found[enc_name] = constructor
        ENCODING_CONSTRUCTORS = found


def get_encoding(encoding_name: str) -> Encoding:
    """The encoding with this name: a built-in one (no file or network access) or a plugin's.

    >>> get_encoding("o200k_base").encode("hello world")
    [24912, 2375]
    """
    if not isinstance(encoding_name, str):
        raise ValueError(f"Expected a string in get_encoding, got {type(encoding_name)}")
    enc = ENCODINGS.get(encoding_name)
    if enc is not None:
        return enc
    with _lock:
        if encoding_name in ENCODINGS:
            return ENCODINGS[encoding_name]
        if encoding_name in _BUILTINS:
            enc = _builtin(encoding_name)
        else:
            _find_constructors()
            assert ENCODING_CONSTRUCTORS is not None
            if encoding_name not in ENCODING_CONSTRUCTORS:
                raise ValueError(
                    f"Unknown encoding {encoding_name}.\n"
                    f"Built-in encodings: {list(_BUILTINS)}\n"
                    f"Plugins found: {list(_available_plugin_modules())}\n"
                    f"bytepair version: {_native.__version__}"
                )
            enc = Encoding(**ENCODING_CONSTRUCTORS[encoding_name]())
        ENCODINGS[encoding_name] = enc
        return enc


def list_encoding_names() -> list[str]:
    """Names of the built-in encodings followed by those of installed plugins.

    >>> list_encoding_names()[:3]
    ['gpt2', 'r50k_base', 'p50k_base']
    """
    _find_constructors()
    assert ENCODING_CONSTRUCTORS is not None
    return list(ENCODING_CONSTRUCTORS)
