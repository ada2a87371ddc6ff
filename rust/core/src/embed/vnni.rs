//! The int8 index scan on AVX-512 VNNI: 64 multiply-adds per instruction.
//!
//! Why: converting int8 keys to f32 costs two instructions per 16 values before the FMA, which
//! made the single-query int8 scan compute-bound (~2.5 cycles per 16 values) instead of
//! memory-bound. `vpdpbusd` multiplies 64 unsigned bytes by 64 signed bytes and adds groups of
//! four into 16 int32 lanes, so the query is quantised too: `q ~ qs * (u - 128)` with `u` in
//! 0..=255. Then `q . k ~ qs * (sum(u * c) - 128 * sum(c))` exactly in integers (no overflow
//! below 2^31 for any dimension under 66,000), with `sum(c)` precomputed per key. The extra query
//! rounding only affects which keys reach the shortlist, which is rescored in f32.
//!
//! Without VNNI, AVX2 does the same with `vpmaddubsw` (u8 x i8 products added in pairs into i16
//! lanes) and `vpmaddwd` (pairs of i16 into i32): 32 multiply-adds per two instructions. The i16
//! pairs must not saturate, so the query gets 7-bit codes, `q ~ qs * (u - 64)` with `u` in
//! 1..=127 (at most 2 * 127 * 127 per lane).
use super::simd::Level;
use super::topk::{TopK, MQ, NK};
use std::ops::Range;

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

/// Whether this processor runs the VNNI scan.
pub fn available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        static A: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
        *A.get_or_init(|| {
            super::simd::Level::available().contains(&super::simd::Level::Avx512)
                && is_x86_feature_detected!("avx512vnni")
                && std::env::var("BYTEPAIR_SIMD").as_deref() != Ok("avx512-novnni")
        })
    }
    #[cfg(not(target_arch = "x86_64"))]
    false
}

/// Queries quantised to biased bytes: `q[i] ~ scale * (codes[i] - bias)`, bias 128 (VNNI) or 64
/// (AVX2).
pub(crate) struct QueryCodes {
    pub codes: Vec<u8>,
    pub scales: Vec<f32>,
}

/// Quantises each `d`-wide row of `q`; a zero row gets scale 0, a row with NaN or infinity
/// scale NaN (its scores are NaN, as in the f32 path).
pub(crate) fn quantize_queries(q: &[f32], d: usize) -> QueryCodes {
    quantize_biased(q, d, 127)
}

/// Queries quantised to 7 bits for the AVX2 scan (`vpmaddubsw` adds pairs of u8 x i8 products in
/// an i16, which 8-bit queries could overflow): `q[i] ~ scale * (codes[i] - 64)`, codes in
/// 1..=127. Zero and non-finite rows as in [`quantize_queries`].
pub(crate) fn quantize_queries7(q: &[f32], d: usize) -> QueryCodes {
    quantize_biased(q, d, 63)
}

/// Each row quantised to `-levels..=levels`, stored biased by `levels + 1` as bytes.
fn quantize_biased(q: &[f32], d: usize, levels: i8) -> QueryCodes {
    let bias = levels as i16 + 1;
    let mut codes = vec![bias as u8; q.len()];
    let mut scales = Vec::with_capacity(q.len() / d.max(1));
    let mut tmp = vec![0i8; d];
    for (row, out) in q.chunks_exact(d).zip(codes.chunks_exact_mut(d)) {
        let s = super::quant::quantize_to(row, &mut tmp, levels);
        for (o, &c) in out.iter_mut().zip(&tmp) {
            *o = (c as i16 + bias) as u8;
        }
        scales.push(s);
    }
    QueryCodes { codes, scales }
}

