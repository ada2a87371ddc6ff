//! bytepair-core: the engine behind the `bytepair` Python package. It knows nothing of Python.
//!
//! - [`vocab`]: ranks, the `.tiktoken` format, the bundled vocabularies.
//! - [`pretokenize`]: split patterns (hand-written lexers and a regex fallback).
//! - [`bpe`]: byte-pair merging of one piece.
//! - [`encode`]: the full encoder with special tokens, and decoding.
//! - [`parallel`]: thread pools for batch work.
//! - [`utf8`]: Python's string storage (Latin-1, UCS-2, UCS-4) to UTF-8.
pub mod bpe;
pub mod char_masks;
pub mod chars;
pub mod embed;
pub mod encode;
pub mod error;
pub mod input;
pub mod pages;
pub mod parallel;
pub mod pretokenize;
pub mod shards;
pub mod train;
pub mod utf8;
pub mod vocab;

pub use encode::{CoreBpe, SpecialSet};
pub use error::{Error, Result};
pub use vocab::{Rank, Vocab};
