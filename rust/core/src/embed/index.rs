//! A flat (exhaustive) vector index with f32, f16 or int8 storage.
//!
//! Why these layouts: a single-query search reads every key once and is bound by memory
//! bandwidth, so the bytes scanned per key decide its speed. f16 halves them and int8 quarters
//! them; both are converted to f32 in registers by the same microkernel that serves f32 (see
//! `topk`). f16 keeps about 11 bits, which moves cosine scores by ~1e-5 and is searched as is.
//! int8 (one scale per vector) moves scores by ~1e-3, enough to swap near neighbours, so its
//! search keeps as candidates every key whose int8 score is within a margin (ten standard
//! deviations of the rounding error, see `I8Stats::slack`) of the k-th best, and rescores them
//! with a second int8 level that quantises the residual: together about 14 bits, read only for
//! the candidates. (A fixed shortlist of `max(4k, k + 64)` found 4-5 of the top 10 among
//! clustered keys, whose scores lie closer together than the int8 error; it remains the
//! fallback when more than an eighth of the keys are candidates.) A single query first scans a
//! 4-bit copy of the codes (half a byte a value, see [`Nibbles`]) for the keys worth an int8
//! score at all.
//! No f32 copy is kept, so the int8 index takes 2 bytes a value (plus 12 bytes a key) instead of 4.
//! Where the processor has AVX-512 VNNI, the int8 scan runs on integer dot products (`vnni`).
//!
//! Keys are normalised when added (cosine), so a search is a plain dot product.
//!
//! float32 and float16 indexes also keep an int8 sketch of their keys (1 byte a value). A search
//! scans the sketch instead of the keys, a quarter (f16: half) of the bytes, and collects every
//! key whose sketch score comes within a proven error bound of the running k-th best; those
//! candidates are then scored exactly, by the same kernel a full scan uses. The bound (see
//! [`Sketch`]) makes the result identical to the full scan's; where it cannot (non-finite values,
//! too many candidates), the search scans the keys instead.
use super::quant::{quantize_into, quantize_level, to_f16};
use super::simd::{self, Elem, Level};
use super::topk::{self, KeyFactor, TopK, TopKResult};
use super::Metric;
use super::{nibble, vnni};
use crate::{Error, Result};
use half::f16;
use rayon::prelude::*;
use std::io::{BufReader, BufWriter, Read, Write};
use std::ops::Range;
use std::path::Path;

const MAGIC: &[u8; 8] = b"BPEMBIX\0";
const VERSION: u32 = 1;
/// Header byte 14: the index was saved with its sketch turned off (the sketch itself is not
/// stored; loading rebuilds it from the keys).
const FLAG_NO_SKETCH: u8 = 1;
/// Header byte 14: the file ends with the CRC-32 of everything before it, checked on load.
/// Written by every save since it was introduced; files without it still load, unchecked.
const FLAG_CRC: u8 = 2;

/// A writer that also computes the CRC-32 of what passes through it.
struct CrcWriter<W> {
    inner: W,
    crc: crc32fast::Hasher,
}

impl<W: Write> Write for CrcWriter<W> {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(b)?;
        self.crc.update(&b[..n]);
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// A reader that also computes the CRC-32 of what passes through it.
struct CrcReader<R> {
    inner: R,
    crc: crc32fast::Hasher,
}

impl<R: Read> Read for CrcReader<R> {
    fn read(&mut self, b: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(b)?;
        self.crc.update(&b[..n]);
        Ok(n)
    }
}

/// How an [`Index`] stores its keys.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyType {
    F32,
    F16,
    I8,
}

impl KeyType {
    pub fn parse(s: &str) -> Result<KeyType> {
        match s {
            "float32" => Ok(KeyType::F32),
            "float16" => Ok(KeyType::F16),
            "int8" => Ok(KeyType::I8),
            _ => Err(Error::Value(format!(
                "dtype must be 'float32', 'float16' or 'int8', not {s:?}"
            ))),
        }
    }
    pub fn name(self) -> &'static str {
        match self {
            KeyType::F32 => "float32",
            KeyType::F16 => "float16",
            KeyType::I8 => "int8",
        }
    }
}

#[derive(Clone, Debug)]
enum Store {
    F32(Vec<f32>),
    F16(Vec<f16>),
    I8 {
        codes: Vec<i8>,
        scales: Vec<f32>,
        res: Vec<i8>,
        res_scales: Vec<f32>,
        /// Per-key sum of `codes` (not stored in files; rebuilt on load).
        sums: Vec<i32>,
        /// Over the keys (rebuilt on load).
        stats: I8Stats,
    },
}

/// What the int8 search's candidate margin needs to know about the keys.
#[derive(Clone, Copy, Debug, Default)]
struct I8Stats {
    /// The largest first-level scale, and the largest norm of a key as stored (both levels).
    max_scale: f64,
    max_norm: f64,
    /// A key holds NaN or infinity.
    nonfinite: bool,
}

impl I8Stats {
    /// Folds in the keys `codes`/`res` (rows of `d`) with their scales.
    fn extend(&mut self, codes: &[i8], scales: &[f32], res: &[i8], res_scales: &[f32], d: usize) {
        let (scale, norm, bad) = crate::parallel::pool(0).install(|| {
            (0..scales.len())
                .into_par_iter()
                .map(|i| {
                    let (s, rs) = (scales[i], res_scales[i]);
                    if !s.is_finite() {
                        return (0.0, 0.0, true);
                    }
                    let n2 = sum4(
                        codes[i * d..(i + 1) * d]
                            .iter()
                            .zip(&res[i * d..(i + 1) * d])
                            .map(|(&a, &b)| (s * a as f32 + rs * b as f32) as f64)
                            .map(|x| x * x),
                    );
                    (s as f64, n2.sqrt(), false)
                })
                .reduce(
                    || (0.0, 0.0, false),
                    |a, b| (a.0.max(b.0), a.1.max(b.1), a.2 || b.2),
                )
        });
        self.max_scale = self.max_scale.max(scale);
        self.max_norm = self.max_norm.max(norm);
        self.nonfinite |= bad;
    }

    /// Per query (prepared rows of `q`, `d` wide, quantised as `qc` for the integer scans), how
    /// far below the k-th best int8 score a candidate may be: `2 * MARGIN_Z` deviations of the
    /// score's rounding error. Each value's rounding error is uniform in half a step, so the
    /// score's deviation is `(|q| s + |k| qs) / sqrt(12)` for key step `s` and query step `qs`.
    /// `None` where values are not finite.
    fn slack(&self, q: &[f32], d: usize, qc: Option<&vnni::QueryCodes>) -> Option<Vec<f64>> {
        if self.nonfinite || q.iter().any(|x| !x.is_finite()) {
            return None;
        }
        Some(
            q.chunks_exact(d)
                .enumerate()
                .map(|(i, row)| {
                    let qs = qc.map_or(0.0, |qc| qc.scales[i] as f64);
                    margin(MARGIN_Z, norm(row), self.max_scale, self.max_norm, qs)
                })
                .collect(),
        )
    }
}

/// An exhaustive index over `len` keys of dimension `dim`.
#[derive(Clone, Debug)]
pub struct Index {
    metric: Metric,
    dim: usize,
    len: usize,
    store: Store,
    /// float32 / float16 keys only, unless turned off.
    sketch: Option<Sketch>,
    /// int8 keys only, unless turned off.
    nibbles: Option<Nibbles>,
}

/// How many standard deviations of the 4-bit sketch's rounding error a single query's
/// candidates may fall below the k-th best sketch score, each way (see [`Nibbles`]). Measured:
/// at 3, 3.5 and 5 the results equalled the int8 scan's on 100 queries each of random,
/// clustered and duplicated keys; 5 made 6% of 200k random keys candidates, 3.5 made 1.3%.
const NIBBLE_Z: f64 = 3.5;

/// `2 z` standard deviations of the rounding error of a quantised score: each value's error is
/// uniform in half a step, so a score's deviation is `(|q| s + |k| qs) / sqrt(12)` for a query
/// of norm `|q|` and step `qs` against keys of norm at most `|k|` and step at most `s`.
fn margin(z: f64, q_norm: f64, key_step: f64, key_norm: f64, q_step: f64) -> f64 {
    2.0 * z * (q_norm * key_step + key_norm * q_step) / 12f64.sqrt()
}

/// The L2 norm of `x`, summed in f64.
fn norm(x: &[f32]) -> f64 {
    sum4(x.iter().map(|&v| v as f64 * v as f64)).sqrt()
}

/// A 4-bit copy of int8 keys (see `nibble`), half the bytes, which a single query scans first.
/// Not a proof like [`Sketch`] (the int8 index is approximate anyway): rounding to a step `s`
/// leaves an error uniform in `+-s/2` per value, so a key's sketch score is off by a sum with
/// standard deviation `|q| s / sqrt(12)` (plus the query's own int8 rounding). The candidates
/// are the keys within `2 * NIBBLE_Z` deviations (at the largest scale) below the k-th best
/// sketch score; their int8 scores then choose the int8 candidates as a full int8 scan does
/// ([`I8Stats::slack`]), and those are rescored from both levels. The keys' norms and
/// finiteness are the int8 keys' own ([`I8Stats`]).
#[derive(Clone, Debug, Default)]
struct Nibbles {
    codes: Vec<u8>,
    scales: Vec<f32>,
    /// The largest 4-bit step.
    max_scale: f64,
}

