//! Runtime-dispatched SIMD primitives for the embedding kernels.
//!
//! Why: wheels are built for baseline x86-64, yet the kernels must use the 512-bit units where the
//! processor has them. Each hot routine exists in up to three versions: hand-written AVX-512
//! intrinsics, and one portable body that LLVM auto-vectorises, compiled once for AVX2+FMA and once
//! for the baseline. [`level`] picks the best once per process; every kernel also takes a [`Level`]
//! so that tests run all versions on one machine and compare them.
use half::f16;
use std::sync::OnceLock;

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

/// Which version of the kernels runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Level {
    /// Portable code, compiled for the baseline target.
    Generic,
    /// Portable code compiled with AVX2, FMA and F16C enabled.
    Avx2,
    /// Hand-written AVX-512 (F, BW, VL) intrinsics.
    Avx512,
}

impl Level {
    /// All levels this processor can run, best last.
    pub fn available() -> Vec<Level> {
        let mut v = vec![Level::Generic];
        if has_avx2() {
            v.push(Level::Avx2);
        }
        if has_avx512() {
            v.push(Level::Avx512);
        }
        v
    }
}

#[cfg(target_arch = "x86_64")]
fn has_avx2() -> bool {
    is_x86_feature_detected!("avx2")
        && is_x86_feature_detected!("fma")
        && is_x86_feature_detected!("f16c")
}
#[cfg(target_arch = "x86_64")]
fn has_avx512() -> bool {
    has_avx2()
        && is_x86_feature_detected!("avx512f")
        && is_x86_feature_detected!("avx512bw")
        && is_x86_feature_detected!("avx512vl")
}
#[cfg(not(target_arch = "x86_64"))]
fn has_avx2() -> bool {
    false
}
#[cfg(not(target_arch = "x86_64"))]
fn has_avx512() -> bool {
    false
}

/// The best level for this processor. `BYTEPAIR_SIMD=generic|avx2` lowers it (for testing).
pub fn level() -> Level {
    static L: OnceLock<Level> = OnceLock::new();
    *L.get_or_init(|| {
        let best = *Level::available().last().unwrap_or(&Level::Generic);
        match std::env::var("BYTEPAIR_SIMD").as_deref() {
            Ok("generic") => Level::Generic,
            Ok("avx2") if best != Level::Generic => Level::Avx2,
            _ => best,
        }
    })
}

/// An element type a table or key matrix may hold. Every kernel computes in f32.
pub trait Elem: Copy + Send + Sync + Default + 'static {
    fn to_f32(self) -> f32;
    /// Converts `src` into `dst` (same length); written so that LLVM vectorises it.
    fn convert(src: &[Self], dst: &mut [f32]);
    /// Loads 16 values as f32.
    ///
    /// # Safety
    /// `p..p+16` must be readable and the processor must have AVX-512F/BW/VL.
    #[cfg(target_arch = "x86_64")]
    unsafe fn load16(p: *const Self) -> __m512;
    /// Loads the first `n < 16` values as f32, zeros elsewhere.
    ///
    /// # Safety
    /// `p..p+n` must be readable and the processor must have AVX-512F/BW/VL.
    #[cfg(target_arch = "x86_64")]
    unsafe fn load16_tail(p: *const Self, n: usize) -> __m512;
    /// Loads 8 values as f32.
    ///
    /// # Safety
    /// `p..p+8` must be readable and the processor must have AVX2, FMA and F16C.
    #[cfg(target_arch = "x86_64")]
    unsafe fn load8(p: *const Self) -> __m256;
}

/// Loads the first `n < 8` values at `p` as f32, zeros elsewhere (the AVX2 kernels' tails).
///
/// # Safety
/// `p..p+n` must be readable and the processor must have AVX.
#[cfg(target_arch = "x86_64")]
#[inline]
#[target_feature(enable = "avx")]
pub(crate) unsafe fn load8_tail<E: Elem>(p: *const E, n: usize) -> __m256 {
    let mut b = [0f32; 8];
    for (i, x) in b.iter_mut().enumerate().take(n) {
        *x = (*p.add(i)).to_f32();
    }
    _mm256_loadu_ps(b.as_ptr())
}

/// The sum of the eight lanes of `v`.
#[cfg(target_arch = "x86_64")]
#[inline]
#[target_feature(enable = "avx")]
pub(crate) unsafe fn hsum8(v: __m256) -> f32 {
    let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
    let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    let s = _mm_add_ss(s, _mm_shuffle_ps::<0b01>(s, s));
    _mm_cvtss_f32(s)
}

impl Elem for f32 {
    #[inline(always)]
    fn to_f32(self) -> f32 {
        self
    }
    #[inline(always)]
    fn convert(src: &[f32], dst: &mut [f32]) {
        dst.copy_from_slice(src);
    }
    #[cfg(target_arch = "x86_64")]
    #[inline]
    #[target_feature(enable = "avx512f")]
    unsafe fn load16(p: *const f32) -> __m512 {
        _mm512_loadu_ps(p)
    }
    #[cfg(target_arch = "x86_64")]
    #[inline]
    #[target_feature(enable = "avx512f")]
    unsafe fn load16_tail(p: *const f32, n: usize) -> __m512 {
        _mm512_maskz_loadu_ps(tail_mask(n), p)
    }
    #[cfg(target_arch = "x86_64")]
    #[inline]
    #[target_feature(enable = "avx")]
    unsafe fn load8(p: *const f32) -> __m256 {
        _mm256_loadu_ps(p)
    }
}

