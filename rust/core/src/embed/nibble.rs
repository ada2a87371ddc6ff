//! A 4-bit sketch of the int8 index's keys, scanned by single queries.
//!
//! Why: one query against an int8 index reads every key's codes once, so memory bandwidth sets
//! its speed (~45 GB/s here: 3.3 ms for 200k x 768). Half a byte a value halves that. The
//! sketch's error is much larger than int8's, so it only chooses candidates: every key whose
//! sketch score comes within a margin of the running k-th best (see `Index`), and those are
//! scored as the int8 scan's shortlist is, from both int8 levels.
//!
//! Layout: a key's values in blocks of 128; block `b` takes 64 bytes, byte `j` holding value
//! `128 b + j` in its low nibble and `128 b + 64 + j` in its high one. A nibble is `c + 8` with
//! `c = round(x / scale)` in `-7..=7`, `scale = max|x| / 7` (per key); padding is 8 (zero).
//! The query is quantised to int8 (`q ~ qs * cq`) and padded with zeros, so with AVX-512 VNNI
//! `vpdpbusd` multiplies the unsigned nibbles by the signed query bytes directly:
//! `q . k ~ qs * scale * (sum(nibble * cq) - 8 * sum(cq))`.
use super::topk::{self, TopK};
use std::ops::Range;

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

/// Values per 64-byte block.
pub(crate) const BLOCK: usize = 128;

/// Bytes per key of dimension `d`.
pub(crate) fn row_bytes(d: usize) -> usize {
    d.div_ceil(BLOCK) * 64
}

/// Quantises `x` into the packed row `out` (`row_bytes(x.len())` bytes) and returns the scale:
/// `max|x| / 7`, 0 for a zero vector, NaN where `x` holds NaN or infinity (codes then zero).
pub(crate) fn pack(x: &[f32], out: &mut [u8]) -> f32 {
    out.fill(0x88);
    let m = x.iter().fold(0f32, |m, v| m.max(v.abs()));
    if x.iter().any(|v| !v.is_finite()) {
        return f32::NAN;
    }
    if m == 0.0 {
        return 0.0;
    }
    let inv = 7.0 / m;
    for (i, &v) in x.iter().enumerate() {
        let c = (super::quant::round_small(v * inv).clamp(-7, 7) + 8) as u8;
        let (b, j) = (i / BLOCK, i % BLOCK);
        let byte = &mut out[b * 64 + j % 64];
        *byte = if j < 64 {
            (*byte & 0xF0) | c
        } else {
            (*byte & 0x0F) | (c << 4)
        };
    }
    m / 7.0
}

/// The value `i` of a packed row, as its signed code (-7..=7; 0 for padding).
#[cfg(test)]
fn code(row: &[u8], i: usize) -> i32 {
    let (b, j) = (i / BLOCK, i % BLOCK);
    let byte = row[b * 64 + j % 64];
    let u = if j < 64 { byte & 0x0F } else { byte >> 4 };
    u as i32 - 8
}

/// A query quantised for the scan: int8 codes padded to whole blocks, the scale and the codes'
/// sum (the nibbles' bias correction).
pub(crate) struct Query4 {
    pub codes: Vec<i8>,
    pub scale: f32,
    pub sum: i32,
}

/// Quantises one query row (finite values; the caller checks).
pub(crate) fn quantize_query(q: &[f32]) -> Query4 {
    let mut codes = vec![0i8; row_bytes(q.len()) * 2];
    let scale = super::quant::quantize_to(q, &mut codes[..q.len()], 127);
    let sum = codes.iter().map(|&c| c as i32).sum();
    Query4 { codes, scale, sum }
}

/// `out[j]` = the sum of nibble x query code over key `j` of the `nk` packed rows at `k`
/// (`rb` bytes each), before the bias correction. `pf`: prefetch distance in bytes (0: none).
///
/// # Safety
/// `q` holds `2 * rb` bytes, `k` holds `nk * rb`; the processor has AVX-512F/BW and VNNI.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
unsafe fn rows_vnni(q: *const i8, k: *const u8, rb: usize, nk: usize, pf: usize, out: &mut [i32]) {
    for (j, o) in out.iter_mut().enumerate().take(nk) {
        *o = _mm512_reduce_add_epi32(row_vnni(q, k.add(j * rb), rb, pf));
    }
}