impl Nibbles {
    /// Appends the sketch of int8 keys `codes`/`res` (rows of `d`) with their scales.
    fn extend(&mut self, codes: &[i8], scales: &[f32], res: &[i8], res_scales: &[f32], d: usize) {
        const CH: usize = 256;
        let rb = nibble::row_bytes(d);
        let (out, out_s) = append_rows(&mut self.codes, 0x88, &mut self.scales, scales.len(), rb);
        let m = crate::parallel::pool(0).install(|| {
            out.par_chunks_mut(CH * rb)
                .zip(out_s.par_chunks_mut(CH))
                .enumerate()
                .map_init(Vec::new, |x, (c, (o, os))| {
                    let mut m = 0f64;
                    for (i, (row, s4)) in o.chunks_exact_mut(rb).zip(os.iter_mut()).enumerate() {
                        let key = c * CH + i;
                        let (s, rs) = (scales[key], res_scales[key]);
                        let kc = &codes[key * d..(key + 1) * d];
                        let kr = &res[key * d..(key + 1) * d];
                        x.clear();
                        x.extend(
                            kc.iter()
                                .zip(kr)
                                .map(|(&a, &b)| s * a as f32 + rs * b as f32),
                        );
                        *s4 = nibble::pack(x, row);
                        // A non-finite key (NaN scale) is I8Stats::nonfinite's to report.
                        if s4.is_finite() {
                            m = m.max(*s4 as f64);
                        }
                    }
                    m
                })
                .reduce(|| 0.0, f64::max)
        });
        self.max_scale = self.max_scale.max(m);
    }

    fn nbytes(&self) -> usize {
        self.codes.len() + self.scales.len() * 4
    }
}

/// How many standard deviations of an int8 score's rounding error the int8 index's candidates
/// may fall below the k-th best int8 score, each way (see [`I8Stats::slack`]).
const MARGIN_Z: f64 = 5.0;

/// Below this many keys a search scans the keys: a sketch would save little.
const SKETCH_MIN_KEYS: usize = 4096;

/// An int8 copy of float32 / float16 keys (one scale per key, codes as in the int8 index),
/// which a search scans first (see the module notes).
///
/// The bound: for a prepared query `q`, quantised to `q'` (error `dq = q - q'`), and a key `k`
/// with sketch `k' = scale * code` (error `dk = k - k'`), the sketch score `s` (the scan's f32
/// value of `q' . k'`) and the score `f` the full scan computes satisfy
/// `|f - s| <= |q| |dk| + |dq| |k'| + g_d |q| |k| + 4u (|q| + |dq|) |k'|`: Cauchy-Schwarz for the
/// two quantisation errors, the rounding bound of a d-term f32 dot product (`g_d = (d + 16) u`,
/// `u = 2^-24`) and the three roundings of the scan's int-to-float step. [`Sketch::bound`] takes
/// the largest `|dk|`, `|k'|` and `|k|` over the keys, and pads the total. Then every key of the
/// true top k has `s > kth - 2E`, where `kth` is the k-th best sketch score: the candidates.
#[derive(Clone, Debug, Default)]
struct Sketch {
    codes: Vec<i8>,
    scales: Vec<f32>,
    sums: Vec<i32>,
    /// Over all keys: the largest `|k - scale * code|`, `|scale * code|` and `|k|` (L2).
    max_res: f64,
    max_deq: f64,
    max_norm: f64,
    /// A key holds NaN or infinity: no bound holds, and searches scan the keys.
    nonfinite: bool,
}

impl Sketch {
    /// Appends the sketch of `keys` (stored values, rows of `d`).
    fn extend<E: Elem>(&mut self, keys: &[E], d: usize) {
        const CH: usize = 256;
        let at = self.codes.len();
        let (codes, scales) = append_rows(&mut self.codes, 0, &mut self.scales, keys.len() / d, d);
        let (m, bad) = crate::parallel::pool(0).install(|| {
            codes
                .par_chunks_mut(CH * d)
                .zip(scales.par_chunks_mut(CH))
                .zip(keys.par_chunks(CH * d))
                .map_init(Vec::new, |tmp, ((c, s), src)| {
                    let mut m = [0f64; 3];
                    let mut bad = false;
                    for (i, (row, c)) in src.chunks_exact(d).zip(c.chunks_exact_mut(d)).enumerate()
                    {
                        tmp.clear();
                        tmp.extend(row.iter().map(|x| x.to_f32()));
                        s[i] = quantize_level(tmp, c);
                        if !s[i].is_finite() {
                            bad = true;
                            continue;
                        }
                        // Four partial sums of each square, so the additions do not wait on
                        // each other.
                        let (mut r2, mut n2, mut k2) = ([0f64; 4], [0f64; 4], [0f64; 4]);
                        let sc = s[i] as f64;
                        for (xs, cs) in tmp.chunks(4).zip(c.chunks(4)) {
                            for (l, (&x, &cc)) in xs.iter().zip(cs).enumerate() {
                                let (x, deq) = (x as f64, sc * cc as f64);
                                r2[l] += (x - deq) * (x - deq);
                                n2[l] += deq * deq;
                                k2[l] += x * x;
                            }
                        }
                        for (mm, v) in m.iter_mut().zip([r2, n2, k2]) {
                            *mm = mm.max(v.iter().sum::<f64>().sqrt());
                        }
                    }
                    (m, bad)
                })
                .reduce(
                    || ([0f64; 3], false),
                    |a, b| {
                        (
                            [a.0[0].max(b.0[0]), a.0[1].max(b.0[1]), a.0[2].max(b.0[2])],
                            a.1 || b.1,
                        )
                    },
                )
        });
        // f64 sums of at most 2^32 squares are off by far less than this pad.
        let up = |x: f64| x * (1.0 + 1e-9);
        self.max_res = self.max_res.max(up(m[0]));
        self.max_deq = self.max_deq.max(up(m[1]));
        self.max_norm = self.max_norm.max(up(m[2]));
        self.nonfinite |= bad;
        self.sums.extend(vnni::code_sums(&self.codes[at..], d));
    }

    /// The largest `|f - s|` (see the type's notes) for a query of norm `qn` whose quantisation
    /// error has norm `dqn`, `d` dimensions.
    fn bound(&self, qn: f64, dqn: f64, d: usize) -> f64 {
        let u = f32::EPSILON as f64 / 2.0;
        let g = (d as f64 + 16.0) * u;
        let e = qn * (self.max_res + g * self.max_norm)
            + dqn * self.max_deq
            + 4.0 * u * (qn + dqn) * self.max_deq;
        // Pads: relative (the f64 arithmetic here and in the caller's comparisons), and absolute
        // (f32 underflow in the dot products).
        e * (1.0 + 1e-6) + 1e-12 * (qn + dqn) * (self.max_norm + self.max_deq) + 1e-30
    }

    fn nbytes(&self) -> usize {
        self.codes.len() + self.scales.len() * 4 + self.sums.len() * 4
    }

    /// The folds over the keys: the largest residual, dequantised key and key norm, and
    /// whether a key is not finite (see [`restore`](Self::restore)).
    fn scalars(&self) -> ([f64; 3], bool) {
        ([self.max_res, self.max_deq, self.max_norm], self.nonfinite)
    }

    /// Back to the first `n` keys of `d` values, with the folds `m` they had.
    fn restore(&mut self, n: usize, d: usize, m: ([f64; 3], bool)) {
        self.codes.truncate(n * d);
        self.scales.truncate(n);
        self.sums.truncate(n);
        ([self.max_res, self.max_deq, self.max_norm], self.nonfinite) = m;
    }
}

/// How many key values [`Index::add`] converts between looks for Ctrl-C (16 MB of float32,
/// tens of milliseconds; small in tests, so that small adds take several batches).
const ADD_BATCH_VALUES: usize = if cfg!(test) { 1 << 12 } else { 1 << 22 };

/// The sketch of `keys` (rows of `d`), built `rows` keys at a time with the Ctrl-C poll between
/// batches ([`Index::set_sketch`]).
fn sketch_in_batches<E: Elem>(keys: &[E], d: usize, rows: usize) -> Result<Sketch> {
    let mut sk = Sketch::default();
    for batch in keys.chunks(rows * d) {
        sk.extend(batch, d);
        if crate::parallel::interrupt::poll() {
            return Err(Error::Interrupted);
        }
    }
    Ok(sk)
}

/// An index's key count and the folds over its keys before an add ([`Index::add`]).
struct AddMark {
    len: usize,
    stats: Option<I8Stats>,
    sketch: Option<([f64; 3], bool)>,
    nibbles: Option<f64>,
}