/// Bit-exact f16 -> f32 without branches, so that loops over it vectorise: shifting the exponent
/// and mantissa into f32 position and multiplying by 2^112 re-biases normals and subnormals
/// exactly; infinities and NaNs get the all-ones exponent.
#[inline(always)]
fn f16_bits_to_f32(h: u16) -> f32 {
    let h = h as u32;
    let sign = (h & 0x8000) << 16;
    let em = h & 0x7fff;
    let scaled = f32::from_bits(em << 13) * f32::from_bits(0x7780_0000); // 2^112
    let bits = if em >= 0x7c00 {
        (em << 13) | 0x7f80_0000
    } else {
        scaled.to_bits()
    };
    f32::from_bits(bits | sign)
}

impl Elem for f16 {
    #[inline(always)]
    fn to_f32(self) -> f32 {
        f16_bits_to_f32(self.to_bits())
    }
    #[inline(always)]
    fn convert(src: &[f16], dst: &mut [f32]) {
        for (d, s) in dst.iter_mut().zip(src) {
            *d = f16_bits_to_f32(s.to_bits());
        }
    }
    #[cfg(target_arch = "x86_64")]
    #[inline]
    #[target_feature(enable = "avx512f")]
    unsafe fn load16(p: *const f16) -> __m512 {
        _mm512_cvtph_ps(_mm256_loadu_si256(p as *const __m256i))
    }
    #[cfg(target_arch = "x86_64")]
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl")]
    unsafe fn load16_tail(p: *const f16, n: usize) -> __m512 {
        _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(tail_mask(n), p as *const i16))
    }
    #[cfg(target_arch = "x86_64")]
    #[inline]
    #[target_feature(enable = "avx,f16c")]
    unsafe fn load8(p: *const f16) -> __m256 {
        _mm256_cvtph_ps(_mm_loadu_si128(p as *const __m128i))
    }
}

impl Elem for i8 {
    #[inline(always)]
    fn to_f32(self) -> f32 {
        self as f32
    }
    #[inline(always)]
    fn convert(src: &[i8], dst: &mut [f32]) {
        for (d, s) in dst.iter_mut().zip(src) {
            *d = *s as f32;
        }
    }
    #[cfg(target_arch = "x86_64")]
    #[inline]
    #[target_feature(enable = "avx512f")]
    unsafe fn load16(p: *const i8) -> __m512 {
        _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128(p as *const __m128i)))
    }
    #[cfg(target_arch = "x86_64")]
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl")]
    unsafe fn load16_tail(p: *const i8, n: usize) -> __m512 {
        _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_maskz_loadu_epi8(tail_mask(n), p)))
    }
    #[cfg(target_arch = "x86_64")]
    #[inline]
    #[target_feature(enable = "avx2")]
    unsafe fn load8(p: *const i8) -> __m256 {
        _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64(p as *const __m128i)))
    }
}

#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn tail_mask(n: usize) -> u16 {
    ((1u32 << n) - 1) as u16
}

// ---------------------------------------------------------------------------------------------
// Row operations used by gather: acc[i] (op)= w * row[i].

/// How a row is folded into an accumulator.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RowOp {
    /// `acc = w * row` (first row of a bag; no need to clear the accumulator first).
    Set,
    /// `acc += w * row`.
    Add,
    /// `acc = max(acc, w * row)`, NaN-ignoring like `np.fmax`.
    Max,
}

