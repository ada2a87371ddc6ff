"""The name of tiktoken's native module, for code that builds ``CoreBPE`` itself.

Under ``import bytepair as tiktoken``, ``tiktoken._tiktoken.CoreBPE(encoder,
special_tokens_encoder, pattern)`` gives bytepair's encoder, which takes tiktoken's arguments
(by position or by tiktoken's names) and methods.

>>> import bytepair
>>> enc = bytepair.get_encoding("cl100k_base")
>>> core = bytepair._tiktoken.CoreBPE(enc._mergeable_ranks, enc._special_tokens, enc._pat_str)
>>> core.encode_ordinary("hello world")
[15339, 1917]
"""

from bytepair._native import CoreBPE

__all__ = ["CoreBPE"]