/// Queries whose largest value is above this are scaled down for int8 scans (see
/// [`scale_down_huge`]).
const HUGE_QUERY: f32 = 1e30;

/// Scales each query of `q` whose largest absolute value is above [`HUGE_QUERY`] by a power of
/// two that brings it to about 2**60 (exact: only the exponent changes); returns the factor to
/// multiply each query's scores by afterwards, or `None` when no query needed it.
fn scale_down_huge(q: &mut [f32], d: usize) -> Option<Vec<f32>> {
    let mut back: Option<Vec<f32>> = None;
    let nq = q.len() / d.max(1);
    for (i, row) in q.chunks_exact_mut(d.max(1)).enumerate() {
        let m = row.iter().fold(0f32, |m, v| m.max(v.abs()));
        if !(m > HUGE_QUERY && m.is_finite()) {
            continue;
        }
        // 2**e with m * 2**-e near 2**60.
        let e = (m.log2().floor() as i32) - 60;
        let down = 2f32.powi(-e);
        for v in row.iter_mut() {
            *v *= down;
        }
        back.get_or_insert_with(|| vec![1.0; nq])[i] = 2f32.powi(e);
    }
    back
}

/// The most dimensions a key may have: far beyond any embedding, and low enough that sizes
/// computed from it (blocks of keys, sketches) cannot overflow.
pub const MAX_DIM: usize = u32::MAX as usize;

impl Index {
    /// An empty index.
    pub fn new(dim: usize, metric: Metric, dtype: KeyType) -> Result<Index> {
        if dim == 0 {
            return Err(Error::Value(
                "vectors must have at least one dimension".into(),
            ));
        }
        if dim > MAX_DIM {
            return Err(Error::Value(format!(
                "vectors of {dim} dimensions are more than an index takes ({MAX_DIM})"
            )));
        }
        let store = match dtype {
            KeyType::F32 => Store::F32(vec![]),
            KeyType::F16 => Store::F16(vec![]),
            KeyType::I8 => Store::I8 {
                codes: vec![],
                scales: vec![],
                res: vec![],
                res_scales: vec![],
                sums: vec![],
                stats: I8Stats::default(),
            },
        };
        let sketch = (dtype != KeyType::I8).then(Sketch::default);
        let nibbles = (dtype == KeyType::I8).then(Nibbles::default);
        Ok(Index {
            metric,
            dim,
            len: 0,
            store,
            sketch,
            nibbles,
        })
    }

    /// Whether searches scan a sketch of the keys first (on by default): int8 for float32 and
    /// float16 keys, 4-bit for int8 keys (single queries on processors with AVX-512 VNNI).
    pub fn has_sketch(&self) -> bool {
        self.sketch.is_some() || self.nibbles.is_some()
    }

    /// Turns the sketch on (built from the keys, parallel) or off (its memory is freed). For
    /// float keys the results are the same either way; only the speed and the memory differ.
    ///
    /// The sketch is built in batches of about [`ADD_BATCH_VALUES`] values, with the Ctrl-C poll
    /// installed on this thread (if any) run between them: when it asks to stop, the index is
    /// left without a sketch and [`Error::Interrupted`] returned.
    pub fn set_sketch(&mut self, on: bool) -> Result<()> {
        if !on {
            self.sketch = None;
            self.nibbles = None;
            return Ok(());
        }
        if self.has_sketch() {
            return Ok(());
        }
        let (d, n) = (self.dim, self.len);
        let rows = (ADD_BATCH_VALUES / d).max(1);
        let stop = crate::parallel::interrupt::poll;
        match &self.store {
            Store::F32(v) => self.sketch = Some(sketch_in_batches(v, d, rows)?),
            Store::F16(v) => self.sketch = Some(sketch_in_batches(v, d, rows)?),
            Store::I8 {
                codes,
                scales,
                res,
                res_scales,
                ..
            } => {
                let mut nb = Nibbles::default();
                for i in (0..n).step_by(rows) {
                    let j = (i + rows).min(n);
                    let (c, r) = (&codes[i * d..j * d], &res[i * d..j * d]);
                    nb.extend(c, &scales[i..j], r, &res_scales[i..j], d);
                    if stop() {
                        return Err(Error::Interrupted);
                    }
                }
                self.nibbles = Some(nb);
            }
        }
        Ok(())
    }

    pub fn len(&self) -> usize {
        self.len
    }
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
    pub fn dim(&self) -> usize {
        self.dim
    }
    pub fn metric(&self) -> Metric {
        self.metric
    }
    pub fn dtype(&self) -> KeyType {
        match self.store {
            Store::F32(_) => KeyType::F32,
            Store::F16(_) => KeyType::F16,
            Store::I8 { .. } => KeyType::I8,
        }
    }
    /// Bytes held by the stored keys and the sketch.
    pub fn nbytes(&self) -> usize {
        let sketch = self.sketch.as_ref().map_or(0, Sketch::nbytes)
            + self.nibbles.as_ref().map_or(0, Nibbles::nbytes);
        sketch
            + match &self.store {
                Store::F32(v) => v.len() * 4,
                Store::F16(v) => v.len() * 2,
                Store::I8 { codes, res, .. } => codes.len() + res.len() + self.len * 12,
            }
    }

    /// Appends `keys` (row-major, `dim` wide): normalised for cosine, then stored in the index's
    /// dtype. Parallel over keys.
    ///
    /// Works in batches of about [`ADD_BATCH_VALUES`] values and runs the Ctrl-C poll installed
    /// on this thread (if any) between them: when it asks to stop, the index is put back as it
    /// was and [`Error::Interrupted`] returned, so an add happens whole or not at all.
    pub fn add(&mut self, keys: &[f32]) -> Result<()> {
        let d = self.dim;
        if !keys.len().is_multiple_of(d) {
            return Err(Error::Value(format!(
                "keys have {} values, not a multiple of the dimension {d}",
                keys.len()
            )));
        }
        let n = keys.len() / d;
        if self.len + n > u32::MAX as usize {
            return Err(Error::Value(format!(
                "an index holds at most {} keys",
                u32::MAX
            )));
        }
        if matches!(self.store, Store::F16(_)) && self.metric == Metric::Dot {
            // Normalised keys always fit; raw ones must, or they would become infinite.
            if let Some(p) = keys.iter().position(|x| x.abs() > 65504.0) {
                return Err(Error::Value(format!(
                    "keys[{}, {}] = {} is outside the float16 range (|x| <= 65504)",
                    p / d,
                    p % d,
                    keys[p]
                )));
            }
        }
        match &mut self.store {
            Store::F32(v) => grow(v, keys.len()),
            Store::F16(v) => grow(v, keys.len()),
            Store::I8 { codes, res, .. } => {
                grow(codes, keys.len());
                grow(res, keys.len());
            }
        }
        let mark = self.mark();
        for batch in keys.chunks((ADD_BATCH_VALUES / d).max(1) * d) {
            self.add_batch(batch);
            if crate::parallel::interrupt::poll() {
                self.restore(mark);
                return Err(Error::Interrupted);
            }
        }
        Ok(())
    }

    /// Where the index stands, for [`restore`](Self::restore).
    fn mark(&self) -> AddMark {
        AddMark {
            len: self.len,
            stats: match &self.store {
                Store::I8 { stats, .. } => Some(*stats),
                _ => None,
            },
            sketch: self.sketch.as_ref().map(Sketch::scalars),
            nibbles: self.nibbles.as_ref().map(|nb| nb.max_scale),
        }
    }

    /// Drops every key added since `m` was taken, and what was derived from them.
    fn restore(&mut self, m: AddMark) {
        let (n, d) = (m.len, self.dim);
        self.len = n;
        match &mut self.store {
            Store::F32(v) => v.truncate(n * d),
            Store::F16(v) => v.truncate(n * d),
            Store::I8 {
                codes,
                scales,
                res,
                res_scales,
                sums,
                stats,
            } => {
                codes.truncate(n * d);
                res.truncate(n * d);
                scales.truncate(n);
                res_scales.truncate(n);
                sums.truncate(n);
                *stats = m.stats.unwrap_or_default();
            }
        }
        if let (Some(sk), Some(old)) = (&mut self.sketch, m.sketch) {
            sk.restore(n, d, old);
        }
        if let (Some(nb), Some(old)) = (&mut self.nibbles, m.nibbles) {
            nb.codes.truncate(n * nibble::row_bytes(d));
            nb.scales.truncate(n);
            nb.max_scale = old;
        }
    }