#[inline(always)]
fn row_generic<E: Elem>(op: RowOp, acc: &mut [f32], row: &[E], w: f32) {
    const C: usize = 32;
    let mut buf = [0f32; C];
    let n = acc.len();
    let mut i = 0;
    while i < n {
        let m = C.min(n - i);
        E::convert(&row[i..i + m], &mut buf[..m]);
        let a = &mut acc[i..i + m];
        match op {
            RowOp::Set => {
                for (x, r) in a.iter_mut().zip(&buf[..m]) {
                    *x = w * *r;
                }
            }
            RowOp::Add => {
                for (x, r) in a.iter_mut().zip(&buf[..m]) {
                    *x += w * *r;
                }
            }
            RowOp::Max => {
                for (x, r) in a.iter_mut().zip(&buf[..m]) {
                    *x = x.max(w * *r);
                }
            }
        }
        i += m;
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn row_avx2<E: Elem>(op: RowOp, acc: &mut [f32], row: &[E], w: f32) {
    // As in `rows_avx512`: no multiplications for weight 1 (same results).
    if w == 1.0 {
        row_avx2_w::<E, true>(op, acc, row, w)
    } else {
        row_avx2_w::<E, false>(op, acc, row, w)
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
unsafe fn row_avx2_w<E: Elem, const UNIT: bool>(op: RowOp, acc: &mut [f32], row: &[E], w: f32) {
    let n = acc.len();
    let a = acc.as_mut_ptr();
    let r = row.as_ptr();
    let wv = _mm256_set1_ps(w);
    let mut i = 0;
    while i + 8 <= n {
        let x = E::load8(r.add(i));
        let v = match op {
            RowOp::Set if UNIT => x,
            RowOp::Set => _mm256_mul_ps(wv, x),
            _ => fold8::<1, UNIT>(op, _mm256_loadu_ps(a.add(i)), [x], [wv]),
        };
        _mm256_storeu_ps(a.add(i), v);
        i += 8;
    }
    if i < n {
        row_generic(op, &mut acc[i..], &row[i..], w);
    }
}

/// `av (op)= w[0] * x[0] (op) ... (op) w[R-1] * x[R-1]` on 8 lanes, in the order the AVX-512
/// kernels use (sums, for `R` a multiple of 4: each group of four as
/// `(w0 x0 + w1 x1) + (w2 x2 + w3 x3)`, the groups added in order, then added to `av`; max: one
/// row after another, NaN-ignoring like `np.fmax`).
#[cfg(target_arch = "x86_64")]
#[inline]
#[target_feature(enable = "avx2,fma")]
unsafe fn fold8<const R: usize, const UNIT: bool>(
    op: RowOp,
    av: __m256,
    x: [__m256; R],
    w: [__m256; R],
) -> __m256 {
    match op {
        RowOp::Max => {
            let mut v = av;
            for j in 0..R {
                let wx = if UNIT {
                    x[j]
                } else {
                    _mm256_mul_ps(w[j], x[j])
                };
                // max_ps returns its second operand when either is NaN: a NaN row keeps the
                // accumulator, and a NaN accumulator is then replaced by the row.
                let m = _mm256_max_ps(wx, v);
                v = _mm256_blendv_ps(m, wx, _mm256_cmp_ps::<_CMP_UNORD_Q>(v, v));
            }
            v
        }
        _ => {
            let s = if R.is_multiple_of(4) {
                let quad = |q: usize| {
                    if UNIT {
                        let s01 = _mm256_add_ps(x[q], x[q + 1]);
                        _mm256_add_ps(s01, _mm256_add_ps(x[q + 2], x[q + 3]))
                    } else {
                        let s01 = _mm256_fmadd_ps(w[q + 1], x[q + 1], _mm256_mul_ps(w[q], x[q]));
                        let s23 =
                            _mm256_fmadd_ps(w[q + 3], x[q + 3], _mm256_mul_ps(w[q + 2], x[q + 2]));
                        _mm256_add_ps(s01, s23)
                    }
                };
                let mut s = quad(0);
                for q in (4..R).step_by(4) {
                    s = _mm256_add_ps(s, quad(q));
                }
                s
            } else if UNIT {
                let mut s = x[0];
                for j in 1..R {
                    s = _mm256_add_ps(s, x[j]);
                }
                s
            } else {
                let mut s = _mm256_mul_ps(w[0], x[0]);
                for j in 1..R {
                    s = _mm256_fmadd_ps(w[j], x[j], s);
                }
                s
            };
            if op == RowOp::Set {
                s
            } else if R == 1 && !UNIT {
                _mm256_fmadd_ps(w[0], x[0], av)
            } else {
                _mm256_add_ps(av, s)
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn rows_avx2<E: Elem, const R: usize>(
    op: RowOp,
    acc: &mut [f32],
    rows: [&[E]; R],
    w: [f32; R],
) {
    // As in `rows_avx512`: no multiplications when every weight is 1 (same results).
    if w == [1.0; R] {
        rows_avx2_w::<E, true, R>(op, acc, rows, w)
    } else {
        rows_avx2_w::<E, false, R>(op, acc, rows, w)
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
unsafe fn rows_avx2_w<E: Elem, const UNIT: bool, const R: usize>(
    op: RowOp,
    acc: &mut [f32],
    rows: [&[E]; R],
    w: [f32; R],
) {
    let n = acc.len();
    let a = acc.as_mut_ptr();
    let r = rows.map(|row| row.as_ptr());
    let mut wv = [_mm256_setzero_ps(); R];
    for j in 0..R {
        wv[j] = _mm256_set1_ps(w[j]);
    }
    let mut x = [_mm256_setzero_ps(); R];
    let mut i = 0;
    while i + 8 <= n {
        for j in 0..R {
            x[j] = E::load8(r[j].add(i));
        }
        let av = if op == RowOp::Set {
            _mm256_setzero_ps()
        } else {
            _mm256_loadu_ps(a.add(i))
        };
        _mm256_storeu_ps(a.add(i), fold8::<R, UNIT>(op, av, x, wv));
        i += 8;
    }
    if i < n {
        let m = n - i;
        for j in 0..R {
            x[j] = load8_tail(r[j].add(i), m);
        }
        let mut buf = [0f32; 8];
        buf[..m].copy_from_slice(&acc[i..]);
        let v = fold8::<R, UNIT>(op, _mm256_loadu_ps(buf.as_ptr()), x, wv);
        _mm256_storeu_ps(buf.as_mut_ptr(), v);
        acc[i..].copy_from_slice(&buf[..m]);
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,fma")]
unsafe fn row_avx512<E: Elem>(op: RowOp, acc: &mut [f32], row: &[E], w: f32) {
    // As in `rows_avx512`: no multiplications for weight 1 (same results).
    if w == 1.0 {
        row_avx512_w::<E, true>(op, acc, row, w)
    } else {
        row_avx512_w::<E, false>(op, acc, row, w)
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,fma")]
#[inline]
unsafe fn row_avx512_w<E: Elem, const UNIT: bool>(op: RowOp, acc: &mut [f32], row: &[E], w: f32) {
    let n = acc.len();
    let a = acc.as_mut_ptr();
    let r = row.as_ptr();
    let wv = _mm512_set1_ps(w);
    let mut i = 0;
    macro_rules! step {
        ($x:expr, $av:expr) => {
            match op {
                RowOp::Set if UNIT => $x,
                RowOp::Set => _mm512_mul_ps(wv, $x),
                RowOp::Add if UNIT => _mm512_add_ps($x, $av),
                RowOp::Add => _mm512_fmadd_ps(wv, $x, $av),
                // np.fmax semantics: max_ps returns its second operand when either is NaN, so a
                // NaN in the row keeps the accumulator; a NaN accumulator is replaced by the row.
                RowOp::Max => {
                    let wx = if UNIT { $x } else { _mm512_mul_ps(wv, $x) };
                    let m = _mm512_max_ps(wx, $av);
                    _mm512_mask_blend_ps(_mm512_cmp_ps_mask::<_CMP_UNORD_Q>($av, $av), m, wx)
                }
            }
        };
    }
    while i + 32 <= n {
        let x0 = E::load16(r.add(i));
        let x1 = E::load16(r.add(i + 16));
        let (a0, a1) = if op == RowOp::Set {
            (_mm512_setzero_ps(), _mm512_setzero_ps())
        } else {
            (_mm512_loadu_ps(a.add(i)), _mm512_loadu_ps(a.add(i + 16)))
        };
        _mm512_storeu_ps(a.add(i), step!(x0, a0));
        _mm512_storeu_ps(a.add(i + 16), step!(x1, a1));
        i += 32;
    }
    while i < n {
        let m = (n - i).min(16);
        let mask = tail_mask(m);
        let x = if m == 16 {
            E::load16(r.add(i))
        } else {
            E::load16_tail(r.add(i), m)
        };
        let av = _mm512_maskz_loadu_ps(mask, a.add(i));
        let v = step!(x, av);
        _mm512_mask_storeu_ps(a.add(i), mask, v);
        i += m;
    }
}

/// [`rows_avx512_w`], with the multiplications left out when every weight is 1 (the unweighted
/// pools): the results are the same (`1 * x` is exact, and `fma(1, x, y)` rounds as `x + y`
/// does), and without them the loop keeps more rows' loads in flight (measured on the gather,
/// [50257, 768] f32 table, one thread, caches evicted: about 10% faster).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,fma")]
unsafe fn rows_avx512<E: Elem, const R: usize>(
    op: RowOp,
    acc: &mut [f32],
    rows: [&[E]; R],
    w: [f32; R],
) {
    if w == [1.0; R] {
        rows_avx512_w::<E, true, R>(op, acc, rows, w)
    } else {
        rows_avx512_w::<E, false, R>(op, acc, rows, w)
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,fma")]
#[inline]
unsafe fn rows_avx512_w<E: Elem, const UNIT: bool, const R: usize>(
    op: RowOp,
    acc: &mut [f32],
    rows: [&[E]; R],
    w: [f32; R],
) {
    const { assert!(R.is_multiple_of(4) && R > 0) };
    let n = acc.len();
    let a = acc.as_mut_ptr();
    let r = rows.map(|row| row.as_ptr());
    let mut wv = [_mm512_setzero_ps(); R];
    for j in 0..R {
        wv[j] = _mm512_set1_ps(w[j]);
    }
    // acc (op)= the weighted rows at `x`; `av` is the accumulator's current value. Sums: each
    // group of four as a tree, the groups in order (as `fold8`).
    macro_rules! fold {
        ($x:expr, $av:expr) => {{
            let x = $x;
            match op {
                RowOp::Max => {
                    let mut v = $av;
                    for j in 0..R {
                        let wx = if UNIT {
                            x[j]
                        } else {
                            _mm512_mul_ps(wv[j], x[j])
                        };
                        let mx = _mm512_max_ps(wx, v);
                        v = _mm512_mask_blend_ps(_mm512_cmp_ps_mask::<_CMP_UNORD_Q>(v, v), mx, wx);
                    }
                    v
                }
                _ => {
                    let quad = |q: usize| {
                        if UNIT {
                            let s01 = _mm512_add_ps(x[q], x[q + 1]);
                            _mm512_add_ps(s01, _mm512_add_ps(x[q + 2], x[q + 3]))
                        } else {
                            let s01 =
                                _mm512_fmadd_ps(wv[q + 1], x[q + 1], _mm512_mul_ps(wv[q], x[q]));
                            let s23 = _mm512_fmadd_ps(
                                wv[q + 3],
                                x[q + 3],
                                _mm512_mul_ps(wv[q + 2], x[q + 2]),
                            );
                            _mm512_add_ps(s01, s23)
                        }
                    };
                    let mut s = quad(0);
                    for q in (4..R).step_by(4) {
                        s = _mm512_add_ps(s, quad(q));
                    }
                    if op == RowOp::Set {
                        s
                    } else {
                        _mm512_add_ps($av, s)
                    }
                }
            }
        }};
    }
    let mut x = [_mm512_setzero_ps(); R];
    let mut i = 0;
    while i + 16 <= n {
        for j in 0..R {
            x[j] = E::load16(r[j].add(i));
        }
        let av = if op == RowOp::Set {
            _mm512_setzero_ps()
        } else {
            _mm512_loadu_ps(a.add(i))
        };
        _mm512_storeu_ps(a.add(i), fold!(x, av));
        i += 16;
    }
    if i < n {
        let m = n - i;
        let mask = tail_mask(m);
        for j in 0..R {
            x[j] = E::load16_tail(r[j].add(i), m);
        }
        let av = _mm512_maskz_loadu_ps(mask, a.add(i));
        _mm512_mask_storeu_ps(a.add(i), mask, fold!(x, av));
    }
}

/// Folds `R` rows (a multiple of 4) at once: `acc (op)= w[0]*rows[0] (op) ... (op)
/// w[R-1]*rows[R-1]` (`Set` stores the sum, or for max pooling use `Max` on an initialised
/// accumulator). One pass over `acc` instead of `R`, and `R` independent load streams: rows in
/// memory are read faster the more of them are read at once (each is a stream the hardware
/// prefetcher follows).
#[inline]
pub fn rows_op<E: Elem, const R: usize>(
    lv: Level,
    op: RowOp,
    acc: &mut [f32],
    rows: [&[E]; R],
    w: [f32; R],
) {
    let n = acc.len();
    let rows = rows.map(|r| &r[..n]);
    match lv {
        #[cfg(target_arch = "x86_64")]
        Level::Avx512 => unsafe { rows_avx512(op, acc, rows, w) },
        #[cfg(target_arch = "x86_64")]
        Level::Avx2 => unsafe { rows_avx2(op, acc, rows, w) },
        _ => {
            let (first, rest) = if op == RowOp::Set {
                (RowOp::Set, RowOp::Add)
            } else {
                (op, op)
            };
            row_op(lv, first, acc, rows[0], w[0]);
            for j in 1..R {
                row_op(lv, rest, acc, rows[j], w[j]);
            }
        }
    }
}

/// `acc (op)= w * row` over `acc.len()` values; `row.len() >= acc.len()`.
#[inline]
pub fn row_op<E: Elem>(lv: Level, op: RowOp, acc: &mut [f32], row: &[E], w: f32) {
    let row = &row[..acc.len()];
    match lv {
        #[cfg(target_arch = "x86_64")]
        Level::Avx512 => unsafe { row_avx512(op, acc, row, w) },
        #[cfg(target_arch = "x86_64")]
        Level::Avx2 => unsafe { row_avx2(op, acc, row, w) },
        _ => row_generic(op, acc, row, w),
    }
}

// ---------------------------------------------------------------------------------------------
// Reductions over one f32 row.

#[inline(always)]
fn sumsq_generic<E: Elem>(x: &[E]) -> f32 {
    const L: usize = 16;
    let mut acc = [0f32; L];
    let mut buf = [0f32; L];
    let mut it = x.chunks_exact(L);
    for c in &mut it {
        E::convert(c, &mut buf);
        for l in 0..L {
            acc[l] += buf[l] * buf[l];
        }
    }
    let mut s: f32 = acc.iter().sum();
    for v in it.remainder() {
        let v = v.to_f32();
        s += v * v;
    }
    s
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn sumsq_avx2<E: Elem>(x: &[E]) -> f32 {
    let n = x.len();
    let p = x.as_ptr();
    let (mut a0, mut a1) = (_mm256_setzero_ps(), _mm256_setzero_ps());
    let mut i = 0;
    while i + 16 <= n {
        let v0 = E::load8(p.add(i));
        let v1 = E::load8(p.add(i + 8));
        a0 = _mm256_fmadd_ps(v0, v0, a0);
        a1 = _mm256_fmadd_ps(v1, v1, a1);
        i += 16;
    }
    while i < n {
        let m = (n - i).min(8);
        let v = if m == 8 {
            E::load8(p.add(i))
        } else {
            load8_tail(p.add(i), m)
        };
        a0 = _mm256_fmadd_ps(v, v, a0);
        i += m;
    }
    hsum8(_mm256_add_ps(a0, a1))
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,fma")]
unsafe fn sumsq_avx512<E: Elem>(x: &[E]) -> f32 {
    let n = x.len();
    let p = x.as_ptr();
    let (mut a0, mut a1) = (_mm512_setzero_ps(), _mm512_setzero_ps());
    let mut i = 0;
    while i + 32 <= n {
        let v0 = E::load16(p.add(i));
        let v1 = E::load16(p.add(i + 16));
        a0 = _mm512_fmadd_ps(v0, v0, a0);
        a1 = _mm512_fmadd_ps(v1, v1, a1);
        i += 32;
    }
    while i < n {
        let m = (n - i).min(16);
        let v = if m == 16 {
            E::load16(p.add(i))
        } else {
            E::load16_tail(p.add(i), m)
        };
        a0 = _mm512_fmadd_ps(v, v, a0);
        i += m;
    }
    _mm512_reduce_add_ps(_mm512_add_ps(a0, a1))
}

/// `dst = src` as f32, prefetching the source `pf` elements ahead (0: no prefetch).
pub fn to_f32<E: Elem>(lv: Level, src: &[E], dst: &mut [f32], pf: usize) {
    assert_eq!(src.len(), dst.len());
    match lv {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: the level says the processor has these features; lengths are equal.
        Level::Avx512 => unsafe { to_f32_avx512(src, dst, pf) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: as above.
        Level::Avx2 => unsafe { to_f32_avx2(src, dst, pf) },
        _ => E::convert(src, dst),
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn to_f32_avx2<E: Elem>(src: &[E], dst: &mut [f32], pf: usize) {
    let n = src.len();
    let (sp, dp) = (src.as_ptr(), dst.as_mut_ptr());
    let line = 64 / std::mem::size_of::<E>();
    let mut i = 0;
    while i + 8 <= n {
        if pf != 0 && i % line == 0 {
            _mm_prefetch::<_MM_HINT_T0>(sp.wrapping_add(i + pf) as *const i8);
        }
        _mm256_storeu_ps(dp.add(i), E::load8(sp.add(i)));
        i += 8;
    }
    E::convert(&src[i..], &mut dst[i..]);
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,fma")]
unsafe fn to_f32_avx512<E: Elem>(src: &[E], dst: &mut [f32], pf: usize) {
    let n = src.len();
    let (sp, dp) = (src.as_ptr(), dst.as_mut_ptr());
    let line = 64 / std::mem::size_of::<E>();
    let mut i = 0;
    while i + 16 <= n {
        if pf != 0 && i % line == 0 {
            _mm_prefetch::<_MM_HINT_T0>(sp.wrapping_add(i + pf) as *const i8);
        }
        _mm512_storeu_ps(dp.add(i), E::load16(sp.add(i)));
        i += 16;
    }
    E::convert(&src[i..], &mut dst[i..]);
}

/// Sum of squares of `x` (as f32).
#[inline]
pub fn sumsq<E: Elem>(lv: Level, x: &[E]) -> f32 {
    match lv {
        #[cfg(target_arch = "x86_64")]
        Level::Avx512 => unsafe { sumsq_avx512(x) },
        #[cfg(target_arch = "x86_64")]
        Level::Avx2 => unsafe { sumsq_avx2(x) },
        _ => sumsq_generic(x),
    }
}

/// The factor that scales a vector of squared norm `ss` to unit length; 0 for a zero vector (which
/// stays zero). NaN and infinity propagate.
#[inline]
pub fn inv_norm(ss: f32) -> f32 {
    if ss == 0.0 {
        0.0
    } else {
        1.0 / ss.sqrt()
    }
}

/// Squared norms in this range are exact enough in f32; outside it (underflow, overflow, or a
/// vector of zeros) the norm is taken again in f64.
const SS_MIN: f32 = 1e-30;

/// [`inv_norm`] of `row`, given its squared norm `ss` as summed in f32: when that underflowed or
/// overflowed (a row of values below about 1e-19 or above 1e19), the norm is summed again in f64,
/// so that such rows still score and normalise by their direction. A row of norm below 1e-30
/// or above 1e37 gives infinity: its products with a query would be subnormal in f32 (and its
/// factor may be beyond f32), or its dot product with a unit query could pass f32's largest
/// value (3.4e38) before the factor scales it down, so the caller scores it with
/// [`cosine_f64`] instead.
#[inline]
pub fn inv_norm_of<E: Elem>(ss: f32, row: &[E]) -> f32 {
    if (SS_MIN..f32::INFINITY).contains(&ss) {
        return 1.0 / ss.sqrt();
    }
    if ss.is_nan() {
        return f32::NAN;
    }
    let inv = inv_norm_f64(row);
    if inv > 1e30 || (inv > 0.0 && inv < 1e-37) {
        f32::INFINITY
    } else {
        inv as f32
    }
}

/// The cosine score of the normalised query `q` and `row`, summed in f64: for the rows of tiny
/// norm that [`inv_norm_of`] marks with infinity.
#[cold]
pub fn cosine_f64<E: Elem>(q: &[f32], row: &[E]) -> f32 {
    let dot: f64 = q
        .iter()
        .zip(row)
        .map(|(&a, &b)| a as f64 * b.to_f32() as f64)
        .sum();
    (dot * inv_norm_f64(row)) as f32
}

/// `1 / |row|` in f64 (0 for a zero row; NaN and infinity propagate).
#[cold]
fn inv_norm_f64<E: Elem>(row: &[E]) -> f64 {
    let ss: f64 = row.iter().map(|&v| (v.to_f32() as f64).powi(2)).sum();
    if ss == 0.0 {
        0.0
    } else {
        1.0 / ss.sqrt()
    }
}

/// `x *= s` (vectorised by LLVM at every level; not worth a dispatch).
#[inline]
pub fn scale(x: &mut [f32], s: f32) {
    for v in x {
        *v *= s;
    }
}

/// Scales `x` to unit L2 norm in place (zero vectors stay zero).
#[inline]
pub fn normalize(lv: Level, x: &mut [f32]) {
    let ss = sumsq(lv, x);
    if (SS_MIN..f32::INFINITY).contains(&ss) || ss.is_nan() {
        let s = inv_norm(ss);
        if s != 1.0 {
            scale(x, s);
        }
        return;
    }
    // Underflowed, overflowed or zero: scale in f64, where every f32 row's norm is exact enough.
    let s = inv_norm_f64(x);
    for v in x {
        *v = (*v as f64 * s) as f32;
    }
}

/// Prefetches the start of `row` into the cache (a hint; no effect on results).
#[inline(always)]
pub fn prefetch<T>(row: &[T], lines: usize) {
    let bytes = std::mem::size_of_val(row).min(lines.saturating_mul(64));
    prefetch_span(row.as_ptr() as *const u8, bytes);
}

/// Prefetches where the hardware prefetcher cannot start on its own: the first line of `row` and
/// the first line after each 4 KB boundary inside it (short rows, up to 8 lines, whole).
#[inline(always)]
pub fn prefetch_row_start<T>(row: &[T]) {
    let p = row.as_ptr() as *const u8;
    row_start_points(p as usize, std::mem::size_of_val(row), |a, bytes| {
        prefetch_span(p.wrapping_add(a - p as usize), bytes)
    });
}

/// The spans [`prefetch_row_start`] requests for a row of `bytes` bytes at address `start`:
/// `f(address, bytes)`.
#[inline(always)]
fn row_start_points(start: usize, bytes: usize, mut f: impl FnMut(usize, usize)) {
    if bytes <= 512 {
        f(start, bytes);
        return;
    }
    f(start, 1);
    let mut page = (start | 4095) + 1;
    while page < start + bytes {
        f(page, 1);
        page += 4096;
    }
}

/// Calls `f(id, row)` for the rows `ids` of `keys` (`d` values each), in order, requesting each
/// row `ahead` rows before it is reached: scattered rows are beyond the hardware's prefetcher.
#[inline(always)]
pub(crate) fn for_rows_prefetched<T>(
    keys: &[T],
    d: usize,
    ids: &[u32],
    ahead: usize,
    mut f: impl FnMut(u32, &[T]),
) {
    let row = |i: u32| &keys[i as usize * d..(i as usize + 1) * d];
    for &i in ids.iter().take(ahead) {
        prefetch(row(i), usize::MAX);
    }
    for (j, &i) in ids.iter().enumerate() {
        if let Some(&next) = ids.get(j + ahead) {
            prefetch(row(next), usize::MAX);
        }
        f(i, row(i));
    }
}

/// Requests the cache lines of `bytes` bytes from `p` (a hint: any address is allowed, nothing is
/// read, and nothing happens off x86-64).
#[inline(always)]
pub(crate) fn prefetch_span(p: *const u8, bytes: usize) {
    #[cfg(target_arch = "x86_64")]
    {
        let mut off = 0;
        while off < bytes {
            // SAFETY: a prefetch never faults, whatever the address.
            unsafe { _mm_prefetch::<_MM_HINT_T0>(p.wrapping_add(off) as *const i8) };
            off += 64;
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (p, bytes);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalize_works_at_every_scale() {
        // In f32 the squared norm of these rows underflows (to 0 or subnormals) or overflows.
        let base = [3.0f32, -4.0, 0.0, 12.0];
        for lv in Level::available() {
            for s in [1e-40f32, 1e-30, 1e-20, 1.0, 1e20, 1e30, 1e37] {
                let mut x: Vec<f32> = base.iter().map(|v| v * s).collect();
                normalize(lv, &mut x);
                for (a, b) in x.iter().zip(base) {
                    assert!((a - b / 13.0).abs() < 1e-3, "{lv:?} {s}: {x:?}");
                }
            }
            let mut z = [0f32; 5];
            normalize(lv, &mut z);
            assert_eq!(z, [0.0; 5]);
            let mut n = [1.0, f32::NAN];
            normalize(lv, &mut n);
            assert!(n.iter().all(|v| v.is_nan()));
        }
    }

    #[test]
    fn f16_conversion_is_exact_for_all_bit_patterns() {
        for b in 0..=u16::MAX {
            let h = f16::from_bits(b);
            let want = h.to_f32();
            let got = f16_bits_to_f32(b);
            if want.is_nan() {
                assert!(got.is_nan(), "{b:#x}");
            } else {
                assert_eq!(got.to_bits(), want.to_bits(), "{b:#x}");
            }
        }
    }

    fn data(n: usize, seed: u32) -> Vec<f32> {
        let mut s = seed.wrapping_mul(2654435761).wrapping_add(1);
        (0..n)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 17;
                s ^= s << 5;
                (s as f32 / u32::MAX as f32) * 2.0 - 1.0
            })
            .collect()
    }

    #[test]
    fn row_ops_agree_with_scalar_at_every_level() {
        for n in [1usize, 7, 16, 17, 31, 32, 33, 100, 768] {
            let a0 = data(n, 1);
            let r = data(n, 2);
            let rh: Vec<f16> = r.iter().map(|&v| f16::from_f32(v)).collect();
            for lv in Level::available() {
                for op in [RowOp::Set, RowOp::Add, RowOp::Max] {
                    let want: Vec<f32> = a0
                        .iter()
                        .zip(&r)
                        .map(|(&a, &x)| match op {
                            RowOp::Set => 0.5 * x,
                            RowOp::Add => a + 0.5 * x,
                            RowOp::Max => a.max(0.5 * x),
                        })
                        .collect();
                    let mut got = a0.clone();
                    row_op(lv, op, &mut got, &r, 0.5);
                    for i in 0..n {
                        assert!((got[i] - want[i]).abs() < 1e-6, "{lv:?} {op:?} n={n} i={i}");
                    }
                    let want_h: Vec<f32> = a0
                        .iter()
                        .zip(&rh)
                        .map(|(&a, &x)| match op {
                            RowOp::Set => 0.5 * x.to_f32(),
                            RowOp::Add => a + 0.5 * x.to_f32(),
                            RowOp::Max => a.max(0.5 * x.to_f32()),
                        })
                        .collect();
                    let mut got = a0.clone();
                    row_op(lv, op, &mut got, &rh, 0.5);
                    for i in 0..n {
                        assert!((got[i] - want_h[i]).abs() < 1e-6, "f16 {lv:?} {op:?} n={n}");
                    }
                }
                let ss: f32 = r.iter().map(|v| v * v).sum();
                assert!(
                    (sumsq(lv, &r) - ss).abs() <= 1e-4 * ss.max(1.0),
                    "{lv:?} n={n}"
                );
            }
        }
    }

    /// Weight 1 skips the multiplications (`rows_*`, `row_*` with `UNIT`); weight 2 takes the
    /// multiplying path. Doubling is exact, so halving the weight-2 result must give the weight-1
    /// result bit for bit, at every level, for f32 and f16 rows, every op, group size and tail
    /// length; and the weight-1 sums are the plain sums in the kernels' order.
    #[test]
    fn unit_weights_give_the_multiplying_path_results_exactly() {
        fn check<E: Elem, const R: usize>(lv: Level, rows: [&[E]; R], a0: &[f32], n: usize) {
            let x = |j: usize, i: usize| rows[j][i].to_f32();
            for op in [RowOp::Set, RowOp::Add, RowOp::Max] {
                let (mut one, mut two) =
                    (a0.to_vec(), a0.iter().map(|v| 2.0 * v).collect::<Vec<_>>());
                rows_op(lv, op, &mut one, rows, [1.0; R]);
                rows_op(lv, op, &mut two, rows, [2.0; R]);
                let (mut r1, mut r2) =
                    (a0.to_vec(), a0.iter().map(|v| 2.0 * v).collect::<Vec<_>>());
                row_op(lv, op, &mut r1, rows[0], 1.0);
                row_op(lv, op, &mut r2, rows[0], 2.0);
                for i in 0..n {
                    assert_eq!(
                        one[i].to_bits(),
                        (two[i] / 2.0).to_bits(),
                        "{lv:?} {op:?} R={R} n={n} i={i}"
                    );
                    assert_eq!(
                        r1[i].to_bits(),
                        (r2[i] / 2.0).to_bits(),
                        "{lv:?} {op:?} n={n} i={i}"
                    );
                    // The portable path adds one row after another; the SIMD paths add each
                    // group of four as a tree, and the groups in order.
                    let seq = |a: f32, from: usize| (from..R).fold(a, |s, j| s + x(j, i));
                    let quad = |q: usize| (x(q, i) + x(q + 1, i)) + (x(q + 2, i) + x(q + 3, i));
                    let sum = (4..R).step_by(4).fold(quad(0), |s, q| s + quad(q));
                    let want = match (op, lv) {
                        (RowOp::Set, Level::Generic) => seq(x(0, i), 1),
                        (RowOp::Add, Level::Generic) => seq(a0[i], 0),
                        (RowOp::Set, _) => sum,
                        (RowOp::Add, _) => a0[i] + sum,
                        (RowOp::Max, _) => (0..R).fold(a0[i], |m, j| m.max(x(j, i))),
                    };
                    assert_eq!(
                        one[i].to_bits(),
                        want.to_bits(),
                        "{lv:?} {op:?} R={R} n={n} i={i}"
                    );
                }
            }
        }
        for n in [1usize, 7, 8, 15, 16, 17, 31, 32, 33, 100, 768] {
            let a0 = data(n, 1);
            let r: Vec<Vec<f32>> = (2..14).map(|k| data(n, k)).collect();
            let rh: Vec<Vec<f16>> = r
                .iter()
                .map(|r| r.iter().map(|&v| f16::from_f32(v)).collect())
                .collect();
            for lv in Level::available() {
                check::<_, 4>(lv, std::array::from_fn(|j| &r[j][..]), &a0, n);
                check::<_, 4>(lv, std::array::from_fn(|j| &rh[j][..]), &a0, n);
                check::<_, 8>(lv, std::array::from_fn(|j| &r[j][..]), &a0, n);
                check::<_, 8>(lv, std::array::from_fn(|j| &rh[j][..]), &a0, n);
                check::<_, 12>(lv, std::array::from_fn(|j| &r[j][..]), &a0, n);
            }
        }
    }

    /// The prefetch requests stay inside the row: all of a short row, else its first line and
    /// the first line after each 4 KB boundary.
    #[test]
    fn prefetch_row_start_requests_the_row_start_and_each_page() {
        let points = |p: usize, bytes: usize| {
            let mut got = vec![];
            row_start_points(p, bytes, |a, b| got.push((a, b)));
            got
        };
        assert_eq!(points(4096 - 16, 3072), vec![(4080, 1), (4096, 1)]);
        assert_eq!(points(16, 3072), vec![(16, 1)]);
        assert_eq!(points(16, 4080), vec![(16, 1)]);
        assert_eq!(points(16, 4081), vec![(16, 1), (4096, 1)]);
        assert_eq!(
            points(4000, 9000),
            vec![(4000, 1), (4096, 1), (8192, 1), (12288, 1)]
        );
        assert_eq!(points(4090, 512), vec![(4090, 512)]);
        assert_eq!(points(4090, 0), vec![(4090, 0)]);
        // And it runs on real rows of every size.
        let v = vec![0f32; 5000];
        for len in [0usize, 1, 100, 128, 129, 768, 4096] {
            prefetch_row_start(&v[..len]);
        }
    }
}
