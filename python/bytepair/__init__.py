"""bytepair: a fast, byte-identical drop-in for tiktoken, a BPE trainer and embedding kernels."""
from bytepair._native import __version__

__all__ = ["__version__"]
