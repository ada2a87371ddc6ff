# Stubs for the embedding functions of bytepair._native (rust/python/src/embed.rs).
# MERGE POINT: the lead merges these into _native.pyi.
import os
from typing import Optional, Sequence, Tuple, Union

import numpy as np
import numpy.typing as npt

_F32 = npt.NDArray[np.float32]
_Table = Union[npt.NDArray[np.float32], npt.NDArray[np.float16]]
_Ids = npt.NDArray[np.integer]

def embed_gather(
    table: _Table,
    ids: _Ids,
    offsets: Optional[npt.NDArray[np.int64]],
    fixed: Optional[Tuple[int, int]],
    pool: str,
    weights: Optional[_F32],
    normalize: bool,
) -> _F32: ...
def embed_topk(
    queries: _F32, keys: _Table, k: int, metric: str
) -> Tuple[_F32, npt.NDArray[np.int64]]: ...
def embed_texts(
    core: object, table: _Table, texts: Sequence[str], pool: str, normalize: bool
) -> _F32: ...
def embed_simd_level() -> str: ...

class EmbedIndex:
    def __new__(cls, dim: int, metric: str, dtype: str) -> EmbedIndex: ...
    def add(self, keys: _F32) -> None: ...
    def search(self, queries: _F32, k: int) -> Tuple[_F32, npt.NDArray[np.int64]]: ...
    def __len__(self) -> int: ...
    @property
    def dim(self) -> int: ...
    @property
    def metric(self) -> str: ...
    @property
    def dtype(self) -> str: ...
    @property
    def nbytes(self) -> int: ...
    def save(self, path: Union[str, os.PathLike[str]]) -> None: ...
    @staticmethod
    def load(path: Union[str, os.PathLike[str]]) -> EmbedIndex: ...

# Test-only placeholder until encoding.rs provides CoreBPE (MERGE POINT: delete with it).
class _EmbedCoreBpe:
    @staticmethod
    def bundled(name: str) -> _EmbedCoreBpe: ...
