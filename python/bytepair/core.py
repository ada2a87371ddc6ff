"""`Encoding`: the tiktoken-compatible tokenizer object.

Every method gives the same tokens and raises the same exception types as tiktoken 0.14; the work
runs in Rust (``bytepair._native.CoreBPE``), with batches spread over a thread pool while the
interpreter is released.
"""

from __future__ import annotations

import functools
import math

from bytepair import _native

TYPE_CHECKING = False  # typing is not imported at run time: it keeps `import bytepair` fast
if TYPE_CHECKING:
    import os
    from typing import AbstractSet, Any, Callable, Collection, Iterable, Literal, NoReturn, Sequence, Union

    _Specials = Union[Literal["all"], Iterable[str]]

    import numpy as np
    import numpy.typing as npt

__all__ = ["Encoding"]


# What one item of a batch can raise (the native side raises exactly these types).
_ITEM_ERRORS = (TypeError, ValueError, KeyError, OverflowError, UnicodeEncodeError, UnicodeDecodeError)


def _first_error(one: Callable[[Any], object], items: Sequence[Any], error: Exception) -> NoReturn:
    """Raises the error that ``one`` gives on the first item that fails, else ``error``.

    Why: a batch call converts and checks all its items at once, where tiktoken handles them in
    order, so when two items are bad in different ways (a disallowed special in the first, a
    non-str second), tiktoken's exception is the first item's. Only failed calls pay this, and
    not for ``MemoryError``, which the items would only hit again one by one, nor for any
    exception an item cannot raise (one from a signal handler, such as a deadline's): those are
    raised at once rather than after redoing the batch item by item.
    """
    if type(error) not in _ITEM_ERRORS:
        raise error
    for item in items:
        one(item)
    raise error


def _check_errors(errors: str) -> None:
    """What ``bytes.decode`` checks of ``errors`` even when the bytes are valid UTF-8 (its type;
    in development mode, ``-X dev``, the handler's name): a text made natively must not skip it."""
    if type(errors) is not str or errors != "replace":
        b"".decode("utf-8", errors)


def _fix_surrogates(text: str) -> str:
    # tiktoken's rule: paired surrogates become their code point, lone ones U+FFFD.
    return text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")


def _check_threads(num_threads: int | float | None) -> int:
    """The thread count to pass down: 0 (one per core) for ``None``, else at least 1.

    tiktoken hands the count to a ``ThreadPoolExecutor``, which takes ``None`` (its default),
    floats and any large int, and refuses a count below 1 with ValueError; so does bytepair.
    The native side never starts more threads than the cores this process may use.
    """
    if num_threads.__class__ is int and 0 < num_threads <= 1 << 16:  # type: ignore[operator]
        return num_threads  # the common case, without the calls below (this runs on every encode)
    if num_threads is None:
        return 0
    if num_threads <= 0:  # TypeError for what cannot be compared, as in tiktoken
        raise ValueError(f"num_threads must be greater than 0, not {num_threads}")
    return math.ceil(min(num_threads, 1 << 16))


def _is_str_set(s: object) -> bool:
    return isinstance(s, (set, frozenset)) and all(isinstance(t, str) for t in s)