/// The row at `r` (`rb` bytes) against `q`: the 16 lane sums of nibble x query code (their
/// total is the row's sum), after requesting the row `pf` bytes ahead (0: none).
///
/// # Safety
/// As [`rows_vnni`], for the one row.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
#[inline]
unsafe fn row_vnni(q: *const i8, r: *const u8, rb: usize, pf: usize) -> __m512i {
    let low = _mm512_set1_epi8(0x0F);
    if pf != 0 {
        super::simd::prefetch_span(r.wrapping_add(pf), rb);
    }
    let mut a0 = _mm512_setzero_si512();
    let mut a1 = _mm512_setzero_si512();
    let mut b = 0;
    while b < rb {
        let v = _mm512_loadu_si512(r.add(b) as *const _);
        let lo = _mm512_and_si512(v, low);
        let hi = _mm512_and_si512(_mm512_srli_epi16::<4>(v), low);
        a0 = _mm512_dpbusd_epi32(a0, lo, _mm512_loadu_si512(q.add(2 * b) as *const _));
        a1 = _mm512_dpbusd_epi32(a1, hi, _mm512_loadu_si512(q.add(2 * b + 64) as *const _));
        b += 64;
    }
    _mm512_add_epi32(a0, a1)
}

/// The 16 rows at `k` (`rb` bytes each) scored against `q`, offered to `heap` as keys `t0..`:
/// the sums stay in vectors (one horizontal add tree for all 16 rows), are scaled by
/// `qscale * scales[j]` and compared with the heap's gate together, so only the few scores that
/// pass go through the heap one by one.
///
/// # Safety
/// As [`rows_vnni`], with 16 rows; `scales` holds 16 values.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
#[allow(clippy::too_many_arguments)]
unsafe fn rows16_vnni(
    q: *const i8,
    k: *const u8,
    rb: usize,
    pf: usize,
    bias: i32,
    qscale: f32,
    scales: *const f32,
    t0: usize,
    heap: &mut TopK,
) {
    let mut acc = [_mm512_setzero_si512(); 16];
    for (j, a) in acc.iter_mut().enumerate() {
        *a = row_vnni(q, k.add(j * rb), rb, pf);
    }
    // Add tree. Level 1 adds within 128-bit blocks pairwise (rows 2i, 2i+1 interleaved), level
    // 2 finishes each block's sum for rows 4i..4i+3, levels 3 and 4 add the blocks, which leaves
    // row r's total in lane r.
    let mut l1 = [_mm512_setzero_si512(); 8];
    for i in 0..8 {
        let (x, y) = (acc[2 * i], acc[2 * i + 1]);
        l1[i] = _mm512_add_epi32(_mm512_unpacklo_epi32(x, y), _mm512_unpackhi_epi32(x, y));
    }
    let mut l2 = [_mm512_setzero_si512(); 4];
    for i in 0..4 {
        let (x, y) = (l1[2 * i], l1[2 * i + 1]);
        l2[i] = _mm512_add_epi32(_mm512_unpacklo_epi64(x, y), _mm512_unpackhi_epi64(x, y));
    }
    let mut l3 = [_mm512_setzero_si512(); 2];
    for i in 0..2 {
        let (x, y) = (l2[2 * i], l2[2 * i + 1]);
        l3[i] = _mm512_add_epi32(
            _mm512_shuffle_i32x4::<0x88>(x, y),
            _mm512_shuffle_i32x4::<0xDD>(x, y),
        );
    }
    let (x, y) = (l3[0], l3[1]);
    let sums = _mm512_add_epi32(
        _mm512_shuffle_i32x4::<0x88>(x, y),
        _mm512_shuffle_i32x4::<0xDD>(x, y),
    );
    let dots = _mm512_sub_epi32(sums, _mm512_set1_epi32(bias));
    let f = _mm512_mul_ps(
        _mm512_cvtepi32_ps(dots),
        _mm512_mul_ps(_mm512_set1_ps(qscale), _mm512_loadu_ps(scales)),
    );
    let mut mask = _mm512_cmp_ps_mask::<_CMP_GT_OQ>(f, _mm512_set1_ps(heap.gate()));
    if mask != 0 {
        let mut v = [0f32; 16];
        _mm512_storeu_ps(v.as_mut_ptr(), f);
        while mask != 0 {
            let j = mask.trailing_zeros() as usize;
            heap.offer(v[j], (t0 + j) as u32);
            mask &= mask - 1;
        }
    }
}

/// The same sums, one value at a time (tests).
#[cfg(test)]
fn rows_scalar(q: &[i8], k: &[u8], rb: usize, out: &mut [i32]) {
    for (j, o) in out.iter_mut().enumerate() {
        let r = &k[j * rb..(j + 1) * rb];
        *o = (0..rb * 2)
            .map(|i| (code(r, i) + 8) * q[i] as i32)
            .sum::<i32>();
    }
}

/// Whether this processor runs the scan.
pub(crate) fn available() -> bool {
    super::vnni::available()
}