/// Per-key sums of int8 codes (the bias correction).
pub(crate) fn code_sums(codes: &[i8], d: usize) -> Vec<i32> {
    codes
        .chunks_exact(d)
        .map(|r| r.iter().map(|&c| c as i32).sum())
        .collect()
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn tile<const M: usize>(
    q: *const u8,
    qs: usize,
    k: *const i8,
    ks: usize,
    d: usize,
    pf: usize,
) -> [[i32; NK]; M] {
    let mut acc = [[_mm512_setzero_si512(); NK]; M];
    let mut i = 0;
    while i + 64 <= d {
        if pf != 0 {
            for j in 0..NK {
                _mm_prefetch::<_MM_HINT_T0>(k.wrapping_add(j * ks + i + pf));
            }
        }
        let mut kv = [_mm512_setzero_si512(); NK];
        for j in 0..NK {
            kv[j] = _mm512_loadu_si512(k.add(j * ks + i) as *const _);
        }
        for m in 0..M {
            let qv = _mm512_loadu_si512(q.add(m * qs + i) as *const _);
            for j in 0..NK {
                acc[m][j] = _mm512_dpbusd_epi32(acc[m][j], qv, kv[j]);
            }
        }
        i += 64;
    }
    if i < d {
        // Zero both sides past the end: those lanes add 0 (the bias is corrected with the sums
        // of the real codes only).
        let mask: u64 = (1u64 << (d - i)) - 1;
        let mut kv = [_mm512_setzero_si512(); NK];
        for j in 0..NK {
            kv[j] = _mm512_maskz_loadu_epi8(mask, k.add(j * ks + i));
        }
        for m in 0..M {
            let qv = _mm512_maskz_loadu_epi8(mask, q.add(m * qs + i) as *const i8);
            for j in 0..NK {
                acc[m][j] = _mm512_dpbusd_epi32(acc[m][j], qv, kv[j]);
            }
        }
    }
    let mut out = [[0i32; NK]; M];
    for m in 0..M {
        for j in 0..NK {
            out[m][j] = _mm512_reduce_add_epi32(acc[m][j]);
        }
    }
    out
}

/// One query against the `nk` consecutive `d`-byte key rows at `k`, each read start to end (see
/// `topk::row1_avx512`): `out[j]` is the biased integer dot product. `pf`: prefetch distance in
/// bytes (0: none).
///
/// # Safety
/// `q` holds `d` bytes, `k` holds `nk * d`; the processor has AVX-512 VNNI.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn row1(q: *const u8, k: *const i8, d: usize, nk: usize, pf: usize, out: &mut [i32]) {
    for (j, o) in out.iter_mut().enumerate().take(nk) {
        let r = k.add(j * d);
        if pf != 0 {
            super::simd::prefetch_span(r.wrapping_add(pf) as *const u8, d);
        }
        let mut a = [_mm512_setzero_si512(); 4];
        let mut i = 0;
        while i + 256 <= d {
            for (u, acc) in a.iter_mut().enumerate() {
                let qv = _mm512_loadu_si512(q.add(i + 64 * u) as *const _);
                let kv = _mm512_loadu_si512(r.add(i + 64 * u) as *const _);
                *acc = _mm512_dpbusd_epi32(*acc, qv, kv);
            }
            i += 256;
        }
        let mut u = 0;
        while i + 64 <= d {
            let qv = _mm512_loadu_si512(q.add(i) as *const _);
            let kv = _mm512_loadu_si512(r.add(i) as *const _);
            a[u] = _mm512_dpbusd_epi32(a[u], qv, kv);
            u += 1;
            i += 64;
        }
        if i < d {
            // Zero both sides past the end, as in `tile`.
            let mask: u64 = (1u64 << (d - i)) - 1;
            let qv = _mm512_maskz_loadu_epi8(mask, q.add(i) as *const i8);
            a[3] = _mm512_dpbusd_epi32(a[3], qv, _mm512_maskz_loadu_epi8(mask, r.add(i)));
        }
        let s = _mm512_add_epi32(_mm512_add_epi32(a[0], a[1]), _mm512_add_epi32(a[2], a[3]));
        *o = _mm512_reduce_add_epi32(s);
    }
}

