//! Embedding kernels: fused gather/pool, exact top-k, quantised indexes, and text embedding.
//!
//! - [`gather`]: bags of ids -> pooled rows, one pass, no [N, D] intermediate.
//! - [`topk`]: exact nearest neighbours; a register-tiled dot-product microkernel fused with one
//!   bounded heap per query, so the [B, N] score matrix is never written.
//! - [`Index`]: keys stored normalised in f32, f16 or int8 (+ an int8 residual for rescoring).
//! - [`embed_texts`]: tokenize + gather + pool + normalise, parallel over texts.
//!
//! All kernels compute in f32 and pick their SIMD version at run time ([`simd::level`]).
mod gather;
mod index;
mod nibble;
mod quant;
pub mod simd;
mod texts;
mod topk;
mod vnni;

pub use gather::gather;
pub use index::{Index, KeyType};
pub use quant::{quantize_i8, Quantized8};
pub use texts::embed_texts;
pub use topk::{topk, TopKResult};
pub use vnni::available as vnni_available;

use crate::{Error, Result};

/// Types whose all-zero bit pattern is the value zero.
pub(crate) trait Zeroed: Copy {}
impl Zeroed for f32 {}
impl Zeroed for usize {}

/// A vector of `n` zeros, or [`Error::TooLarge`] (Python `MemoryError`, as numpy raises for an
/// array it cannot allocate) when the memory is not there: sizes come from the caller's shapes,
/// and an abort is not an answer to a shape. Zeroed by the allocator (`calloc`: fresh pages come
/// zeroed and are not written twice), as `vec![0; n]` is.
pub(crate) fn try_zeroed<T: Zeroed>(n: usize, what: &str) -> Result<Vec<T>> {
    let too_large = || {
        Error::TooLarge(format!(
            "cannot allocate {what}: {n} values of {} bytes",
            std::mem::size_of::<T>()
        ))
    };
    let layout = std::alloc::Layout::array::<T>(n).map_err(|_| too_large())?;
    if layout.size() == 0 {
        return Ok(Vec::new());
    }
    // SAFETY: the layout has a non-zero size; a non-null block of it, zeroed, holds `n` valid
    // values of `T` (`Zeroed`), allocated by the global allocator as `Vec` expects.
    unsafe {
        let p = std::alloc::alloc_zeroed(layout) as *mut T;
        if p.is_null() {
            return Err(too_large());
        }
        Ok(Vec::from_raw_parts(p, n, n))
    }
}

/// [`Error::TooLarge`] when `bytes` could not be allocated now (a block is reserved and given
/// back; untouched, it costs nothing).
pub(crate) fn check_alloc(bytes: usize, what: &str) -> Result<()> {
    let mut probe: Vec<u8> = Vec::new();
    let r = probe.try_reserve_exact(bytes);
    // Without this the optimiser may drop the unused allocation, and its failure with it.
    std::hint::black_box(probe.as_ptr());
    r.map_err(|_| Error::TooLarge(format!("cannot allocate {what}: {bytes} bytes")))
}

/// How the rows of a bag are combined.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pool {
    Mean,
    Sum,
    Max,
    /// No pooling: one output row per id.
    None,
}

impl Pool {
    pub fn parse(s: &str) -> Result<Pool> {
        match s {
            "mean" => Ok(Pool::Mean),
            "sum" => Ok(Pool::Sum),
            "max" => Ok(Pool::Max),
            "none" => Ok(Pool::None),
            _ => Err(Error::Value(format!(
                "pool must be 'mean', 'sum', 'max' or 'none', not {s:?}"
            ))),
        }
    }
}

/// How ids are grouped into bags.
#[derive(Clone, Copy, Debug)]
pub enum Bags<'a> {
    /// Bag starts, as in torch's `EmbeddingBag`: bag `i` is `ids[offsets[i]..offsets[i + 1]]`,
    /// the last bag runs to the end. `offsets[0]` must be 0 and offsets must not decrease.
    Offsets(&'a [i64]),
    /// `bags` bags of `len` consecutive ids (a 2-D id array).
    Fixed { bags: usize, len: usize },
}

/// The similarity that [`topk`] and [`Index`] rank by.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Metric {
    /// Dot product of L2-normalised vectors (zero vectors score 0).
    Cosine,
    /// Plain dot product.
    Dot,
}

impl Metric {
    pub fn parse(s: &str) -> Result<Metric> {
        match s {
            "cosine" => Ok(Metric::Cosine),
            "dot" => Ok(Metric::Dot),
            _ => Err(Error::Value(format!(
                "metric must be 'cosine' or 'dot', not {s:?}"
            ))),
        }
    }
    pub fn name(self) -> &'static str {
        match self {
            Metric::Cosine => "cosine",
            Metric::Dot => "dot",
        }
    }
}

/// An integer id type (token ids come as int64, int32, uint32 or uint16).
pub trait Id: Copy + Send + Sync + std::fmt::Display + 'static {
    fn as_i64(self) -> i64;
}
macro_rules! impl_id {
    ($($t:ty),*) => {$(impl Id for $t { #[inline(always)] fn as_i64(self) -> i64 { self as i64 } })*};
}
impl_id!(i64, i32, i16, i8, u32, u16, u8);
impl Id for u64 {
    #[inline(always)]
    fn as_i64(self) -> i64 {
        // Values past i64::MAX become negative and are reported as out of range.
        i64::try_from(self).unwrap_or(-1)
    }
}

#[cfg(test)]
pub(crate) mod testutil {
    /// Deterministic approximately-normal values (sum of uniforms).
    pub fn randn(n: usize, seed: u64) -> Vec<f32> {
        let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        let mut next = move || {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (s >> 11) as f64 / (1u64 << 53) as f64
        };
        (0..n)
            .map(|_| ((0..4).map(|_| next()).sum::<f64>() - 2.0) as f32 * 1.7)
            .collect()
    }

    pub fn assert_close(got: &[f32], want: &[f32], atol: f32, rtol: f32, what: &str) {
        assert_eq!(got.len(), want.len(), "{what}: length");
        for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
            if w.is_nan() {
                assert!(g.is_nan(), "{what}: [{i}] got {g}, want NaN");
                continue;
            }
            assert!(
                (g - w).abs() <= atol + rtol * w.abs(),
                "{what}: [{i}] got {g}, want {w}"
            );
        }
    }
}