class Encoding:
    """A byte-pair encoding: mergeable ranks, a split pattern and special tokens.

    >>> import bytepair
    >>> enc = bytepair.get_encoding("cl100k_base")
    >>> enc.encode("hello world")
    [15339, 1917]
    >>> enc.decode([15339, 1917])
    'hello world'
    """

    def __init__(
        self,
        name: str,
        *,
        pat_str: str,
        mergeable_ranks: dict[bytes, int],
        special_tokens: dict[str, int],
        explicit_n_vocab: int | None = None,
    ) -> None:
        """Creates an Encoding (same signature and checks as ``tiktoken.Encoding``).

        Args:
            name: The encoding's name.
            pat_str: The regex that splits text into pieces before merging.
            mergeable_ranks: Token bytes to rank; lower ranks merge first.
            special_tokens: Special-token strings to their ids.
            explicit_n_vocab: If given, the total vocabulary size, which is checked.

        >>> enc = Encoding("tiny", pat_str=r"\\S+|\\s+",
        ...                mergeable_ranks={bytes([i]): i for i in range(256)} | {b"ab": 256},
        ...                special_tokens={"<|eot|>": 257})
        >>> enc.encode("abc <|eot|>", allowed_special="all")
        [256, 99, 32, 257]
        """
        self.name = name
        self._pat_str = pat_str
        self._mergeable_ranks_cache: dict[bytes, int] | None = mergeable_ranks
        self._special_tokens = special_tokens
        self.max_token_value = max(max(mergeable_ranks.values()), max(special_tokens.values(), default=0))
        if explicit_n_vocab:
            assert len(mergeable_ranks) + len(special_tokens) == explicit_n_vocab
            assert self.max_token_value == explicit_n_vocab - 1
        self._special_token_values = set(special_tokens.values())
        self._core_bpe = _native.CoreBPE(mergeable_ranks, special_tokens, pat_str)
        self._native_specials = frozenset(special_tokens)

    @classmethod
    def _from_core(
        cls,
        name: str,
        core: _native.CoreBPE,
        special_tokens: dict[str, int],
        explicit_n_vocab: int | None = None,
    ) -> Encoding:
        """Wraps a native encoder; the mergeable-ranks dict is built only if someone reads it."""
        self = cls.__new__(cls)
        self.name = name
        self._pat_str = core.pattern
        self._mergeable_ranks_cache = None
        self._special_tokens = special_tokens
        self.max_token_value = max(core.max_mergeable_rank or 0, max(special_tokens.values(), default=0))
        if explicit_n_vocab:
            assert core.n_mergeable + len(special_tokens) == explicit_n_vocab
            assert self.max_token_value == explicit_n_vocab - 1
        self._native_specials = frozenset(special_tokens)
        self._special_token_values = set(special_tokens.values())
        self._core_bpe = core
        return self

    @property
    def _mergeable_ranks(self) -> dict[bytes, int]:
        if self._mergeable_ranks_cache is None:
            self._mergeable_ranks_cache = self._core_bpe.mergeable_ranks()
        return self._mergeable_ranks_cache

    @_mergeable_ranks.setter
    def _mergeable_ranks(self, value: dict[bytes, int]) -> None:
        self._mergeable_ranks_cache = value

    def __repr__(self) -> str:
        return f"<Encoding {self.name!r}>"

    # ------------------------------------------------------------------ encoding

    def _spelled_out(self, allowed_special, disallowed_special):  # type: ignore[no-untyped-def]
        """tiktoken reads ``"all"`` from ``special_tokens_set``: once that set has been read, and
        so may have been changed (assigned, or mutated in place), ``"all"`` is spelled out from it
        whenever it differs from the encoding's own special tokens."""
        names = self.special_tokens_set
        if names == self._native_specials:
            return allowed_special, disallowed_special
        if allowed_special == "all":
            allowed_special = names
        if disallowed_special == "all":
            disallowed_special = names - allowed_special
        return allowed_special, disallowed_special

    def _all_changed(self) -> bool:
        """Whether ``"all"`` may mean other names than the native encoder's special tokens: the
        ``special_tokens_set`` in use (a subclass's, one assigned, one changed in place, or one
        made from a changed ``_special_tokens``) differs from them. Constant time once the set is
        made; it is made on the first call, as tiktoken's first ``encode`` makes it."""
        names = self.__dict__.get("special_tokens_set")
        if names is None:
            if self.__class__ is not Encoding and self._replaced("special_tokens_set"):
                return True
            names = self.special_tokens_set
        return names.__class__ is not _NameSet or names.changed

    def _special_args(
        self,
        text: str | None,
        allowed_special: Literal["all"] | AbstractSet[str],
        disallowed_special: Literal["all"] | Collection[str],
    ) -> tuple[_Specials, _Specials]:
        """Normalises tiktoken's allowed/disallowed arguments for the native encoder.

        Disallowed strings that are not special tokens are checked here, exactly as tiktoken does;
        the native encoder checks special tokens in the same pass that encodes.
        """
        if self._all_changed():
            allowed_special, disallowed_special = self._spelled_out(allowed_special, disallowed_special)
        if allowed_special.__class__ is set and not allowed_special and disallowed_special == "all":
            return allowed_special, "all"  # the defaults, without the general checks below
        if allowed_special != "all" and not _is_str_set(allowed_special):
            # tiktoken's native layer takes only a set of str (or "all"), and it looks for
            # disallowed tokens first; keep both the order and the exception types.
            disallowed: AbstractSet[str]
            if disallowed_special == "all":
                disallowed = self.special_tokens_set - allowed_special  # TypeError unless a Set
            else:
                disallowed = frozenset(disallowed_special) if disallowed_special else frozenset()
            if text is not None and disallowed:
                if match := _special_token_regex(frozenset(disallowed)).search(text):
                    raise_disallowed_special_token(match.group())
            raise TypeError(f'allowed_special must be "all" or a set of str, not {allowed_special!r:.100}')
        if disallowed_special == "all":
            return allowed_special, "all"
        if not disallowed_special:
            return allowed_special, ()
        forbidden = frozenset(disallowed_special)
        if text is not None and not forbidden <= self._native_specials:
            if match := _special_token_regex(forbidden).search(text):
                raise_disallowed_special_token(match.group())
            return allowed_special, ()
        return allowed_special, forbidden

    def encode_ordinary(self, text: str, *, num_threads: int = 1) -> list[int]:
        """Encodes a string into tokens, ignoring special tokens.

        With ``num_threads > 1`` a large text (megabytes) is cut at piece boundaries and encoded
        on several threads (at most one per usable core); the tokens are identical.

        >>> enc.encode_ordinary("hello world")
        [15339, 1917]
        """
        core = self._core_bpe
        method: Callable[[str], list[int]] = core.encode_ordinary
        if num_threads.__class__ is not int or num_threads != 1:
            num_threads = _check_threads(num_threads)
            if num_threads != 1:
                method = lambda t: core.encode_ordinary_parallel(t, num_threads)  # noqa: E731
        try:
            return method(text)
        except UnicodeEncodeError:
            return method(_fix_surrogates(text))

    def encode(
        self,
        text: str,
        *,
        allowed_special: Literal["all"] | AbstractSet[str] = set(),  # noqa: B006
        disallowed_special: Literal["all"] | Collection[str] = "all",
    ) -> list[int]:
        """Encodes a string into tokens.

        Text that spells a special token raises ``ValueError`` unless the token is in
        ``allowed_special`` (then it becomes that token) or left out of ``disallowed_special``
        (then it is encoded as ordinary text).

        >>> enc.encode("hello world")
        [15339, 1917]
        >>> enc.encode("<|endoftext|>", allowed_special={"<|endoftext|>"})
        [100257]
        >>> enc.encode("<|endoftext|>", disallowed_special=())
        [27, 91, 8862, 728, 428, 91, 29]
        """
        a, d = self._special_args(text, allowed_special, disallowed_special)
        try:
            return self._core_bpe.encode(text, a, d)
        except UnicodeEncodeError:
            return self._core_bpe.encode(self._fixed(text, a, d), a, ())

    def encode_to_numpy(
        self,
        text: str,
        *,
        allowed_special: Literal["all"] | AbstractSet[str] = set(),  # noqa: B006
        disallowed_special: Literal["all"] | Collection[str] = "all",
    ) -> npt.NDArray[np.uint32]:
        """Encodes a string into a uint32 numpy array (no intermediate list).

        >>> enc.encode_to_numpy("hello world")
        array([15339,  1917], dtype=uint32)
        """
        # Import numpy here, where a failure (or a Ctrl-C during the import) is an ordinary
        # exception; the native code then finds it loaded. (Not at module import: numpy would
        # triple the time `import bytepair` takes.)
        import numpy  # noqa: F401

        a, d = self._special_args(text, allowed_special, disallowed_special)
        try:
            return self._core_bpe.encode_to_numpy(text, a, d)
        except UnicodeEncodeError:
            return self._core_bpe.encode_to_numpy(self._fixed(text, a, d), a, ())

    def count(
        self,
        text: str,
        *,
        allowed_special: Literal["all"] | AbstractSet[str] = set(),  # noqa: B006
        disallowed_special: Literal["all"] | Collection[str] = "all",
    ) -> int:
        """The number of tokens ``encode`` would return, without building the list.

        >>> enc.count("hello world")
        2
        """
        a, d = self._special_args(text, allowed_special, disallowed_special)
        try:
            return self._core_bpe.count(text, a, d)
        except UnicodeEncodeError:
            return self._core_bpe.count(self._fixed(text, a, d), a, ())

    def _batch(self, method, texts, num_threads, specials=None):  # type: ignore[no-untyped-def]
        """``method(texts, [allowed, disallowed,] threads)``; texts with lone surrogates are
        repaired and encoded again (looking for disallowed specials in them as given first)."""
        threads = _check_threads(num_threads)
        texts = list(texts)  # as in tiktoken, a str is a sequence of one-character texts
        try:
            return method(texts, *(specials or ()), threads)
        except UnicodeEncodeError:
            if specials is None:
                return method([_fix_surrogates(t) if isinstance(t, str) else t for t in texts], threads)
            a, d = specials
            return method([self._fixed(t, a, d) if isinstance(t, str) else t for t in texts], a, (), threads)

    def _special_batch(self, native, one, texts, allowed_special, disallowed_special, num_threads):  # type: ignore[no-untyped-def]
        """``native`` (a batch method of the core) over ``texts`` with the special-token
        arguments checked as tiktoken does; on failure, the first failing text's exception
        (``one`` is the single-text method)."""
        a, d, texts = self._batch_special_args(texts, allowed_special, disallowed_special, num_threads)
        try:
            return self._batch(native, texts, num_threads, (a, d))
        except Exception as e:
            _first_error(lambda t: one(t, allowed_special=a, disallowed_special=d), texts, e)

    def _replaced(self, name: str) -> bool:
        """Whether the method ``name`` is replaced, in a subclass or on this instance. tiktoken's
        batch and derived methods call the single-item method on ``self``, so a replacement
        decides their results too; bytepair then calls it the same way instead of the core.
        (Callers test ``self.__class__ is not Encoding or name in self.__dict__`` first: inline,
        that costs a third of this call.)"""
        if name in self.__dict__:
            return True
        cls = self.__class__
        return cls is not Encoding and getattr(cls, name) is not Encoding.__dict__[name]

    def _fixed(self, text: str, a: _Specials, d: _Specials) -> str:
        """``text`` with its lone surrogates replaced, for the native encoder (which takes valid
        UTF-8 only), after looking for disallowed special tokens in ``text`` as given: tiktoken
        looks first, and a pair of lone surrogates only spells its character once replaced."""
        if d:
            names = self.special_tokens_set - (self.special_tokens_set if a == "all" else set(a)) if d == "all" else d
            if names and (match := _special_token_regex(frozenset(names)).search(text)):
                raise_disallowed_special_token(match.group())
        return _fix_surrogates(text)

    def _batch_special_args(self, texts, allowed_special, disallowed_special, num_threads):  # type: ignore[no-untyped-def]
        # tiktoken's order: the "all" set first, then the frozenset of the disallowed ones, then the
        # thread pool (num_threads), then each text. Returns the texts as a list, taken after the
        # thread count is checked (so a generator is left whole when that fails, as tiktoken does).
        if self._all_changed():
            allowed_special, disallowed_special = self._spelled_out(allowed_special, disallowed_special)
        if allowed_special.__class__ is set and not allowed_special and disallowed_special == "all":
            _check_threads(num_threads)
            return allowed_special, "all", list(texts)  # the defaults, without the checks below
        if disallowed_special == "all" and allowed_special != "all":
            self.special_tokens_set - allowed_special  # type: ignore[operator]  # TypeError unless a set
        if disallowed_special != "all" and not isinstance(disallowed_special, frozenset):
            # Taken once for the whole batch, as tiktoken's frozenset() does: an iterator is not
            # used up by the first text's check, and None or a number is a TypeError.
            disallowed_special = frozenset(disallowed_special)
        _check_threads(num_threads)
        texts = list(texts)
        if allowed_special != "all" and not _is_str_set(allowed_special):
            # tiktoken encodes text by text, so the first text decides between its ValueError
            # (a disallowed token in it) and its TypeError (the non-set allowed_special).
            for t in texts:
                self._special_args(t, allowed_special, disallowed_special)
            return set(), (), texts  # only reached for an empty batch
        a, d = self._special_args(None, allowed_special, disallowed_special)
        if isinstance(d, frozenset) and not d <= self._native_specials:
            for t in texts:
                self._special_args(t, allowed_special, disallowed_special)
            d = ()
        return a, d, texts

    def encode_ordinary_batch(self, text: Sequence[str], *, num_threads: int = 8) -> list[list[int]]:
        """Encodes many strings in parallel (native threads), ignoring special tokens.

        Runs on up to ``num_threads`` threads, never more than the cores this process may use
        (extra threads would only compete for them); the results do not depend on the count.

        >>> enc.encode_ordinary_batch(["hello world", "goodbye world"])
        [[15339, 1917], [19045, 29474, 1917]]
        """
        if (self.__class__ is not Encoding or "encode_ordinary" in self.__dict__) and self._replaced("encode_ordinary"):
            _check_threads(num_threads)
            return [self.encode_ordinary(t) for t in text]
        return self._batch(self._core_bpe.encode_ordinary_batch, text, num_threads)

    def encode_batch(
        self,
        text: Sequence[str],
        *,
        num_threads: int = 8,
        allowed_special: Literal["all"] | AbstractSet[str] = set(),  # noqa: B006
        disallowed_special: Literal["all"] | Collection[str] = "all",
    ) -> list[list[int]]:
        """Encodes many strings in parallel; see :meth:`encode` for the special-token options.

        Threads as in :meth:`encode_ordinary_batch`.

        >>> enc.encode_batch(["hello world", "goodbye world"])
        [[15339, 1917], [19045, 29474, 1917]]
        """
        if (self.__class__ is not Encoding or "encode" in self.__dict__) and self._replaced("encode"):
            # tiktoken's arguments to each call: "all" spelled out, the disallowed ones a frozenset.
            if allowed_special == "all":
                allowed_special = self.special_tokens_set
            if disallowed_special == "all":
                disallowed_special = self.special_tokens_set - allowed_special  # type: ignore[operator]
            if not isinstance(disallowed_special, frozenset):
                disallowed_special = frozenset(disallowed_special)
            _check_threads(num_threads)
            return [
                self.encode(t, allowed_special=allowed_special, disallowed_special=disallowed_special) for t in text
            ]
        return self._special_batch(
            self._core_bpe.encode_batch, self.encode, text, allowed_special, disallowed_special, num_threads
        )

    def count_batch(
        self,
        texts: Sequence[str],
        *,
        num_threads: int = 8,
        allowed_special: Literal["all"] | AbstractSet[str] = set(),  # noqa: B006
        disallowed_special: Literal["all"] | Collection[str] = "all",
    ) -> list[int]:
        """Token counts of many strings, in parallel, without building token lists.

        Threads as in :meth:`encode_ordinary_batch`.

        >>> enc.count_batch(["hello world", "goodbye world"])
        [2, 3]
        """
        if (self.__class__ is not Encoding or "count" in self.__dict__) and self._replaced("count"):
            _check_threads(num_threads)
            return [
                self.count(t, allowed_special=allowed_special, disallowed_special=disallowed_special) for t in texts
            ]
        return self._special_batch(
            self._core_bpe.count_batch, self.count, texts, allowed_special, disallowed_special, num_threads
        )

    def encode_with_unstable(
        self,
        text: str,
        *,
        allowed_special: Literal["all"] | AbstractSet[str] = set(),  # noqa: B006
        disallowed_special: Literal["all"] | Collection[str] = "all",
    ) -> tuple[list[int], list[list[int]]]:
        """Encodes a string into stable tokens and the token sequences that may complete it.

        >>> stable, completions = enc.encode_with_unstable("hello fanta")
        >>> stable
        [15339]
        """
        a, d = self._special_args(text, allowed_special, disallowed_special)
        try:
            return self._core_bpe.encode_with_unstable(text, a, d)
        except UnicodeEncodeError:
            return self._core_bpe.encode_with_unstable(self._fixed(text, a, d), a, ())

    def encode_single_token(self, text_or_bytes: str | bytes) -> int:
        """The id of text (or bytes) that is exactly one token, special tokens included.

        Raises ``KeyError`` if it is not a single token.

        >>> enc.encode_single_token("hello")
        15339
        """
        if isinstance(text_or_bytes, str):
            text_or_bytes = text_or_bytes.encode("utf-8")
        elif not isinstance(text_or_bytes, bytes):  # tiktoken takes exactly str or bytes
            raise TypeError(f"expected str or bytes, not {type(text_or_bytes).__name__}")
        return self._core_bpe.encode_single_token(text_or_bytes)

    # ------------------------------------------------------------------ decoding

    def decode_bytes(self, tokens: Sequence[int]) -> bytes:
        """Decodes tokens into bytes.

        >>> enc.decode_bytes([15339, 1917])
        b'hello world'
        """
        return self._core_bpe.decode_bytes(tokens)

    def decode(self, tokens: Sequence[int], errors: str = "replace") -> str:
        """Decodes tokens into a string (invalid UTF-8 handled per ``errors``).

        >>> enc.decode([15339, 1917])
        'hello world'
        """
        text = self._core_bpe.decode(tokens)
        if isinstance(text, str):
            _check_errors(errors)
            return text
        return text.decode("utf-8", errors=errors)

    def decode_single_token_bytes(self, token: int) -> bytes:
        """The bytes of one token (special tokens included); ``KeyError`` if there is none.

        >>> enc.decode_single_token_bytes(15339)
        b'hello'
        """
        return self._core_bpe.decode_single_token_bytes(token)

    def decode_tokens_bytes(self, tokens: Sequence[int]) -> list[bytes]:
        """The bytes of each token.

        >>> enc.decode_tokens_bytes([15339, 1917])
        [b'hello', b' world']
        """
        if (self.__class__ is not Encoding or "decode_single_token_bytes" in self.__dict__) and self._replaced(
            "decode_single_token_bytes"
        ):
            return [self.decode_single_token_bytes(t) for t in tokens]
        if (
            not isinstance(tokens, (list, tuple))
            and type(tokens).__module__ + "." + type(tokens).__name__ != "numpy.ndarray"
        ):
            tokens = list(tokens)  # tiktoken accepts any iterable of ids here (a numpy array is read natively)
        try:
            return self._core_bpe.decode_tokens_bytes(tokens)
        except Exception as e:
            _first_error(self.decode_single_token_bytes, tokens, e)

    def decode_with_offsets(self, tokens: Sequence[int]) -> tuple[str, list[int]]:
        """Decodes tokens into a string and the character offset where each token starts.

        A token that starts inside a character gets the offset of that character. Raises
        ``UnicodeDecodeError`` if the tokens do not form valid UTF-8.

        >>> enc.decode_with_offsets([15339, 1917])
        ('hello world', [0, 5])
        """
        token_bytes = self.decode_tokens_bytes(tokens)
        offsets = []
        chars = 0
        for tb in token_bytes:
            starts_inside = bool(tb) and 0x80 <= tb[0] < 0xC0
            offsets.append(max(0, chars - starts_inside))
            chars += sum(1 for c in tb if not 0x80 <= c < 0xC0)
        return b"".join(token_bytes).decode("utf-8", errors="strict"), offsets

    def decode_batch(
        self, batch: Sequence[Sequence[int]], *, errors: str = "replace", num_threads: int = 8
    ) -> list[str]:
        """Decodes many token lists.

        >>> enc.decode_batch([[15339], [1917]])
        ['hello', ' world']
        """
        threads = _check_threads(num_threads)  # first, as tiktoken's thread pool
        batch = list(batch)
        if (self.__class__ is not Encoding or "decode" in self.__dict__) and self._replaced("decode"):
            return [self.decode(tokens, errors=errors) for tokens in batch]
        try:
            texts = self._core_bpe.decode_batch(batch, threads)
            if texts:
                _check_errors(errors)
            return [t if isinstance(t, str) else t.decode("utf-8", errors=errors) for t in texts]
        except Exception as e:
            _first_error(lambda tokens: self.decode(tokens, errors=errors), batch, e)

    def decode_bytes_batch(self, batch: Sequence[Sequence[int]], *, num_threads: int = 8) -> list[bytes]:
        """Decodes many token lists into bytes, in parallel.

        >>> enc.decode_bytes_batch([[15339], [1917]])
        [b'hello', b' world']
        """
        threads = _check_threads(num_threads)  # first, as tiktoken's thread pool
        batch = list(batch)
        if (self.__class__ is not Encoding or "decode_bytes" in self.__dict__) and self._replaced("decode_bytes"):
            return [self.decode_bytes(tokens) for tokens in batch]
        try:
            return self._core_bpe.decode_bytes_batch(batch, threads)
        except Exception as e:
            _first_error(self.decode_bytes, batch, e)

    # ------------------------------------------------------------------ misc

    def token_byte_values(self) -> list[bytes]:
        """All mergeable tokens' bytes, sorted.

        >>> len(enc.token_byte_values())
        100256
        """
        return self._core_bpe.token_byte_values()

    @property
    def eot_token(self) -> int:
        """The id of ``<|endoftext|>`` (``KeyError`` if the encoding has none)."""
        return self._special_tokens["<|endoftext|>"]

    @functools.cached_property
    def special_tokens_set(self) -> set[str]:
        """The names of the special tokens (computed once). As in tiktoken, ``"all"`` in the
        arguments of ``encode`` and its kin means this set: assigning another set, or changing
        this one in place, changes what ``"all"`` allows or disallows. (It is a ``set`` subclass that
        notes changes in place, so that encoding need not compare it with the special tokens on
        every call.)"""
        names = _NameSet(self._special_tokens.keys())
        names.changed = names != self._native_specials
        return names

    def is_special_token(self, token: int) -> bool:
        """Whether ``token`` is the id of a special token.

        >>> enc.is_special_token(100257)
        True
        """
        assert isinstance(token, int)
        return token in self._special_token_values

    @property
    def n_vocab(self) -> int:
        """``max_token_value + 1`` (as in tiktoken)."""
        return self.max_token_value + 1

    def split(self, text: str) -> list[str]:
        """The pieces the split pattern cuts ``text`` into (before merging).

        >>> enc.split("hello world!!")
        ['hello', ' world', '!!']
        """
        try:
            return self._core_bpe.split(text)
        except UnicodeEncodeError:
            return self._core_bpe.split(_fix_surrogates(text))

    # ------------------------------------------------------------------ private (tiktoken's)

    def _encode_single_piece(self, text_or_bytes: str | bytes) -> list[int]:
        if isinstance(text_or_bytes, str):
            text_or_bytes = text_or_bytes.encode("utf-8")
        return self._core_bpe.encode_single_piece(text_or_bytes)

    def _encode_only_native_bpe(self, text: str) -> list[int]:
        import regex

        ret = []
        for piece in regex.findall(regex.compile(self._pat_str), text):
            ret.extend(self._core_bpe.encode_single_piece(piece.encode("utf-8")))
        return ret

    def _encode_bytes(self, text: bytes) -> list[int]:
        return self._core_bpe._encode_bytes(text)

    # ------------------------------------------------------------------ saving

    def save(self, path: str | os.PathLike[str]) -> None:
        """Writes ``<path>/<name>.tiktoken`` and a JSON file; read it back with
        :func:`bytepair.load`.

        >>> import bytepair
        >>> enc = bytepair.train(["hello world"] * 20, vocab_size=260, progress=False)
        >>> enc.save("my-tokenizer")
        >>> bytepair.load("my-tokenizer").encode("hello world") == enc.encode("hello world")
        True
        """
        from bytepair.train import _save

        _save(self, path)

    def to_huggingface(self, path: str | os.PathLike[str]) -> None:
        r"""Writes a ``tokenizer.json`` that Hugging Face ``tokenizers`` loads and that encodes to
        the same ids. ``path`` is a directory (created with its parents if missing; the file goes
        inside) or a file name ending in ``.json`` (its folders created likewise). Special tokens
        are included (``tokenizers`` matches them in any text, as
        ``allowed_special="all"`` does). Where two special tokens share an id (o200k_harmony's
        ``<|endofprompt|>`` and ``<|reserved_200018|>``) the file keeps the one ``decode`` gives,
        with a warning; a special token spelled like an ordinary token of the byte-level
        vocabulary raises ``ValueError``. A custom split pattern is translated for Oniguruma,
        the regex engine of ``tokenizers`` (``\pL`` as ``\p{L}``; ``^``/``$`` as text anchors
        outside ``(?m)``; the inline flag ``s`` as its ``m``); when ``tokenizers`` is installed the
        file is loaded and checked on a test text, and a pattern it reads otherwise raises
        ``ValueError`` and leaves no file.

        >>> enc.to_huggingface("my-tokenizer")
        >>> from tokenizers import Tokenizer
        >>> Tokenizer.from_file("my-tokenizer/tokenizer.json").encode("hello world").ids == enc.encode("hello world")
        True
        """
        from bytepair.train import _to_huggingface

        _to_huggingface(self, path)

    # ------------------------------------------------------------------ pickling

    def __getstate__(self) -> object:
        from bytepair import registry

        if self is registry.ENCODINGS.get(self.name):
            return self.name
        return {
            "name": self.name,
            "pat_str": self._pat_str,
            "mergeable_ranks": self._mergeable_ranks,
            "special_tokens": self._special_tokens,
        }

    def __setstate__(self, value: object) -> None:
        from bytepair import registry

        if isinstance(value, str):
            self.__dict__ = registry.get_encoding(value).__dict__
            return
        self.__init__(**value)  # type: ignore[misc, arg-type]