    /// [`add`](Self::add) of one batch, already checked.
    fn add_batch(&mut self, keys: &[f32]) {
        let d = self.dim;
        let n = keys.len() / d;
        let lv = simd::level();
        let metric = self.metric;
        let pool = crate::parallel::pool(0);
        const CH: usize = 256;
        // The key, normalised for cosine, in a scratch row.
        let prep = move |src: &[f32], tmp: &mut Vec<f32>| {
            tmp.clear();
            tmp.extend_from_slice(src);
            if metric == Metric::Cosine {
                simd::normalize(lv, tmp);
            }
        };
        match &mut self.store {
            Store::F32(v) => {
                let at = v.len();
                v.extend_from_slice(keys);
                if metric == Metric::Cosine {
                    pool.install(|| {
                        v[at..]
                            .par_chunks_mut(d)
                            .for_each(|r| simd::normalize(lv, r))
                    });
                }
                if let Some(sk) = &mut self.sketch {
                    sk.extend(&v[at..], d);
                }
            }
            Store::F16(v) => {
                let at = v.len();
                v.resize(at + n * d, f16::ZERO);
                pool.install(|| {
                    v[at..]
                        .par_chunks_mut(CH * d)
                        .zip(keys.par_chunks(CH * d))
                        .for_each_init(Vec::new, |tmp, (dst, src)| {
                            for (o, s) in dst.chunks_exact_mut(d).zip(src.chunks_exact(d)) {
                                prep(s, tmp);
                                to_f16(tmp, o);
                            }
                        })
                });
                if let Some(sk) = &mut self.sketch {
                    sk.extend(&v[at..], d);
                }
            }
            Store::I8 {
                codes,
                scales,
                res,
                res_scales,
                sums,
                stats,
            } => {
                let at = codes.len();
                codes.resize(at + n * d, 0);
                res.resize(at + n * d, 0);
                let a = scales.len();
                scales.resize(a + n, 0.0);
                res_scales.resize(a + n, 0.0);
                pool.install(|| {
                    codes[at..]
                        .par_chunks_mut(CH * d)
                        .zip(res[at..].par_chunks_mut(CH * d))
                        .zip(
                            scales[a..]
                                .par_chunks_mut(CH)
                                .zip(res_scales[a..].par_chunks_mut(CH)),
                        )
                        .zip(keys.par_chunks(CH * d))
                        .for_each_init(
                            || (Vec::new(), Vec::new()),
                            |(tmp, tmp2), (((c, r), (s, rs)), src)| {
                                for (i, x) in src.chunks_exact(d).enumerate() {
                                    prep(x, tmp);
                                    let (a, b) = quantize_into(
                                        tmp,
                                        &mut c[i * d..(i + 1) * d],
                                        &mut r[i * d..(i + 1) * d],
                                        tmp2,
                                    );
                                    s[i] = a;
                                    rs[i] = b;
                                }
                            },
                        )
                });
                sums.extend(vnni::code_sums(&codes[at..], d));
                stats.extend(&codes[at..], &scales[a..], &res[at..], &res_scales[a..], d);
                if let Some(nb) = &mut self.nibbles {
                    nb.extend(&codes[at..], &scales[a..], &res[at..], &res_scales[a..], d);
                }
            }
        }
        self.len += n;
    }

    /// The `k` best keys for each query (`queries` row-major, `dim` wide). See [`topk::topk`] for
    /// ordering, ties and NaN.
    pub fn search(&self, queries: &[f32], k: usize) -> Result<TopKResult> {
        self.search_at(simd::level(), queries, k)
    }

    pub(crate) fn search_at(&self, lv: Level, queries: &[f32], k: usize) -> Result<TopKResult> {
        self.search_with(lv, vnni::available(), queries, k)
    }

    /// `vnni`: scan int8 keys with AVX-512 VNNI (only used at level Avx512 and where available).
    pub(crate) fn search_with(
        &self,
        lv: Level,
        vnni: bool,
        queries: &[f32],
        k: usize,
    ) -> Result<TopKResult> {
        let d = self.dim;
        let nq = topk::check_search_args(queries.len(), d, self.len, k)?;
        if nq == 0 || k == 0 {
            return Ok(TopKResult::from_lists(vec![vec![]; nq], k));
        }
        let mut q = topk::prepare_queries(lv, queries, d, self.metric);
        // int8 keys are scanned as codes of up to 127 against the query: a query near the float
        // range (dot metric) would overflow there though its true scores do not. Such a query
        // is scanned scaled down by a power of two (exact), and its scores scaled back.
        let back = match (&self.store, self.metric) {
            (Store::I8 { .. }, Metric::Dot) => scale_down_huge(&mut q, d),
            _ => None,
        };
        let n = self.len;
        let lists = match &self.store {
            Store::F32(v) => self
                .sketch_search(lv, vnni, v, &q, nq, k)
                .unwrap_or_else(|| topk::search(lv, &q, nq, v, n, d, k, KeyFactor::One)),
            Store::F16(v) => self
                .sketch_search(lv, vnni, v, &q, nq, k)
                .unwrap_or_else(|| topk::search(lv, &q, nq, v, n, d, k, KeyFactor::One)),
            Store::I8 {
                codes,
                scales,
                res,
                res_scales,
                sums,
                stats,
            } => {
                // The fine score of key `i`: both int8 levels against the f32 query, scaled back
                // by `back` (a query scaled down, above), in f64: the scales of keys near the
                // float range times a query would overflow f32 (and `inf - inf` be NaN) where
                // the score itself is in range, or only beyond it (then `inf`, as float32 keys
                // give, tied by index).
                let fine = |qr: &[f32], i: usize, back: f64| {
                    let (s, rs) = (f64::from(scales[i]), f64::from(res_scales[i]));
                    let mut f = s * f64::from(topk::dot(lv, qr, &codes[i * d..(i + 1) * d]));
                    if rs != 0.0 {
                        f += rs * f64::from(topk::dot(lv, qr, &res[i * d..(i + 1) * d]));
                    }
                    (f * back) as f32
                };
                // Integer dot products where the processor has them: AVX-512 VNNI, or AVX2 (one
                // query keeps up with memory where converting every key byte to f32 does not, and
                // batches do a third of the work); AVX-512 without VNNI scans in f32.
                let kernel = vnni::IntKernel::pick(lv, vnni, d, false);
                let qc = kernel.map(|kernel| kernel.quantize(&q, d));
                let scan_block =
                    |q0: usize, qn: usize, r: Range<usize>, heaps: &mut [TopK]| match (kernel, &qc)
                    {
                        (Some(kernel), Some(qc)) => {
                            vnni::scan(kernel, qc, q0, codes, scales, sums, d, r, heaps)
                        }
                        _ => topk::scan(
                            lv,
                            &q[q0 * d..(q0 + qn) * d],
                            qn,
                            codes,
                            d,
                            r,
                            KeyFactor::PerKey(scales),
                            heaps,
                        ),
                    };
                // The candidates: every key whose int8 score is within a margin of the k-th
                // best (see `I8Stats::slack`), or else a shortlist of the best int8 scores.
                let slack = stats.slack(&q, d, qc.as_ref());
                let mut cands: Option<Vec<Vec<u32>>> = None;
                // One query on VNNI: the 4-bit sketch's candidates, then theirs by int8 score.
                if let (Some(sl), Some(vnni::IntKernel::Vnni), Some(qc), 1) =
                    (&slack, kernel, &qc, nq)
                {
                    if let Some(c4) = self.nibble_candidates(stats, &q, k) {
                        let mut h = TopK::with_slack(k, sl[0], usize::MAX);
                        vnni::scan_ids(qc, codes, scales, sums, d, &c4, &mut h);
                        cands = candidates(vec![h], k, sl[0]).map(|c| vec![c]);
                    }
                }
                if let (None, Some(sl)) = (&cands, &slack) {
                    let cap = (n / 8).max(4 * k + 64);
                    let heap = |qi: usize| TopK::with_slack(k, sl[qi], cap);
                    let Some(parts) = topk::drive_parts(nq, n, d, k, &heap, &scan_block) else {
                        // Interrupted (Ctrl-C): the caller drops the result.
                        return Ok(TopKResult::from_lists(vec![vec![]; nq], k));
                    };
                    cands = parts
                        .into_iter()
                        .enumerate()
                        .map(|(qi, chunks)| candidates(chunks, k, sl[qi]))
                        .collect();
                }
                // Too many candidates (or NaN): the best int8 scores.
                let cands = cands.unwrap_or_else(|| {
                    let short = (4 * k).max(k + 64).min(n);
                    topk::drive(nq, n, d, short, &scan_block)
                        .into_iter()
                        .map(|l| l.into_iter().map(|(_, i)| i).collect())
                        .collect()
                });
                // Rescore the candidates with the f32 query against both int8 levels.
                let rescore = |(qi, c): (usize, Vec<u32>)| {
                    let qr = &q[qi * d..(qi + 1) * d];
                    let b = back.as_ref().map_or(1.0, |b| f64::from(b[qi]));
                    let mut h = TopK::new(k);
                    for i in c {
                        h.push(fine(qr, i as usize, b), i);
                    }
                    h.into_sorted()
                };
                let work: usize = cands.iter().map(Vec::len).sum::<usize>() * d;
                if work >= 1 << 18 {
                    crate::parallel::pool(0)
                        .install(|| cands.into_par_iter().enumerate().map(rescore).collect())
                } else {
                    cands.into_iter().enumerate().map(rescore).collect()
                }
            }
        };
        Ok(TopKResult::from_lists(lists, k))
    }