/// [`row1`] on AVX2 for 7-bit queries ([`quantize_queries7`]): `vpmaddubsw` multiplies u8 query
/// bytes by i8 key bytes and adds pairs into i16 lanes (at most 2 * 127 * 127, no saturation),
/// `vpmaddwd` by ones widens to i32. `out[j]` is the biased integer dot product.
///
/// # Safety
/// `q` holds `d` bytes, `k` holds `nk * d`; the processor has AVX2.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn row1_avx2(q: *const u8, k: *const i8, d: usize, nk: usize, pf: usize, out: &mut [i32]) {
    let ones = _mm256_set1_epi16(1);
    let dot32 = |qv: __m256i, kv: __m256i| _mm256_madd_epi16(_mm256_maddubs_epi16(qv, kv), ones);
    for (j, o) in out.iter_mut().enumerate().take(nk) {
        let r = k.add(j * d);
        if pf != 0 {
            super::simd::prefetch_span(r.wrapping_add(pf) as *const u8, d);
        }
        let mut a = [_mm256_setzero_si256(); 4];
        let mut i = 0;
        while i + 128 <= d {
            for (u, acc) in a.iter_mut().enumerate() {
                let qv = _mm256_loadu_si256(q.add(i + 32 * u) as *const _);
                let kv = _mm256_loadu_si256(r.add(i + 32 * u) as *const _);
                *acc = _mm256_add_epi32(*acc, dot32(qv, kv));
            }
            i += 128;
        }
        let mut u = 0;
        while i + 32 <= d {
            let qv = _mm256_loadu_si256(q.add(i) as *const _);
            let kv = _mm256_loadu_si256(r.add(i) as *const _);
            a[u] = _mm256_add_epi32(a[u], dot32(qv, kv));
            u += 1;
            i += 32;
        }
        if i < d {
            // Zero both sides past the end: those lanes add 0.
            let (mut qb, mut kb) = ([0u8; 32], [0i8; 32]);
            std::ptr::copy_nonoverlapping(q.add(i), qb.as_mut_ptr(), d - i);
            std::ptr::copy_nonoverlapping(r.add(i), kb.as_mut_ptr(), d - i);
            let qv = _mm256_loadu_si256(qb.as_ptr() as *const _);
            let kv = _mm256_loadu_si256(kb.as_ptr() as *const _);
            a[3] = _mm256_add_epi32(a[3], dot32(qv, kv));
        }
        let s = _mm256_add_epi32(_mm256_add_epi32(a[0], a[1]), _mm256_add_epi32(a[2], a[3]));
        let s = _mm_add_epi32(_mm256_castsi256_si128(s), _mm256_extracti128_si256::<1>(s));
        let s = _mm_add_epi32(s, _mm_unpackhi_epi64(s, s));
        let s = _mm_add_epi32(s, _mm_shuffle_epi32::<0b01>(s));
        *o = _mm_cvtsi128_si32(s);
    }
}

/// `M` 7-bit queries (rows of `q`, stride `qs`) against NK int8 keys (stride `ks`): biased
/// integer dot products, as [`row1_avx2`] computes them. `M <= 2` keeps the 2 x NK accumulators,
/// the query vectors, a key vector and the ones in the 16 ymm registers.
///
/// # Safety
/// `q` holds `M` rows and `k` NK rows of `d` bytes at their strides; the processor has AVX2.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn tile_avx2<const M: usize>(
    q: *const u8,
    qs: usize,
    k: *const i8,
    ks: usize,
    d: usize,
    pf: usize,
) -> [[i32; NK]; M] {
    let ones = _mm256_set1_epi16(1);
    let dot32 = |qv: __m256i, kv: __m256i| _mm256_madd_epi16(_mm256_maddubs_epi16(qv, kv), ones);
    let mut acc = [[_mm256_setzero_si256(); NK]; M];
    let mut i = 0;
    while i + 32 <= d {
        if pf != 0 && i % 64 == 0 {
            for j in 0..NK {
                _mm_prefetch::<_MM_HINT_T0>(k.wrapping_add(j * ks + i + pf));
            }
        }
        let mut qv = [_mm256_setzero_si256(); M];
        for m in 0..M {
            qv[m] = _mm256_loadu_si256(q.add(m * qs + i) as *const _);
        }
        for j in 0..NK {
            let kv = _mm256_loadu_si256(k.add(j * ks + i) as *const _);
            for m in 0..M {
                acc[m][j] = _mm256_add_epi32(acc[m][j], dot32(qv[m], kv));
            }
        }
        i += 32;
    }
    if i < d {
        // Zero both sides past the end: those lanes add 0.
        let n = d - i;
        let mut kb = [[0i8; 32]; NK];
        for j in 0..NK {
            std::ptr::copy_nonoverlapping(k.add(j * ks + i), kb[j].as_mut_ptr(), n);
        }
        for m in 0..M {
            let mut qb = [0u8; 32];
            std::ptr::copy_nonoverlapping(q.add(m * qs + i), qb.as_mut_ptr(), n);
            let qv = _mm256_loadu_si256(qb.as_ptr() as *const _);
            for j in 0..NK {
                let kv = _mm256_loadu_si256(kb[j].as_ptr() as *const _);
                acc[m][j] = _mm256_add_epi32(acc[m][j], dot32(qv, kv));
            }
        }
    }
    let mut out = [[0i32; NK]; M];
    for m in 0..M {
        for j in 0..NK {
            let s = acc[m][j];
            let s = _mm_add_epi32(_mm256_castsi256_si128(s), _mm256_extracti128_si256::<1>(s));
            let s = _mm_add_epi32(s, _mm_unpackhi_epi64(s, s));
            let s = _mm_add_epi32(s, _mm_shuffle_epi32::<0b01>(s));
            out[m][j] = _mm_cvtsi128_si32(s);
        }
    }
    out
}