class _NameSet(set[str]):
    """The value of ``special_tokens_set``: a set that notes being changed in place, so that
    encoding tells in constant time whether ``"all"`` still means the native special tokens."""

    __slots__ = ("changed",)

    def __init__(self, names: Iterable[str] = ()) -> None:
        super().__init__(names)
        self.changed = False

    # It pickles, copies and prints as the plain set tiktoken's is (unpickling needs no
    # bytepair); below, Python's own messages name it as one too.
    def __reduce__(self) -> tuple[type[set[str]], tuple[list[str]]]:
        return set, (list(self),)

    def __repr__(self) -> str:
        return repr(set(self))


def _noting_change(name: str) -> Callable[..., object]:
    method = getattr(set, name)

    def changed(self: _NameSet, *args: object) -> object:
        self.changed = True
        return method(self, *args)

    changed.__name__ = name
    return changed


for _name in (
    "add", "discard", "remove", "pop", "clear", "update", "difference_update", "intersection_update",
    "symmetric_difference_update", "__ior__", "__iand__", "__isub__", "__ixor__",
):  # fmt: skip
    setattr(_NameSet, _name, _noting_change(_name))


# ``enc.special_tokens_set - ["a"]`` says ``'set' and 'list'``, as under tiktoken. (Pickle
# would find the class by ``__qualname__``, which stays.)
_NameSet.__name__ = "set"


_REGEX_CACHE: dict[frozenset[str], object] = {}


def _special_token_regex(tokens: frozenset[str]):  # type: ignore[no-untyped-def]
    pattern = _REGEX_CACHE.get(tokens)
    if pattern is None:
        import re

        inner = "|".join(re.escape(t) for t in sorted(tokens, key=len, reverse=True))
        pattern = re.compile(f"({inner})")
        if len(_REGEX_CACHE) >= 128:
            _REGEX_CACHE.clear()
        _REGEX_CACHE[tokens] = pattern
    return pattern


def raise_disallowed_special_token(token: str) -> NoReturn:
    raise ValueError(
        f"Encountered text corresponding to disallowed special token {token!r}.\n"
        "If you want this text to be encoded as a special token, "
        f"pass it to `allowed_special`, e.g. `allowed_special={{{token!r}, ...}}`.\n"
        "If you want this text to be encoded as normal text, disable the check for this token "
        f"by passing `disallowed_special=(enc.special_tokens_set - {{{token!r}}})`.\n"
        "To disable this check for all special tokens, pass `disallowed_special=()`.\n"
    )