    /// The search of `keys` (this index's float keys) through the sketch: the same lists as
    /// `topk::search` over the keys (see the module notes), or `None` where the sketch cannot
    /// prove them (no sketch, non-finite values, too many candidates, no integer kernel).
    fn sketch_search<E: Elem>(
        &self,
        lv: Level,
        vnni: bool,
        keys: &[E],
        q: &[f32],
        nq: usize,
        k: usize,
    ) -> Option<Vec<Vec<(f32, u32)>>> {
        let sk = self.sketch.as_ref()?;
        let (n, d) = (self.len, self.dim);
        if sk.nonfinite || n < SKETCH_MIN_KEYS || k > n / 16 {
            return None;
        }
        // The sketch is integer codes: the AVX2 kernel serves AVX-512 without VNNI too.
        let kernel = vnni::IntKernel::pick(lv, vnni, d, true)?;
        if q.iter().any(|x| !x.is_finite()) {
            return None;
        }
        let (qc, bias) = (kernel.quantize(q, d), kernel.bias() as f64);
        // Twice the bound, per query: the candidates' margin below the k-th best sketch score.
        let slack: Vec<f64> = (0..nq)
            .map(|i| {
                let (row, codes) = (&q[i * d..(i + 1) * d], &qc.codes[i * d..(i + 1) * d]);
                let qs = qc.scales[i] as f64;
                let (mut qn, mut dqn) = (0f64, 0f64);
                for (&x, &c) in row.iter().zip(codes) {
                    let x = x as f64;
                    let dq = x - qs * (c as f64 - bias);
                    qn += x * x;
                    dqn += dq * dq;
                }
                2.0 * sk.bound(qn.sqrt(), dqn.sqrt(), d)
            })
            .collect();
        // Scores beyond f32's range would break the bound; such keys are not worth a sketch.
        if slack.iter().any(|s| s.is_nan() || *s >= 1e30) {
            return None;
        }
        let cap = (n / 8).max(4 * k + 64);
        let parts = match topk::drive_parts(
            nq,
            n,
            d,
            k,
            &|qi| TopK::with_slack(k, slack[qi], cap),
            &|q0, _qn, r, heaps| {
                vnni::scan(
                    kernel, &qc, q0, &sk.codes, &sk.scales, &sk.sums, d, r, heaps,
                )
            },
        ) {
            Some(p) => p,
            // Interrupted (Ctrl-C): the caller drops the result.
            None => return Some(vec![vec![]; nq]),
        };
        let finish = |(qi, chunks): (usize, Vec<TopK>)| -> Option<Vec<(f32, u32)>> {
            let ids = candidates(chunks, k, slack[qi])?;
            let mut scores = Vec::with_capacity(ids.len());
            topk::exact_scores(
                lv,
                nq,
                qi,
                &q[qi * d..(qi + 1) * d],
                keys,
                d,
                &ids,
                &mut scores,
            );
            let mut h = TopK::new(k);
            for (&s, &i) in scores.iter().zip(&ids) {
                h.push(s, i);
            }
            Some(h.into_sorted())
        };
        let lists: Option<Vec<_>> = if nq * (4 * k + 64) * d >= 1 << 18 {
            crate::parallel::pool(0)
                .install(|| parts.into_par_iter().enumerate().map(finish).collect())
        } else {
            parts.into_iter().enumerate().map(finish).collect()
        };
        lists
    }

    /// The candidates of one prepared query `q` from the 4-bit sketch (see [`Nibbles`]), sorted
    /// by index, or `None` where the sketch does not apply (none, no VNNI, too many candidates,
    /// interrupted). For a finite query over finite keys (`stats`, the int8 keys'), as the
    /// caller's int8 margin has established.
    fn nibble_candidates(&self, stats: &I8Stats, q: &[f32], k: usize) -> Option<Vec<u32>> {
        let nb = self.nibbles.as_ref()?;
        let (n, d) = (self.len, self.dim);
        // Below 2^20 dimensions the kernel's i32 lanes cannot overflow (15 * 127 * d / 16 each).
        if !nibble::available() || d >= 1 << 20 || n < SKETCH_MIN_KEYS || k > n / 16 {
            return None;
        }
        let qq = nibble::quantize_query(q);
        // The keys' 4-bit rounding, then the query's int8 one.
        let q_step = qq.scale as f64;
        let slack = margin(NIBBLE_Z, norm(q), nb.max_scale, stats.max_norm, q_step);
        if slack.is_nan() || slack >= 1e30 {
            return None;
        }
        let rb = nibble::row_bytes(d);
        let cap = (n / 8).max(4 * k + 64);
        // Interrupted (Ctrl-C): `None`, and the int8 scan that follows stops at once.
        let parts = topk::drive_parts(
            1,
            n,
            rb,
            k,
            &|_| TopK::with_slack(k, slack, cap),
            &|_, _, r, heaps| nibble::scan(&qq, &nb.codes, &nb.scales, rb, r, &mut heaps[0]),
        )?;
        candidates(parts.into_iter().next()?, k, slack)
    }

    /// Writes the index to `path` (little-endian binary; see [`Index::load`]).
    pub fn save(&self, path: &Path) -> Result<()> {
        let mut w = BufWriter::with_capacity(1 << 20, std::fs::File::create(path)?);
        self.write_to(&mut w)?;
        w.flush()?;
        Ok(())
    }

    /// The bytes [`Index::save`] writes.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(36 + self.stored_bytes());
        self.write_to(&mut v).expect("writing to memory");
        v
    }

    /// Reads an index from the bytes of [`Index::to_bytes`] (or of a saved file).
    pub fn from_bytes(b: &[u8]) -> Result<Index> {
        Self::read_from(b, b.len() as u64, "bytes")
    }

    /// The size of the stored keys as written (without the header).
    fn stored_bytes(&self) -> usize {
        match &self.store {
            Store::F32(v) => v.len() * 4,
            Store::F16(v) => v.len() * 2,
            Store::I8 { codes, res, .. } => codes.len() + res.len() + self.len * 8,
        }
    }

    fn write_to(&self, w: &mut impl Write) -> Result<()> {
        let mut w = CrcWriter {
            inner: w,
            crc: crc32fast::Hasher::new(),
        };
        self.write_body(&mut w)?;
        let crc = w.crc.finalize();
        w.inner.write_all(&crc.to_le_bytes())?;
        Ok(())
    }

    /// Everything [`write_to`](Self::write_to) writes but the closing CRC.
    fn write_body(&self, w: &mut impl Write) -> Result<()> {
        w.write_all(MAGIC)?;
        w.write_all(&VERSION.to_le_bytes())?;
        let metric = match self.metric {
            Metric::Cosine => 0u8,
            Metric::Dot => 1,
        };
        let dtype = match self.dtype() {
            KeyType::F32 => 0u8,
            KeyType::F16 => 1,
            KeyType::I8 => 2,
        };
        let flags = FLAG_CRC | if self.has_sketch() { 0 } else { FLAG_NO_SKETCH };
        w.write_all(&[metric, dtype, flags, 0])?;
        w.write_all(&(self.len as u64).to_le_bytes())?;
        w.write_all(&(self.dim as u64).to_le_bytes())?;
        match &self.store {
            Store::F32(v) => write_pod(w, v)?,
            Store::F16(v) => write_pod(w, v)?,
            Store::I8 {
                codes,
                scales,
                res,
                res_scales,
                ..
            } => {
                write_pod(w, codes)?;
                write_pod(w, scales)?;
                write_pod(w, res)?;
                write_pod(w, res_scales)?;
            }
        }
        Ok(())
    }

    /// Reads an index written by [`Index::save`]. A file of another format, version or size is a
    /// `Value` error.
    pub fn load(path: &Path) -> Result<Index> {
        let file = std::fs::File::open(path)?;
        let size = file.metadata()?.len();
        let r = BufReader::with_capacity(1 << 20, file);
        Self::read_from(r, size, &path.display().to_string())
    }

    /// Reads an index of `size` bytes from `r`; `name` (a path) goes into the error messages.
    fn read_from(r: impl Read, size: u64, name: &str) -> Result<Index> {
        let bad = |m: &str| Error::Value(format!("{name}: not a bytepair index file ({m})"));
        let mut r = CrcReader {
            inner: r,
            crc: crc32fast::Hasher::new(),
        };
        let mut head = [0u8; 32];
        r.read_exact(&mut head).map_err(|_| bad("too short"))?;
        if &head[..8] != MAGIC {
            return Err(bad("bad magic"));
        }
        let version = u32::from_le_bytes(head[8..12].try_into().unwrap());
        if version != VERSION {
            return Err(bad(&format!("version {version}, expected {VERSION}")));
        }
        if head[14] & !(FLAG_NO_SKETCH | FLAG_CRC) != 0 || head[15] != 0 {
            return Err(bad("unknown flags"));
        }
        let metric = match head[12] {
            0 => Metric::Cosine,
            1 => Metric::Dot,
            _ => return Err(bad("unknown metric")),
        };
        let len = u64::from_le_bytes(head[16..24].try_into().unwrap());
        let dim = u64::from_le_bytes(head[24..32].try_into().unwrap());
        let nd = len.checked_mul(dim).ok_or_else(|| bad("size overflow"))?;
        let payload = match head[13] {
            0 => nd.checked_mul(4),
            1 => nd.checked_mul(2),
            2 => nd
                .checked_mul(2)
                .and_then(|x| x.checked_add(len.checked_mul(8)?)),
            _ => return Err(bad("unknown dtype")),
        }
        .ok_or_else(|| bad("size overflow"))?;
        let trailer = if head[14] & FLAG_CRC != 0 { 4 } else { 0 };
        if dim > MAX_DIM as u64 {
            return Err(bad(&format!(
                "dimension {dim} is above the limit of {MAX_DIM}"
            )));
        }
        if dim == 0 || len > u32::MAX as u64 || Some(size) != payload.checked_add(32 + trailer) {
            return Err(bad(&format!(
                "size {size} does not match {len} keys of dimension {dim}"
            )));
        }
        let (len, dim, nd) = (len as usize, dim as usize, nd as usize);
        enum Raw {
            F32(Vec<f32>),
            F16(Vec<f16>),
            I8([Vec<i8>; 2], [Vec<f32>; 2]),
        }
        let raw = match head[13] {
            0 => Raw::F32(read_pod(&mut r, nd)?),
            1 => Raw::F16(read_pod(&mut r, nd)?),
            _ => {
                let codes: Vec<i8> = read_pod(&mut r, nd)?;
                let scales: Vec<f32> = read_pod(&mut r, len)?;
                let res: Vec<i8> = read_pod(&mut r, nd)?;
                let res_scales: Vec<f32> = read_pod(&mut r, len)?;
                Raw::I8([codes, res], [scales, res_scales])
            }
        };
        if trailer > 0 {
            let mut want = [0u8; 4];
            r.inner
                .read_exact(&mut want)
                .map_err(|_| bad("too short"))?;
            if r.crc.clone().finalize() != u32::from_le_bytes(want) {
                return Err(Error::Value(format!(
                    "{name}: the index file is corrupted (its CRC-32 does not match its contents)"
                )));
            }
        }
        let store = match raw {
            Raw::F32(v) => Store::F32(v),
            Raw::F16(v) => Store::F16(v),
            Raw::I8([codes, res], [scales, res_scales]) => {
                let mut stats = I8Stats::default();
                stats.extend(&codes, &scales, &res, &res_scales, dim);
                Store::I8 {
                    sums: vnni::code_sums(&codes, dim),
                    codes,
                    scales,
                    res,
                    res_scales,
                    stats,
                }
            }
        };
        let mut index = Index {
            metric,
            dim,
            len,
            store,
            sketch: None,
            nibbles: None,
        };
        index.set_sketch(head[14] & FLAG_NO_SKETCH == 0)?;
        Ok(index)
    }
}