/// Where the int8 scan runs: AVX-512 VNNI (8-bit query codes, bias 128) or AVX2 (7-bit query
/// codes from [`quantize_queries7`], bias 64).
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum IntKernel {
    Vnni,
    Avx2,
}

impl IntKernel {
    /// The integer kernel for a search at level `lv`: VNNI where `vnni` allows it and the
    /// processor has it, else the AVX2 one (on an AVX-512 processor only if `avx2_on_avx512`:
    /// float kernels may serve there instead). `None` below AVX2, and for `d >= 66,000`, where
    /// the i32 dot products could overflow (255 * 127 * d).
    pub(crate) fn pick(lv: Level, vnni: bool, d: usize, avx2_on_avx512: bool) -> Option<Self> {
        if d >= 66_000 {
            None
        } else if vnni && lv == Level::Avx512 && available() {
            Some(IntKernel::Vnni)
        } else if lv == Level::Avx2 || (avx2_on_avx512 && lv == Level::Avx512) {
            Some(IntKernel::Avx2)
        } else {
            None
        }
    }

    /// What the kernel's query codes are biased by.
    pub(crate) fn bias(self) -> i32 {
        match self {
            IntKernel::Vnni => 128,
            IntKernel::Avx2 => 64,
        }
    }

    /// The queries (rows of `q`, `d` wide) quantised for this kernel.
    pub(crate) fn quantize(self, q: &[f32], d: usize) -> QueryCodes {
        match self {
            IntKernel::Vnni => quantize_queries(q, d),
            IntKernel::Avx2 => quantize_queries7(q, d),
        }
    }
}

/// The approximate score of a key from its biased integer dot product `dot` with a query of
/// scale `qs`: `key_scale * qs * (dot - bias * key_sum)`.
#[inline(always)]
fn score(dot: i32, bias: i32, key_sum: i32, qs: f32, key_scale: f32) -> f32 {
    (dot - bias * key_sum) as f32 * (qs * key_scale)
}