/// Offers every key of `range` (rows of `codes`, `rb` bytes each, with `scales`) to `heap`,
/// scored against `q`. Needs [`available`].
pub(crate) fn scan(
    q: &Query4,
    codes: &[u8],
    scales: &[f32],
    rb: usize,
    range: Range<usize>,
    heap: &mut TopK,
) {
    #[cfg(target_arch = "x86_64")]
    {
        assert!(available(), "4-bit scan without VNNI");
        const R: usize = topk::ROWS1;
        let mut out = [0i32; R];
        let bias = 8 * q.sum;
        let mut t = range.start;
        while t + 16 <= range.end {
            let pf = topk::prefetch_inside(topk::PREFETCH_BYTES, t, 16, rb, range.end);
            let kt = &codes[t * rb..(t + 16) * rb];
            let sc = &scales[t..t + 16];
            // SAFETY: `q.codes` holds 2 * rb bytes, `kt` 16 rows of rb and `sc` 16 scales;
            // VNNI is asserted.
            unsafe {
                rows16_vnni(
                    q.codes.as_ptr(),
                    kt.as_ptr(),
                    rb,
                    pf,
                    bias,
                    q.scale,
                    sc.as_ptr(),
                    t,
                    heap,
                )
            };
            t += 16;
        }
        while t < range.end {
            let nk = R.min(range.end - t);
            let pf = topk::prefetch_inside(topk::PREFETCH_BYTES, t, nk, rb, range.end);
            let kt = &codes[t * rb..(t + nk) * rb];
            // SAFETY: `q.codes` holds 2 * rb bytes and `kt` nk rows of rb; VNNI is asserted.
            unsafe { rows_vnni(q.codes.as_ptr(), kt.as_ptr(), rb, nk, pf, &mut out) };
            for (j, &s) in out[..nk].iter().enumerate() {
                heap.offer(
                    (s - bias) as f32 * (q.scale * scales[t + j]),
                    (t + j) as u32,
                );
            }
            t += nk;
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = (q, codes, scales, rb, range, heap);
        unreachable!("4-bit scan without VNNI");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::embed::testutil::randn;

    #[test]
    fn pack_keeps_every_value_within_half_a_step() {
        for d in [1, 5, 64, 100, 128, 129, 300, 768] {
            let x = randn(d, d as u64);
            let mut row = vec![0u8; row_bytes(d)];
            let s = pack(&x, &mut row);
            let m = x.iter().fold(0f32, |m, v| m.max(v.abs()));
            assert!((s - m / 7.0).abs() <= 1e-6 * m);
            for (i, &v) in x.iter().enumerate() {
                assert!(
                    (s * code(&row, i) as f32 - v).abs() <= 0.5 * s * 1.0001,
                    "d {d} i {i}"
                );
            }
            for i in d..row_bytes(d) * 2 {
                assert_eq!(code(&row, i), 0);
            }
        }
        let mut row = vec![0u8; 64];
        assert_eq!(pack(&[0.0; 3], &mut row), 0.0);
        assert!(pack(&[1.0, f32::NAN], &mut row).is_nan());
    }

    #[test]
    fn the_scan_offers_every_row_its_own_score() {
        // 16-row groups (the add tree) and the tail, against the scalar sums.
        if !available() {
            return;
        }
        for (n, d) in [(50, 768), (37, 100), (16, 128), (5, 64)] {
            let rb = row_bytes(d);
            let keys = randn(n * d, 7 + n as u64);
            let mut codes = vec![0u8; n * rb];
            let mut scales = vec![0f32; n];
            for ((x, r), s) in keys
                .chunks_exact(d)
                .zip(codes.chunks_exact_mut(rb))
                .zip(&mut scales)
            {
                *s = pack(x, r);
            }
            let q = quantize_query(&randn(d, 8));
            let mut h = TopK::new(n);
            scan(&q, &codes, &scales, rb, 0..n, &mut h);
            let mut got = h.into_sorted();
            got.sort_by_key(|e| e.1);
            let mut sums = vec![0i32; n];
            rows_scalar(&q.codes, &codes, rb, &mut sums);
            for (j, (&s, g)) in sums.iter().zip(&got).enumerate() {
                let want = (s - 8 * q.sum) as f32 * (q.scale * scales[j]);
                assert_eq!(
                    (g.0.to_bits(), g.1),
                    (want.to_bits(), j as u32),
                    "n {n} d {d} row {j}"
                );
            }
        }
    }

    #[test]
    fn the_vnni_rows_match_the_scalar_sums() {
        if !available() {
            return;
        }
        for d in [1, 64, 100, 128, 200, 768] {
            let rb = row_bytes(d);
            let n = 21;
            let keys = randn(n * d, 3);
            let mut codes = vec![0u8; n * rb];
            for (x, r) in keys.chunks_exact(d).zip(codes.chunks_exact_mut(rb)) {
                pack(x, r);
            }
            let q = quantize_query(&randn(d, 4));
            let mut want = vec![0i32; n];
            rows_scalar(&q.codes, &codes, rb, &mut want);
            let mut got = [0i32; 32];
            // SAFETY: sizes as required; VNNI checked above.
            unsafe { rows_vnni(q.codes.as_ptr(), codes.as_ptr(), rb, n, 0, &mut got) };
            assert_eq!(&got[..n], &want[..], "d {d}");
        }
    }
}