/// Appends `n` rows of `row` codes (set to `fill`) and `n` scales, returning the new parts.
fn append_rows<'a, T: Copy>(
    codes: &'a mut Vec<T>,
    fill: T,
    scales: &'a mut Vec<f32>,
    n: usize,
    row: usize,
) -> (&'a mut [T], &'a mut [f32]) {
    let (at, a) = (codes.len(), scales.len());
    grow(codes, n * row);
    codes.resize(at + n * row, fill);
    scales.resize(a + n, 0.0);
    (&mut codes[at..], &mut scales[a..])
}

/// The sum of `it` in four interleaved partial sums, so that the additions do not each wait for
/// the one before (a build computes one per key).
fn sum4(it: impl Iterator<Item = f64>) -> f64 {
    let mut acc = [0f64; 4];
    for (i, v) in it.enumerate() {
        acc[i % 4] += v;
    }
    (acc[0] + acc[1]) + (acc[2] + acc[3])
}

/// The candidates of a search with slack: the keys that the chunks' heaps (made by
/// [`TopK::with_slack`]) collected and whose score is above the k-th best over all chunks minus
/// `slack`, sorted by index. `None` if a chunk had too many.
fn candidates(chunks: Vec<TopK>, k: usize, slack: f64) -> Option<Vec<u32>> {
    let mut best = Vec::with_capacity(k * chunks.len());
    let mut cands = Vec::new();
    for h in chunks {
        let (heap, near) = h.into_parts();
        cands.extend_from_slice(&near?);
        cands.extend_from_slice(&heap);
        best.extend(heap);
    }
    // The k-th best score over all chunks (each chunk's heap holds its k best).
    if best.len() < k {
        return None;
    }
    let (_, kth, _) = best.select_nth_unstable_by(k - 1, topk::order);
    let cut = kth.0 as f64 - slack;
    // Scores that overflowed to infinity (or NaN) bound nothing: the caller's other path decides.
    if !kth.0.is_finite() || !cut.is_finite() {
        return None;
    }
    // At or above the cut: with a zero slack (a zero query) the k best still qualify.
    let mut ids: Vec<u32> = cands
        .iter()
        .filter(|c| c.0 as f64 >= cut)
        .map(|c| c.1)
        .collect();
    ids.sort_unstable();
    ids.dedup();
    (ids.len() >= k).then_some(ids)
}

/// Reserves room for `extra` more elements, asking Linux to back large buffers with transparent
/// huge pages before they are first written. Why: a scan streams the whole buffer, and with 4 KB
/// pages it takes a TLB miss every 4 KB and the hardware prefetchers stop at each page boundary;
/// numpy's own large arrays get huge pages the same way (`madvise`).
fn grow<T>(v: &mut Vec<T>, extra: usize) {
    if v.capacity() - v.len() >= extra {
        return;
    }
    v.reserve(extra);
    #[cfg(target_os = "linux")]
    {
        let bytes = v.capacity() * std::mem::size_of::<T>();
        if bytes >= 4 << 20 {
            let start = v.as_ptr() as usize;
            let lo = (start + 4095) & !4095;
            let hi = (start + bytes) & !4095;
            if hi > lo {
                // SAFETY: the range lies inside this Vec's allocation; the advice only changes
                // how the kernel backs the pages (failure is harmless and ignored).
                unsafe {
                    libc::madvise(lo as *mut libc::c_void, hi - lo, libc::MADV_HUGEPAGE);
                }
            }
        }
    }
}

/// Plain-old-data element types stored in index files, little endian.
trait Pod: Copy + Default {}
impl Pod for f32 {}
impl Pod for f16 {}
impl Pod for i8 {}

fn write_pod<T: Pod>(w: &mut impl Write, v: &[T]) -> Result<()> {
    #[cfg(target_endian = "little")]
    {
        // SAFETY: T is a plain number type without padding; any byte view of it is valid.
        let bytes = unsafe {
            std::slice::from_raw_parts(v.as_ptr() as *const u8, std::mem::size_of_val(v))
        };
        w.write_all(bytes)?;
        Ok(())
    }
    #[cfg(not(target_endian = "little"))]
    compile_error!("index files are written on little-endian machines only");
}