/// Scans keys `range` for the quantised queries `q0..q0 + heaps.len()` of `qc`, offering
/// approximate scores `key_scale * query_scale * (dot - bias * key_sum)`. Call only where the
/// kernel runs ([`available`] for VNNI, AVX2 for the other).
#[allow(clippy::too_many_arguments)]
pub(crate) fn scan(
    kernel: IntKernel,
    qc: &QueryCodes,
    q0: usize,
    codes: &[i8],
    scales: &[f32],
    sums: &[i32],
    d: usize,
    range: Range<usize>,
    heaps: &mut [TopK],
) {
    #[cfg(target_arch = "x86_64")]
    {
        let bias = kernel.bias();
        let (row1_fn, mq): (Row1, usize) = match kernel {
            IntKernel::Vnni => {
                assert!(available(), "VNNI scan without VNNI");
                (row1, MQ)
            }
            IntKernel::Avx2 => {
                assert!(
                    Level::available().contains(&Level::Avx2),
                    "AVX2 scan without AVX2"
                );
                (row1_avx2, 2)
            }
        };
        let nq = heaps.len();
        let pf_elems = super::topk::PREFETCH_BYTES;
        let offer = |h: &mut TopK, qs: f32, dot: i32, t: usize| {
            h.offer(score(dot, bias, sums[t], qs, scales[t]), t as u32);
        };
        if nq == 1 {
            // One query: whole rows in order (see `topk::row1_avx512`).
            const R: usize = super::topk::ROWS1;
            let mut out = [0i32; R];
            let (qs, qr) = (qc.scales[q0], &qc.codes[q0 * d..(q0 + 1) * d]);
            let h = &mut heaps[0];
            let mut t = range.start;
            while t < range.end {
                let nk = R.min(range.end - t);
                let pf = super::topk::prefetch_inside(pf_elems, t, nk, d, range.end);
                let kt = &codes[t * d..(t + nk) * d];
                // SAFETY: `qr` holds d bytes, `kt` nk rows of d; the kernel's features are
                // asserted above.
                unsafe { row1_fn(qr.as_ptr(), kt.as_ptr(), d, nk, pf, &mut out) };
                for (j, &s) in out[..nk].iter().enumerate() {
                    offer(h, qs, s, t + j);
                }
                t += nk;
            }
            return;
        }
        let mut pad: Vec<i8> = Vec::new();
        let mut t = range.start;
        while t < range.end {
            let nk = NK.min(range.end - t);
            let pf = if nk == NK { pf_elems } else { 0 };
            let kt: &[i8] = super::topk::key_tile(codes, t, nk, d, &mut pad);
            let mut qi = 0;
            while qi < nq {
                let m = mq.min(nq - qi);
                let qq = &qc.codes[(q0 + qi) * d..(q0 + qi + m) * d];
                macro_rules! run {
                    ($tile:ident, $m:literal) => {{
                        // SAFETY: `qq` holds $m rows of `d` bytes and `kt` NK rows of `d` bytes;
                        // the kernel's features are asserted above.
                        let s = unsafe { $tile::<$m>(qq.as_ptr(), d, kt.as_ptr(), d, d, pf) };
                        for mm in 0..$m {
                            let qs = qc.scales[q0 + qi + mm];
                            for j in 0..nk {
                                offer(&mut heaps[qi + mm], qs, s[mm][j], t + j);
                            }
                        }
                    }};
                }
                match (kernel, m) {
                    (IntKernel::Avx2, 2) => run!(tile_avx2, 2),
                    (IntKernel::Avx2, _) => run!(tile_avx2, 1),
                    (_, 6) => run!(tile, 6),
                    (_, 5) => run!(tile, 5),
                    (_, 4) => run!(tile, 4),
                    (_, 3) => run!(tile, 3),
                    (_, 2) => run!(tile, 2),
                    _ => run!(tile, 1),
                }
                qi += m;
            }
            t += nk;
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = (kernel, qc, q0, codes, scales, sums, d, range, heaps);
        unreachable!("int8 integer scan on a non-x86 target");
    }
}

/// A single-query row kernel: `(query codes, key rows, d, rows, prefetch distance, out)`.
#[cfg(target_arch = "x86_64")]
type Row1 = unsafe fn(*const u8, *const i8, usize, usize, usize, &mut [i32]);

/// [`scan`] for one query (`qc` row 0) on VNNI over the keys `ids` (increasing) instead of a
/// range: the candidates of the 4-bit sketch, scattered rows, each requested a few rows ahead.
pub(crate) fn scan_ids(
    qc: &QueryCodes,
    codes: &[i8],
    scales: &[f32],
    sums: &[i32],
    d: usize,
    ids: &[u32],
    heap: &mut TopK,
) {
    #[cfg(target_arch = "x86_64")]
    {
        assert!(available(), "VNNI scan without VNNI");
        let bias = IntKernel::Vnni.bias();
        let mut out = [0i32; 1];
        super::simd::for_rows_prefetched(codes, d, ids, 8, |i, row| {
            // SAFETY: the query row holds d bytes and the key row d; VNNI asserted.
            unsafe { row1(qc.codes.as_ptr(), row.as_ptr(), d, 1, 0, &mut out) };
            let t = i as usize;
            heap.offer(score(out[0], bias, sums[t], qc.scales[0], scales[t]), i);
        });
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = (qc, codes, scales, sums, d, ids, heap);
        unreachable!("VNNI scan without VNNI");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::embed::testutil::randn;

    #[test]
    fn avx2_integer_dots_match_scalar() {
        if !crate::embed::simd::Level::available().contains(&crate::embed::simd::Level::Avx2) {
            return;
        }
        for d in [1usize, 31, 32, 33, 127, 128, 129, 200, 768] {
            let n = 37;
            let keys = randn(n * d, 3);
            let mut codes = vec![0i8; n * d];
            let mut scales = vec![0f32; n];
            for i in 0..n {
                scales[i] = super::super::quant::quantize_level(
                    &keys[i * d..(i + 1) * d],
                    &mut codes[i * d..(i + 1) * d],
                );
            }
            // Extreme codes too: the i16 pair sums must not saturate.
            codes[..d].fill(-127);
            codes[d..2 * d].fill(127);
            let sums = code_sums(&codes, d);
            let mut q = randn(3 * d, 4);
            q[..d].iter_mut().for_each(|v| *v = 1.0); // every code 127
            let qc = quantize_queries7(&q, d);
            assert!(qc.codes.iter().all(|&c| (1..=127).contains(&c)));
            // One query at a time (row kernel), then all three at once (tiles).
            let mut heaps: Vec<TopK> = Vec::new();
            for qi in 0..3 {
                let mut h = vec![TopK::new(n)];
                scan(
                    IntKernel::Avx2,
                    &qc,
                    qi,
                    &codes,
                    &scales,
                    &sums,
                    d,
                    0..n,
                    &mut h,
                );
                heaps.push(h.pop().unwrap());
            }
            let mut batch = vec![TopK::new(n); 3];
            scan(
                IntKernel::Avx2,
                &qc,
                0,
                &codes,
                &scales,
                &sums,
                d,
                0..n,
                &mut batch,
            );
            for (qi, h) in heaps.into_iter().chain(batch).enumerate() {
                let qi = qi % 3;
                let got = h.into_sorted();
                assert_eq!(got.len(), n);
                for (s, i) in got {
                    let i = i as usize;
                    let exact: i64 = (0..d)
                        .map(|t| (qc.codes[qi * d + t] as i64 - 64) * codes[i * d + t] as i64)
                        .sum();
                    let want = exact as f32 * qc.scales[qi] * scales[i];
                    assert!(
                        (s - want).abs() <= 1e-6 * want.abs().max(1.0),
                        "d={d} q{qi} k{i}: {s} vs {want}"
                    );
                }
            }
        }
    }

    #[test]
    fn integer_dots_match_scalar() {
        if !available() {
            return;
        }
        for d in [1usize, 63, 64, 65, 200, 768] {
            let n = 9;
            let keys = randn(n * d, 3);
            let mut codes = vec![0i8; n * d];
            let mut scales = vec![0f32; n];
            for i in 0..n {
                scales[i] = super::super::quant::quantize_level(
                    &keys[i * d..(i + 1) * d],
                    &mut codes[i * d..(i + 1) * d],
                );
            }
            let sums = code_sums(&codes, d);
            let q = randn(7 * d, 4);
            let qc = quantize_queries(&q, d);
            let mut heaps = vec![TopK::new(n); 7];
            scan(
                IntKernel::Vnni,
                &qc,
                0,
                &codes,
                &scales,
                &sums,
                d,
                0..n,
                &mut heaps,
            );
            // One query at a time takes the row-at-a-time kernel.
            let mut ones: Vec<TopK> = Vec::new();
            for qi in 0..7 {
                let mut h = vec![TopK::new(n)];
                scan(
                    IntKernel::Vnni,
                    &qc,
                    qi,
                    &codes,
                    &scales,
                    &sums,
                    d,
                    0..n,
                    &mut h,
                );
                ones.push(h.pop().unwrap());
            }
            for (qi, h) in heaps.into_iter().chain(ones).enumerate() {
                let qi = qi % 7;
                for (s, i) in h.into_sorted() {
                    let i = i as usize;
                    let exact: i64 = (0..d)
                        .map(|t| (qc.codes[qi * d + t] as i64 - 128) * codes[i * d + t] as i64)
                        .sum();
                    let want = exact as f32 * qc.scales[qi] * scales[i];
                    assert!(
                        (s - want).abs() <= 1e-6 * want.abs().max(1.0),
                        "d={d} q{qi} k{i}: {s} vs {want}"
                    );
                }
            }
        }
    }
}