fn read_pod<T: Pod>(r: &mut impl Read, n: usize) -> Result<Vec<T>> {
    let mut v = Vec::new();
    grow(&mut v, n);
    v.resize(n, T::default());
    // SAFETY: as in write_pod; every bit pattern is a valid T.
    let bytes = unsafe {
        std::slice::from_raw_parts_mut(v.as_mut_ptr() as *mut u8, std::mem::size_of_val(&v[..]))
    };
    r.read_exact(bytes)?;
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::embed::testutil::randn;
    use crate::embed::topk::topk_at;

    fn recall(got: &TopKResult, want: &TopKResult) -> f64 {
        let k = want.k;
        let mut hit = 0;
        for q in 0..want.indices.len() / k {
            let w = &want.indices[q * k..(q + 1) * k];
            hit += got.indices[q * k..(q + 1) * k]
                .iter()
                .filter(|i| w.contains(i))
                .count();
        }
        hit as f64 / want.indices.len() as f64
    }

    #[test]
    fn all_dtypes_find_the_exact_neighbours() {
        let (n, d, nq, k) = (20_000, 96, 20, 10);
        let keys = randn(n * d, 21);
        let q = randn(nq * d, 22);
        for metric in [Metric::Cosine, Metric::Dot] {
            for lv in Level::available() {
                let exact = topk_at(lv, &q, &keys, n, d, k, metric).unwrap();
                for dt in [KeyType::F32, KeyType::F16, KeyType::I8] {
                    let mut ix = Index::new(d, metric, dt).unwrap();
                    ix.add(&keys[..7 * d]).unwrap();
                    ix.add(&keys[7 * d..]).unwrap();
                    assert_eq!(ix.len(), n);
                    let got = ix.search_with(lv, lv == Level::Avx512, &q, k).unwrap();
                    if lv == Level::Avx512 && dt == KeyType::I8 {
                        // The non-VNNI int8 scan must agree too.
                        let plain = ix.search_with(lv, false, &q, k).unwrap();
                        assert!(recall(&plain, &exact) >= 0.99);
                    }
                    let r = recall(&got, &exact);
                    assert!(r >= 0.99, "{metric:?} {lv:?} {dt:?}: recall {r}");
                    for (g, e) in got.scores.iter().zip(&exact.scores) {
                        let tol = if dt == KeyType::F32 { 1e-4 } else { 2e-3 }
                            * if metric == Metric::Dot { 10.0 } else { 1.0 };
                        assert!((g - e).abs() <= tol, "{metric:?} {dt:?} {g} {e}");
                    }
                    if dt == KeyType::F32 {
                        assert_eq!(got.indices, exact.indices);
                    }
                }
            }
        }
    }

    #[test]
    fn single_queries_find_the_exact_neighbours_at_every_level() {
        // One query at a time takes the single-query kernels (int8 on AVX2: 7-bit integer dots).
        let (n, d, nq, k) = (20_000, 96, 12, 10);
        let keys = randn(n * d, 31);
        let q = randn(nq * d, 32);
        for lv in Level::available() {
            let exact = topk_at(lv, &q, &keys, n, d, k, Metric::Cosine).unwrap();
            for dt in [KeyType::F32, KeyType::F16, KeyType::I8] {
                let mut ix = Index::new(d, Metric::Cosine, dt).unwrap();
                ix.add(&keys).unwrap();
                let mut hit = 0;
                for qi in 0..nq {
                    let got = ix
                        .search_with(lv, lv == Level::Avx512, &q[qi * d..(qi + 1) * d], k)
                        .unwrap();
                    let want = &exact.indices[qi * k..(qi + 1) * k];
                    hit += got.indices.iter().filter(|i| want.contains(i)).count();
                    for (g, e) in got.scores.iter().zip(&exact.scores[qi * k..]) {
                        assert!((g - e).abs() <= 2e-3, "{lv:?} {dt:?} {g} {e}");
                    }
                }
                let r = hit as f64 / (nq * k) as f64;
                assert!(r >= 0.99, "{lv:?} {dt:?}: recall {r}");
            }
        }
    }

    /// Keys of several kinds: random, clustered (many scores within the sketch's error of each
    /// other), and exact duplicates (ties that only the index order breaks).
    fn sketch_data(kind: usize, n: usize, d: usize, seed: u64) -> Vec<f32> {
        let r = randn(n * d, seed);
        match kind {
            0 => r,
            1 => {
                let centres = randn(8 * d, seed + 1);
                (0..n * d)
                    .map(|j| centres[(j / d) % 8 * d + j % d] + 0.01 * r[j])
                    .collect()
            }
            _ => (0..n * d).map(|j| r[(j / d) % 97 * d + j % d]).collect(),
        }
    }

    #[test]
    fn the_sketch_gives_the_full_scans_results_bit_for_bit() {
        // Every level and int kernel, both float dtypes and metrics, one query (the row kernel),
        // batches whose last block holds one query (97 = 96 + 1) and k from 1 to 40.
        let (n, d) = (6000, 100);
        let mut taken = 0;
        for kind in 0..3 {
            let keys = sketch_data(kind, n, d, 40 + kind as u64);
            // Queries near keys, so that their neighbours are close together.
            let mut q = randn(97 * d, 50);
            for (j, x) in q.iter_mut().enumerate() {
                *x = 0.3 * *x + keys[(j / d * 61) % n * d + j % d];
            }
            for metric in [Metric::Cosine, Metric::Dot] {
                for dt in [KeyType::F32, KeyType::F16] {
                    let mut ix = Index::new(d, metric, dt).unwrap();
                    ix.add(&keys[..1000 * d]).unwrap();
                    ix.add(&keys[1000 * d..]).unwrap();
                    let mut full = ix.clone();
                    full.set_sketch(false).unwrap();
                    assert!(ix.has_sketch() && !full.has_sketch());
                    for lv in Level::available() {
                        for vnni in [false, true] {
                            for (nq, k) in [(1, 1), (1, 10), (1, 40), (3, 10), (97, 10)] {
                                let qq = &q[..nq * d];
                                let want = full.search_with(lv, vnni, qq, k).unwrap();
                                let got = ix.search_with(lv, vnni, qq, k).unwrap();
                                let what = format!("kind {kind} {metric:?} {dt:?} {lv:?} vnni {vnni} nq {nq} k {k}");
                                assert_eq!(got.indices, want.indices, "{what}");
                                let bits =
                                    |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                                assert_eq!(bits(&got.scores), bits(&want.scores), "{what}");
                                let lq = topk::prepare_queries(lv, qq, d, metric);
                                let used = match &ix.store {
                                    Store::F32(v) => ix.sketch_search(lv, vnni, v, &lq, nq, k),
                                    Store::F16(v) => ix.sketch_search(lv, vnni, v, &lq, nq, k),
                                    _ => unreachable!(),
                                };
                                taken += used.is_some() as usize;
                            }
                        }
                    }
                }
            }
        }
        // Where the processor has AVX2, the sketch answered (it may give up on clustered keys).
        if Level::available().contains(&Level::Avx2) {
            assert!(taken > 0);
        }
    }

    #[test]
    fn int8_candidates_hold_the_neighbours_of_close_scores() {
        // Clustered keys put hundreds of int8 scores within the rounding error of the top 10; a
        // shortlist of the best 74 int8 scores found 4-5 of the 10 there. Their top 10 also lie
        // within 1e-5 of each other, closer than the two levels can order, hence 0.97.
        let (n, d, nq, k) = (20_000, 200, 30, 10);
        for kind in 0..3 {
            let keys = sketch_data(kind, n, d, 70 + kind as u64);
            let mut q = randn(nq * d, 80);
            for (j, x) in q.iter_mut().enumerate() {
                *x = 0.5 * *x + keys[(j / d * 389) % n * d + j % d];
            }
            let want = if kind == 1 { 0.97 } else { 0.99 };
            for metric in [Metric::Cosine, Metric::Dot] {
                let mut ix = Index::new(d, metric, KeyType::I8).unwrap();
                ix.add(&keys).unwrap();
                for lv in Level::available() {
                    let exact = topk_at(lv, &q, &keys, n, d, k, metric).unwrap();
                    for vnni in [false, true] {
                        let batch = ix.search_with(lv, vnni, &q, k).unwrap();
                        let mut hit = 0;
                        for qi in 0..nq {
                            let w = &exact.indices[qi * k..(qi + 1) * k];
                            let one = ix.search_with(lv, vnni, &q[qi * d..(qi + 1) * d], k);
                            for got in [
                                &one.unwrap().indices[..],
                                &batch.indices[qi * k..(qi + 1) * k],
                            ] {
                                hit += got.iter().filter(|i| w.contains(i)).count();
                            }
                        }
                        let r = hit as f64 / (2 * nq * k) as f64;
                        assert!(
                            r >= want,
                            "kind {kind} {metric:?} {lv:?} vnni {vnni}: recall {r}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn the_int8_indexs_4_bit_sketch_finds_what_its_full_scan_finds() {
        if !nibble::available() {
            return;
        }
        let (n, d, nq, k) = (20_000, 200, 40, 10);
        for kind in 0..3 {
            let keys = sketch_data(kind, n, d, 70 + kind as u64);
            let mut q = randn(nq * d, 80);
            for (j, x) in q.iter_mut().enumerate() {
                *x = 0.5 * *x + keys[(j / d * 389) % n * d + j % d];
            }
            for metric in [Metric::Cosine, Metric::Dot] {
                let mut ix = Index::new(d, metric, KeyType::I8).unwrap();
                ix.add(&keys[..3000 * d]).unwrap();
                ix.add(&keys[3000 * d..]).unwrap();
                let mut full = ix.clone();
                full.set_sketch(false).unwrap();
                let (mut same, mut taken) = (0, 0);
                for qi in 0..nq {
                    let qq = &q[qi * d..(qi + 1) * d];
                    let got = ix.search_with(Level::Avx512, true, qq, k).unwrap();
                    let want = full.search_with(Level::Avx512, true, qq, k).unwrap();
                    same += (got.indices == want.indices) as usize;
                    let lq = topk::prepare_queries(Level::Avx512, qq, d, metric);
                    let Store::I8 { stats, .. } = &ix.store else {
                        unreachable!()
                    };
                    taken += ix.nibble_candidates(stats, &lq, k).is_some() as usize;
                }
                let what = format!("kind {kind} {metric:?}");
                assert!(same >= nq - 1, "{what}: {same} of {nq} as the int8 scan");
                assert_eq!(taken, nq, "{what}");
            }
        }
    }

    #[test]
    fn the_sketch_steps_aside_for_nan_small_indexes_and_large_k() {
        let (n, d) = (5000, 32);
        let mut keys = randn(n * d, 60);
        let q = randn(2 * d, 61);
        let lv = simd::level();
        let run = |ix: &Index, q: &[f32], k: usize| match &ix.store {
            Store::F32(v) => ix.sketch_search(lv, true, v, q, q.len() / d, k),
            _ => unreachable!(),
        };
        let mut ix = Index::new(d, Metric::Dot, KeyType::F32).unwrap();
        ix.add(&keys).unwrap();
        if lv != Level::Generic {
            assert!(run(&ix, &q, 5).is_some());
        }
        assert!(run(&ix, &q, n / 16 + 1).is_none());
        let mut nanq = q.clone();
        nanq[3] = f32::NAN;
        assert!(run(&ix, &nanq, 5).is_none());
        let small = {
            let mut s = Index::new(d, Metric::Dot, KeyType::F32).unwrap();
            s.add(&keys[..(SKETCH_MIN_KEYS - 1) * d]).unwrap();
            s
        };
        assert!(run(&small, &q, 5).is_none());
        // Identical keys: every key is a candidate, past the cap; the full scan answers.
        let same: Vec<f32> = (0..n * d).map(|j| keys[j % d]).collect();
        let mut flat = Index::new(d, Metric::Dot, KeyType::F32).unwrap();
        flat.add(&same).unwrap();
        assert!(run(&flat, &q, 5).is_none());
        assert_eq!(flat.search(&q[..d], 3).unwrap().indices, vec![0, 1, 2]);
        keys[7] = f32::NAN;
        ix.add(&keys[..d]).unwrap();
        assert!(run(&ix, &q, 5).is_none());
        // And the search itself still ranks the NaN key last, as the full scan does.
        let got = ix.search(&q, 3).unwrap();
        assert!(got.indices.iter().all(|&i| i != n as i64));
    }

    #[test]
    fn save_load_roundtrip_and_bad_files() {
        let dir = std::env::temp_dir().join(format!("bp-embed-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (n, d) = (300, 24);
        let keys = randn(n * d, 5);
        let q = randn(3 * d, 6);
        for dt in [KeyType::F32, KeyType::F16, KeyType::I8] {
            let mut ix = Index::new(d, Metric::Dot, dt).unwrap();
            ix.add(&keys).unwrap();
            let p = dir.join(format!("{}.idx", dt.name()));
            ix.save(&p).unwrap();
            let back = Index::load(&p).unwrap();
            assert_eq!(
                (back.len(), back.dim(), back.metric(), back.dtype()),
                (n, d, Metric::Dot, dt)
            );
            let (a, b) = (ix.search(&q, 5).unwrap(), back.search(&q, 5).unwrap());
            assert_eq!((&a.scores, &a.indices), (&b.scores, &b.indices));
            // The same bytes in memory (pickling).
            let mem = Index::from_bytes(&ix.to_bytes()).unwrap();
            let c = mem.search(&q, 5).unwrap();
            assert_eq!((c.scores, c.indices), (b.scores, b.indices));
            assert_eq!(ix.to_bytes(), std::fs::read(&p).unwrap());
            assert!(matches!(
                Index::from_bytes(&ix.to_bytes()[..40]),
                Err(Error::Value(_))
            ));
            // The sketch setting survives (the sketch is rebuilt, not stored).
            assert!(back.has_sketch());
            assert_eq!(back.nbytes(), ix.nbytes());
            let mut off = ix.clone();
            off.set_sketch(false).unwrap();
            off.save(&p).unwrap();
            assert!(!Index::load(&p).unwrap().has_sketch());
            ix.save(&p).unwrap();
            // Unknown flags.
            let mut bytes = std::fs::read(&p).unwrap();
            bytes[14] |= 4;
            std::fs::write(&p, &bytes).unwrap();
            assert!(matches!(Index::load(&p), Err(Error::Value(_))));
            // Any changed byte of the keys (or of the CRC) is caught by the closing CRC-32.
            let good = ix.to_bytes();
            for at in [32, good.len() / 2, good.len() - 5, good.len() - 1] {
                let mut bytes = good.clone();
                bytes[at] ^= 0x10;
                match Index::from_bytes(&bytes) {
                    Err(Error::Value(m)) => assert!(m.contains("corrupted"), "{m}"),
                    other => panic!("byte {at}: {:?}", other.map(|i| i.len())),
                }
            }
            // A file written before the CRC (flag clear, no trailer) still loads, unchecked.
            let mut old = good[..good.len() - 4].to_vec();
            old[14] &= !FLAG_CRC;
            let o = Index::from_bytes(&old).unwrap().search(&q, 5).unwrap();
            assert_eq!((&o.scores, &o.indices), (&a.scores, &a.indices));
            ix.save(&p).unwrap();
            // Truncated file.
            let bytes = std::fs::read(&p).unwrap();
            std::fs::write(&p, &bytes[..bytes.len() - 1]).unwrap();
            assert!(matches!(Index::load(&p), Err(Error::Value(_))));
        }
        std::fs::write(dir.join("junk"), b"hello").unwrap();
        assert!(matches!(
            Index::load(&dir.join("junk")),
            Err(Error::Value(_))
        ));
        assert!(matches!(
            Index::load(&dir.join("missing")),
            Err(Error::Io(_))
        ));
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn an_interrupted_add_leaves_the_index_as_it_was() {
        let (n, d) = (6000, 24);
        let keys = randn(n * d, 77);
        let more = randn(n * d, 78);
        // A key with NaN in the interrupted add must not turn the sketch off for good.
        let mut bad = more.clone();
        bad[5 * d] = f32::NAN;
        for (metric, dtype) in [
            (Metric::Cosine, KeyType::F32),
            (Metric::Dot, KeyType::F16),
            (Metric::Cosine, KeyType::I8),
        ] {
            let mut ix = Index::new(d, metric, dtype).unwrap();
            ix.add(&keys).unwrap();
            let before = format!("{ix:?}");
            let found = ix.search(&more[..3 * d], 5).unwrap();
            for extra in [&more, &bad] {
                // The poll is due 20 ms after it is installed: the add stops after one batch.
                let (r, hit) = crate::parallel::interrupt::with_poll(&|| true, || {
                    std::thread::sleep(std::time::Duration::from_millis(30));
                    ix.add(extra)
                });
                assert!(hit && matches!(r, Err(Error::Interrupted)), "{dtype:?}");
                assert_eq!(format!("{ix:?}"), before, "{dtype:?}");
                assert_eq!(ix.search(&more[..3 * d], 5).unwrap(), found);
            }
            // Added in batches or in two calls, the same index.
            ix.add(&more).unwrap();
            let mut two = Index::new(d, metric, dtype).unwrap();
            two.add(&keys[..1234 * d]).unwrap();
            two.add(&keys[1234 * d..]).unwrap();
            two.add(&more).unwrap();
            assert_eq!(format!("{ix:?}"), format!("{two:?}"), "{dtype:?}");
        }
    }

    #[test]
    fn an_interrupted_sketch_build_or_load_is_an_error() {
        let (n, d) = (6000, 24);
        let keys = randn(n * d, 79);
        let later = || std::thread::sleep(std::time::Duration::from_millis(30));
        for dtype in [KeyType::F32, KeyType::F16, KeyType::I8] {
            let mut ix = Index::new(d, Metric::Cosine, dtype).unwrap();
            ix.add(&keys).unwrap();
            let bytes = ix.to_bytes();
            let (r, hit) = crate::parallel::interrupt::with_poll(&|| true, || {
                later();
                Index::from_bytes(&bytes)
            });
            assert!(hit && matches!(r, Err(Error::Interrupted)), "{dtype:?}");
            ix.set_sketch(false).unwrap();
            let (r, hit) = crate::parallel::interrupt::with_poll(&|| true, || {
                later();
                ix.set_sketch(true)
            });
            assert!(hit && matches!(r, Err(Error::Interrupted)), "{dtype:?}");
            assert!(!ix.has_sketch());
            // Uninterrupted, the sketch built in batches is the one the add built.
            ix.set_sketch(true).unwrap();
            let mut added = Index::new(d, Metric::Cosine, dtype).unwrap();
            added.add(&keys).unwrap();
            let loaded = Index::from_bytes(&bytes).unwrap();
            assert_eq!(format!("{ix:?}"), format!("{added:?}"), "{dtype:?}");
            assert_eq!(format!("{loaded:?}"), format!("{added:?}"), "{dtype:?}");
        }
    }

    #[test]
    fn empty_index_and_bad_args() {
        let ix = Index::new(4, Metric::Cosine, KeyType::I8).unwrap();
        assert!(ix.search(&[1.0; 4], 1).is_err());
        assert_eq!(ix.search(&[1.0; 4], 0).unwrap().scores.len(), 0);
        assert!(Index::new(0, Metric::Cosine, KeyType::F32).is_err());
        let mut ix = Index::new(4, Metric::Cosine, KeyType::F16).unwrap();
        assert!(ix.add(&[1.0; 5]).is_err());
        ix.add(&[1e6, 0.0, 0.0, 0.0]).unwrap(); // normalised first: fits
        let mut ix = Index::new(2, Metric::Dot, KeyType::F16).unwrap();
        let e = ix.add(&[1.0, 1e6]).unwrap_err().to_string();
        assert!(e.contains("keys[0, 1]") && e.contains("float16"), "{e}");
        assert_eq!(ix.len(), 0);
    }
}
