//! Exact top-k by dot product / cosine, without a score matrix.
//!
//! Why it is fast: numpy computes `Q @ K.T` into a [B, N] matrix (25 MB for 32 x 200k) and then
//! `argpartition`s it. Here a microkernel computes a tile of MQ queries x NK keys with MQ*NK
//! 512-bit accumulators (24 of the 32 registers), loading each key vector once per tile and each
//! query vector once per key tile, so it is bound by the FMA units rather than by loads; the
//! MQ*NK scores go straight into per-query bounded heaps, where almost every score is rejected by
//! one comparison with the heap's current threshold. A key tile (NK rows) stays in L1 while all
//! queries of a block (<= QB, in L2) pass over it, so every key is read from memory once per
//! query block. Work is split into (query block, key chunk) tasks; each task keeps its own heaps,
//! and the merge orders by (score desc, index asc), so results do not depend on scheduling.
//!
//! Keys can be f32, f16 or int8 (converted to f32 in registers, so the compressed layout is what
//! is streamed from memory; int8 on VNNI processors is multiplied as bytes, see `vnni`); a
//! per-key factor (1/|k| for cosine on raw keys, computed in the same pass; the int8 scale)
//! multiplies each dot product. Keys are prefetched a fixed distance ahead from inside the
//! microkernel, spread evenly over its loads.
//!
//! A single query on AVX-512 takes a different kernel (`row1_avx512`): there is no query reuse
//! to win, and interleaving NK key rows made the scan latency-bound (~30 GB/s of f16 on two
//! cores). It scores one key row start to end with four accumulators, prefetching the row
//! PREFETCH_BYTES ahead as it starts, so memory is read strictly in order; one core then streams
//! ~35-39 GB/s, and two reach the memory bandwidth. For cosine on raw keys it sums the row's
//! squares from the same loads (before, one query on raw keys took the tile path: 19.4 ms
//! against 17.8 ms now for 200k x 768, pytest bench medians).
use super::simd::{self, Elem, Level};
use super::Metric;
use crate::{Error, Result};
use std::cmp::Ordering;
use std::ops::Range;

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

/// Keys per microkernel tile.
pub(crate) const NK: usize = 4;
/// Most queries per microkernel tile.
pub(crate) const MQ: usize = 6;
/// Most queries per microkernel tile below AVX-512 (16 ymm registers; see `tile_avx2`).
const AVX2_MQ: usize = 3;
/// Queries per task (a multiple of MQ; 96 x 768 f32 = 288 KB stays in L2).
const QB: usize = 96;

/// How far ahead of the tile being scored the scan prefetches keys. Measured here: without it a
/// single-query int8 scan reached ~13 GB/s, with 64-128 KB ahead ~40-50 GB/s; f16 likewise gained
/// ~40%. The hardware prefetchers alone do not keep enough misses in flight.
pub(crate) const PREFETCH_BYTES: usize = 128 * 1024;

/// Keys `t .. t + nk` of a row-major `[n, d]` array as one `NK`-key tile: borrowed when the tile
/// is full, else copied into `pad` and zero-padded (the padding's scores are computed and
/// dropped).
#[inline]
pub(crate) fn key_tile<'a, T: Copy + Default>(
    keys: &'a [T],
    t: usize,
    nk: usize,
    d: usize,
    pad: &'a mut Vec<T>,
) -> &'a [T] {
    if nk == NK {
        &keys[t * d..(t + NK) * d]
    } else {
        pad.clear();
        pad.extend_from_slice(&keys[t * d..(t + nk) * d]);
        pad.resize(NK * d, T::default());
        pad
    }
}

/// `a` ranks before `b`: higher score, then lower index; NaN ranks below every number.
#[inline]
pub(crate) fn better(a: (f32, u32), b: (f32, u32)) -> bool {
    match (a.0.is_nan(), b.0.is_nan()) {
        (false, false) => a.0 > b.0 || (a.0 == b.0 && a.1 < b.1),
        (false, true) => true,
        (true, false) => false,
        (true, true) => a.1 < b.1,
    }
}

pub(crate) fn order(a: &(f32, u32), b: &(f32, u32)) -> Ordering {
    if better(*a, *b) {
        Ordering::Less
    } else if better(*b, *a) {
        Ordering::Greater
    } else {
        Ordering::Equal
    }
}

/// A (score, key index) pair.
pub(crate) type Scored = (f32, u32);

/// The k best (score, index) pairs seen so far: a binary heap with the worst at the root.
///
/// With a slack ([`TopK::with_slack`]) it also keeps every offer that came within `slack` of the
/// running k-th best score: the candidates of an exact search over a sketch (see `index`).
#[derive(Clone, Debug)]
pub(crate) struct TopK {
    k: usize,
    heap: Vec<(f32, u32)>,
    /// Offers above this take the slow path (when `lenient` is false): the k-th best score, or
    /// that minus the slack (rounded down) when collecting `near`.
    gate: f32,
    /// Not full yet, or the worst kept score is NaN: every offer takes the slow path.
    lenient: bool,
    near: Option<Box<Near>>,
}

/// The offers of a [`TopK`] with a slack that may still come within it of the k-th best.
#[derive(Clone, Debug)]
struct Near {
    slack: f64,
    list: Vec<(f32, u32)>,
    /// Prune `list` once it is this long.
    prune_at: usize,
    /// Give up once more than this many stay after pruning.
    cap: usize,
    overflow: bool,
}

/// The largest f32 at most `x`.
fn f32_at_most(x: f64) -> f32 {
    let f = x as f32;
    if f as f64 > x {
        f.next_down()
    } else {
        f
    }
}

impl TopK {
    pub(crate) fn new(k: usize) -> Self {
        TopK {
            k,
            heap: Vec::with_capacity(k),
            gate: f32::INFINITY,
            lenient: k > 0,
            near: None,
        }
    }

    /// A heap that also collects every offer `s` with `s > kth - slack` at the time it is
    /// offered (`kth`: the k-th best score so far), pruned as `kth` rises. Finite scores only.
    /// Collecting stops, and [`Self::into_parts`] says so, once more than `cap` of them remain.
    pub(crate) fn with_slack(k: usize, slack: f64, cap: usize) -> Self {
        let mut h = TopK::new(k);
        h.near = Some(Box::new(Near {
            slack,
            list: Vec::with_capacity(4 * k + 64),
            prune_at: 4 * k + 64,
            cap,
            overflow: false,
        }));
        h
    }

    /// Offers a score; the fast path is one comparison. Only valid when indices are offered in
    /// increasing order (a tie with the threshold then never wins); otherwise use [`Self::push`].
    #[inline(always)]
    pub(crate) fn offer(&mut self, s: f32, i: u32) {
        if s > self.gate || self.lenient {
            self.push(s, i);
        }
    }

    /// A score at or below this is refused by [`Self::offer`] at once (negative infinity while
    /// every offer takes the slow path), so a vector of scores can be filtered first.
    #[inline(always)]
    pub(crate) fn gate(&self) -> f32 {
        if self.lenient {
            f32::NEG_INFINITY
        } else {
            self.gate
        }
    }

    /// The k best (in no order) and the offers collected with the slack (`None` if there were
    /// more than the cap, or no slack was given). The second may lack some of the first.
    pub(crate) fn into_parts(self) -> (Vec<Scored>, Option<Vec<Scored>>) {
        let near = self.near.and_then(|nr| (!nr.overflow).then_some(nr.list));
        (self.heap, near)
    }

    #[inline(never)]
    pub(crate) fn push(&mut self, s: f32, i: u32) {
        if self.near.is_some() {
            self.note(s, i);
        }
        let h = &mut self.heap;
        if h.len() < self.k {
            h.push((s, i));
            let mut c = h.len() - 1;
            while c > 0 {
                let p = (c - 1) / 2;
                if better(h[p], h[c]) {
                    h.swap(p, c);
                    c = p;
                } else {
                    break;
                }
            }
        } else if self.k > 0 && better((s, i), h[0]) {
            h[0] = (s, i);
            let mut p = 0;
            loop {
                let (l, r) = (2 * p + 1, 2 * p + 2);
                let mut w = p;
                if l < h.len() && better(h[w], h[l]) {
                    w = l;
                }
                if r < h.len() && better(h[w], h[r]) {
                    w = r;
                }
                if w == p {
                    break;
                }
                h.swap(p, w);
                p = w;
            }
        } else {
            return;
        }
        if h.len() == self.k {
            let r = h[0].0;
            self.lenient = r.is_nan();
            self.gate = if r.is_nan() { f32::INFINITY } else { r };
            if let Some(nr) = self.near.as_deref() {
                if !nr.overflow && !self.lenient {
                    self.gate = f32_at_most(r as f64 - nr.slack);
                }
            }
        }
    }

    /// Keeps an offer that passed the gate in `near`, pruning it as it grows.
    #[cold]
    fn note(&mut self, s: f32, i: u32) {
        let Some(nr) = self.near.as_deref_mut() else {
            return;
        };
        if nr.overflow || !(self.lenient || s > self.gate) {
            return;
        }
        nr.list.push((s, i));
        if nr.list.len() >= nr.prune_at && !self.lenient {
            let g = self.gate;
            nr.list.retain(|e| e.0 > g);
            nr.prune_at = (2 * nr.list.len()).max(nr.prune_at);
            if nr.list.len() > nr.cap {
                // Too many to score: give up collecting, and let the heap run as usual.
                nr.overflow = true;
                nr.list = Vec::new();
                self.gate = self.heap[0].0;
            }
        }
    }

    /// Best first.
    pub(crate) fn into_sorted(mut self) -> Vec<(f32, u32)> {
        self.heap.sort_unstable_by(order);
        self.heap
    }
}

/// What multiplies each key's dot product.
#[derive(Clone, Copy)]
pub(crate) enum KeyFactor<'a> {
    One,
    PerKey(&'a [f32]),
    /// 1 / |key| (cosine on raw keys), computed while the key tile is loaded anyway.
    InvNorm,
}

/// One query against the `nk` consecutive `d`-wide key rows at `k`: `out[j] = q . k[j]`. Each row
/// is read start to end with four accumulators (enough to cover FMA and conversion latency, one
/// row at a time keeps the access pattern sequential). `pf`: prefetch distance in elements (0:
/// none); each row's lines that far ahead are requested as the row starts.
///
/// # Safety
/// `q` holds `d` values, `k` holds `nk * d`; the processor has AVX-512F/BW/VL and FMA.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,fma")]
unsafe fn row1_avx512<E: Elem, const NORM: bool>(
    q: *const f32,
    k: *const E,
    d: usize,
    nk: usize,
    pf: usize,
    out: &mut [f32],
    nrm: &mut [f32],
) {
    let bytes = d * std::mem::size_of::<E>();
    for (j, o) in out.iter_mut().enumerate().take(nk) {
        let r = k.add(j * d);
        if pf != 0 {
            simd::prefetch_span(r.wrapping_add(pf) as *const u8, bytes);
        }
        let mut a = [_mm512_setzero_ps(); 4];
        // With NORM, the row's squared norm too, from the same loads (cosine on raw keys).
        let mut b = [_mm512_setzero_ps(); 4];
        let mut i = 0;
        while i + 64 <= d {
            for u in 0..4 {
                let qv = _mm512_loadu_ps(q.add(i + 16 * u));
                let kv = E::load16(r.add(i + 16 * u));
                a[u] = _mm512_fmadd_ps(qv, kv, a[u]);
                if NORM {
                    b[u] = _mm512_fmadd_ps(kv, kv, b[u]);
                }
            }
            i += 64;
        }
        let mut u = 0;
        while i + 16 <= d {
            let kv = E::load16(r.add(i));
            a[u] = _mm512_fmadd_ps(_mm512_loadu_ps(q.add(i)), kv, a[u]);
            if NORM {
                b[u] = _mm512_fmadd_ps(kv, kv, b[u]);
            }
            u += 1;
            i += 16;
        }
        if i < d {
            let n = d - i;
            let mask = ((1u32 << n) - 1) as u16;
            let qv = _mm512_maskz_loadu_ps(mask, q.add(i));
            let kv = E::load16_tail(r.add(i), n);
            a[3] = _mm512_fmadd_ps(qv, kv, a[3]);
            if NORM {
                b[3] = _mm512_fmadd_ps(kv, kv, b[3]);
            }
        }
        let s = _mm512_add_ps(_mm512_add_ps(a[0], a[1]), _mm512_add_ps(a[2], a[3]));
        *o = _mm512_reduce_add_ps(s);
        if NORM {
            let s = _mm512_add_ps(_mm512_add_ps(b[0], b[1]), _mm512_add_ps(b[2], b[3]));
            nrm[j] = _mm512_reduce_add_ps(s);
        }
    }
}

/// [`row1_avx512`] on AVX2: 8 lanes, four accumulators.
///
/// # Safety
/// `q` holds `d` values, `k` holds `nk * d`; the processor has AVX2, FMA and F16C.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn row1_avx2<E: Elem, const NORM: bool>(
    q: *const f32,
    k: *const E,
    d: usize,
    nk: usize,
    pf: usize,
    out: &mut [f32],
    nrm: &mut [f32],
) {
    let bytes = d * std::mem::size_of::<E>();
    for (j, o) in out.iter_mut().enumerate().take(nk) {
        let r = k.add(j * d);
        if pf != 0 {
            simd::prefetch_span(r.wrapping_add(pf) as *const u8, bytes);
        }
        let mut a = [_mm256_setzero_ps(); 4];
        let mut b = [_mm256_setzero_ps(); 4];
        let mut i = 0;
        while i + 32 <= d {
            for u in 0..4 {
                let qv = _mm256_loadu_ps(q.add(i + 8 * u));
                let kv = E::load8(r.add(i + 8 * u));
                a[u] = _mm256_fmadd_ps(qv, kv, a[u]);
                if NORM {
                    b[u] = _mm256_fmadd_ps(kv, kv, b[u]);
                }
            }
            i += 32;
        }
        let mut u = 0;
        while i + 8 <= d {
            let kv = E::load8(r.add(i));
            a[u] = _mm256_fmadd_ps(_mm256_loadu_ps(q.add(i)), kv, a[u]);
            if NORM {
                b[u] = _mm256_fmadd_ps(kv, kv, b[u]);
            }
            u += 1;
            i += 8;
        }
        if i < d {
            let n = d - i;
            let qv = simd::load8_tail(q.add(i), n);
            let kv = simd::load8_tail(r.add(i), n);
            a[3] = _mm256_fmadd_ps(qv, kv, a[3]);
            if NORM {
                b[3] = _mm256_fmadd_ps(kv, kv, b[3]);
            }
        }
        let s = _mm256_add_ps(_mm256_add_ps(a[0], a[1]), _mm256_add_ps(a[2], a[3]));
        *o = simd::hsum8(s);
        if NORM {
            let s = _mm256_add_ps(_mm256_add_ps(b[0], b[1]), _mm256_add_ps(b[2], b[3]));
            nrm[j] = simd::hsum8(s);
        }
    }
}

/// Keys per call of the single-query kernels.
pub(crate) const ROWS1: usize = 16;

/// Whether the prefetch `pf` elements ahead of keys `t .. t + nk` (rows `d` wide) stays inside
/// `range`: prefetching the next chunk would only fetch lines another task reads.
#[inline]
pub(crate) fn prefetch_inside(pf: usize, t: usize, nk: usize, d: usize, end: usize) -> usize {
    if (t + nk) * d + pf <= end * d {
        pf
    } else {
        0
    }
}

/// The single-query scan on AVX-512 or AVX2 (see the module notes).
#[cfg(target_arch = "x86_64")]
fn scan1<E: Elem>(
    lv: Level,
    q: &[f32],
    keys: &[E],
    d: usize,
    range: Range<usize>,
    factor: KeyFactor<'_>,
    heap: &mut TopK,
) {
    let pf_elems = PREFETCH_BYTES / std::mem::size_of::<E>();
    let mut out = [0f32; ROWS1];
    let mut nrm = [0f32; ROWS1];
    let norm = matches!(factor, KeyFactor::InvNorm);
    let mut t = range.start;
    while t < range.end {
        let nk = ROWS1.min(range.end - t);
        let pf = prefetch_inside(pf_elems, t, nk, d, range.end);
        let kt = &keys[t * d..(t + nk) * d];
        let (qp, kp) = (q.as_ptr(), kt.as_ptr());
        // SAFETY: `q` holds d values and `kt` nk rows of d; the caller checked that the
        // processor runs `lv` (Avx512 includes FMA; Avx2 includes FMA and F16C).
        unsafe {
            match (lv == Level::Avx512, norm) {
                (true, false) => row1_avx512::<E, false>(qp, kp, d, nk, pf, &mut out, &mut nrm),
                (true, true) => row1_avx512::<E, true>(qp, kp, d, nk, pf, &mut out, &mut nrm),
                (false, false) => row1_avx2::<E, false>(qp, kp, d, nk, pf, &mut out, &mut nrm),
                (false, true) => row1_avx2::<E, true>(qp, kp, d, nk, pf, &mut out, &mut nrm),
            }
        };
        for (j, &s) in out[..nk].iter().enumerate() {
            let v = match factor {
                KeyFactor::PerKey(f) => s * f[t + j],
                KeyFactor::InvNorm => {
                    let row = &kt[j * d..(j + 1) * d];
                    match simd::inv_norm_of(nrm[j], row) {
                        f32::INFINITY => simd::cosine_f64(q, row), // a key of tiny norm
                        f => s * f,
                    }
                }
                KeyFactor::One => s,
            };
            heap.offer(v, (t + j) as u32);
        }
        t += nk;
    }
}

/// The offers of one tile where a key has a tiny norm (`f[j]` infinite, see
/// [`simd::inv_norm_of`]): that key is scored in f64, the others as usual. Kept out of line, so
/// the usual loop stays as it was.
#[cold]
#[inline(never)]
#[allow(clippy::too_many_arguments)]
fn offer_with_tiny_keys<E: Elem>(
    s: &[[f32; NK]],
    f: &[f32; NK],
    nk: usize,
    t: usize,
    qq: &[f32],
    kt: &[E],
    d: usize,
    heaps: &mut [TopK],
) {
    for (mm, h) in heaps.iter_mut().enumerate() {
        for j in 0..nk {
            let v = if f[j] == f32::INFINITY {
                simd::cosine_f64(&qq[mm * d..(mm + 1) * d], &kt[j * d..(j + 1) * d])
            } else {
                s[mm][j] * f[j]
            };
            h.offer(v, (t + j) as u32);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Microkernels: scores of `M` queries (rows of `q`, stride `qs`) against NK keys (rows of `k`,
// stride `ks`), over `d` dimensions.

type Tile<const M: usize> = [[f32; NK]; M];

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,fma")]
unsafe fn tile_avx512<E: Elem, const M: usize, const NORM: bool>(
    q: *const f32,
    qs: usize,
    k: *const E,
    ks: usize,
    d: usize,
    pf: usize,
    nrm: *mut [f32; NK],
) -> Tile<M> {
    let mut acc = [[_mm512_setzero_ps(); NK]; M];
    // With NORM, also the keys' squared norms, from the same registers (cosine on raw keys).
    let mut nacc = [_mm512_setzero_ps(); NK];
    let mut i = 0;
    let line = 64 / std::mem::size_of::<E>();
    while i + 16 <= d {
        let mut kv = [_mm512_setzero_ps(); NK];
        if pf != 0 && i % line == 0 {
            // Prefetch the same line `pf` elements further on: over a scan every key line is
            // requested once, spread evenly between the loads that use the lines now.
            for j in 0..NK {
                _mm_prefetch::<_MM_HINT_T0>(k.wrapping_add(j * ks + i + pf) as *const i8);
            }
        }
        for j in 0..NK {
            kv[j] = E::load16(k.add(j * ks + i));
            if NORM {
                nacc[j] = _mm512_fmadd_ps(kv[j], kv[j], nacc[j]);
            }
        }
        for m in 0..M {
            let qv = _mm512_loadu_ps(q.add(m * qs + i));
            for j in 0..NK {
                acc[m][j] = _mm512_fmadd_ps(qv, kv[j], acc[m][j]);
            }
        }
        i += 16;
    }
    if i < d {
        let n = d - i;
        let mask = ((1u32 << n) - 1) as u16;
        let mut kv = [_mm512_setzero_ps(); NK];
        for j in 0..NK {
            kv[j] = E::load16_tail(k.add(j * ks + i), n);
            if NORM {
                nacc[j] = _mm512_fmadd_ps(kv[j], kv[j], nacc[j]);
            }
        }
        for m in 0..M {
            let qv = _mm512_maskz_loadu_ps(mask, q.add(m * qs + i));
            for j in 0..NK {
                acc[m][j] = _mm512_fmadd_ps(qv, kv[j], acc[m][j]);
            }
        }
    }
    let mut out = [[0f32; NK]; M];
    for m in 0..M {
        for j in 0..NK {
            out[m][j] = _mm512_reduce_add_ps(acc[m][j]);
        }
    }
    if NORM {
        for j in 0..NK {
            (*nrm)[j] = _mm512_reduce_add_ps(nacc[j]);
        }
    }
    out
}

#[inline(always)]
fn tile_generic<E: Elem, const M: usize>(
    q: &[f32],
    qs: usize,
    k: &[E],
    ks: usize,
    d: usize,
) -> Tile<M> {
    const L: usize = 8;
    let mut acc = [[[0f32; L]; NK]; M];
    let mut kb = [[0f32; L]; NK];
    let full = d / L * L;
    let mut i = 0;
    while i < full {
        for j in 0..NK {
            E::convert(&k[j * ks + i..j * ks + i + L], &mut kb[j]);
        }
        for m in 0..M {
            let qv: &[f32; L] = q[m * qs + i..m * qs + i + L].try_into().unwrap();
            for j in 0..NK {
                for l in 0..L {
                    acc[m][j][l] += qv[l] * kb[j][l];
                }
            }
        }
        i += L;
    }
    let mut out = [[0f32; NK]; M];
    for m in 0..M {
        for j in 0..NK {
            let mut s: f32 = acc[m][j].iter().sum();
            for t in full..d {
                s += q[m * qs + t] * k[j * ks + t].to_f32();
            }
            out[m][j] = s;
        }
    }
    out
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn tile_avx2<E: Elem, const M: usize>(
    q: *const f32,
    qs: usize,
    k: *const E,
    ks: usize,
    d: usize,
    pf: usize,
) -> Tile<M> {
    // M <= AVX2_MQ = 3: the 3 x NK accumulators, the M query vectors and one key vector at a
    // time fill the 16 ymm registers. Holding all NK key vectors instead spilled several
    // accumulators and halved the speed; the compiler may still spill one. Measured (32 queries,
    // 200k x 768 f32 keys): 112 ms keys-first, 67 ms like this, 78 ms with 2 x NK tiles.
    let mut acc = [[_mm256_setzero_ps(); NK]; M];
    let line = 64 / std::mem::size_of::<E>();
    let mut i = 0;
    while i + 8 <= d {
        if pf != 0 && i % line == 0 {
            for j in 0..NK {
                _mm_prefetch::<_MM_HINT_T0>(k.wrapping_add(j * ks + i + pf) as *const i8);
            }
        }
        let mut qv = [_mm256_setzero_ps(); M];
        for m in 0..M {
            qv[m] = _mm256_loadu_ps(q.add(m * qs + i));
        }
        for j in 0..NK {
            let kv = E::load8(k.add(j * ks + i));
            for m in 0..M {
                acc[m][j] = _mm256_fmadd_ps(qv[m], kv, acc[m][j]);
            }
        }
        i += 8;
    }
    if i < d {
        let n = d - i;
        let mut kv = [_mm256_setzero_ps(); NK];
        for j in 0..NK {
            kv[j] = simd::load8_tail(k.add(j * ks + i), n);
        }
        for m in 0..M {
            let qv = simd::load8_tail(q.add(m * qs + i), n);
            for j in 0..NK {
                acc[m][j] = _mm256_fmadd_ps(qv, kv[j], acc[m][j]);
            }
        }
    }
    let mut out = [[0f32; NK]; M];
    for m in 0..M {
        for j in 0..NK {
            out[m][j] = simd::hsum8(acc[m][j]);
        }
    }
    out
}

/// One tile at level `lv`. `q` holds `M` rows at stride `qs`, `k` holds NK rows at stride `ks`;
/// `pf` is the prefetch distance in elements (0: none). With `nrm`, the keys' squared norms are
/// written there too.
#[inline(always)]
fn tile<E: Elem, const M: usize>(
    lv: Level,
    pf: usize,
    q: &[f32],
    qs: usize,
    k: &[E],
    ks: usize,
    d: usize,
    nrm: Option<&mut [f32; NK]>,
) -> Tile<M> {
    debug_assert!(q.len() >= (M - 1) * qs + d && k.len() >= (NK - 1) * ks + d);
    match lv {
        #[cfg(target_arch = "x86_64")]
        Level::Avx512 => unsafe {
            let (qp, kp) = (q.as_ptr(), k.as_ptr());
            match nrm {
                Some(n) => tile_avx512::<E, M, true>(qp, qs, kp, ks, d, pf, n),
                None => tile_avx512::<E, M, false>(qp, qs, kp, ks, d, pf, std::ptr::null_mut()),
            }
        },
        _ => {
            if let Some(n) = nrm {
                for j in 0..NK {
                    n[j] = simd::sumsq(lv, &k[j * ks..j * ks + d]);
                }
            }
            match lv {
                #[cfg(target_arch = "x86_64")]
                // SAFETY: the processor runs AVX2 with FMA and F16C (the level says so); the
                // slices hold the rows (asserted above).
                Level::Avx2 => unsafe { tile_avx2::<E, M>(q.as_ptr(), qs, k.as_ptr(), ks, d, pf) },
                _ => tile_generic::<E, M>(q, qs, k, ks, d),
            }
        }
    }
}

/// One row scored by the single-query row kernel at level `lv` (AVX2 or AVX-512): the same bits
/// as [`scan1`] gives it.
fn row1_score<E: Elem>(lv: Level, q: &[f32], k: &[E]) -> f32 {
    let mut o = [0f32; 1];
    #[cfg(target_arch = "x86_64")]
    {
        let d = q.len();
        debug_assert!(k.len() >= d && lv != Level::Generic);
        // SAFETY: `q` and `k` hold d values; the caller runs at a level the processor has
        // (Avx512 includes FMA; Avx2 includes FMA and F16C).
        unsafe {
            if lv == Level::Avx512 {
                row1_avx512::<E, false>(q.as_ptr(), k.as_ptr(), d, 1, 0, &mut o, &mut [])
            } else {
                row1_avx2::<E, false>(q.as_ptr(), k.as_ptr(), d, 1, 0, &mut o, &mut [])
            }
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (lv, q, k);
    o[0]
}

/// Dot product of one f32 vector with one key row: the same bits as any query-key pair of a
/// [`tile`] at the same level (the same loads, fused multiply-adds and reduction, one
/// accumulator instead of a tile of them).
pub(crate) fn dot<E: Elem>(lv: Level, q: &[f32], k: &[E]) -> f32 {
    let d = q.len();
    debug_assert!(k.len() >= d);
    match lv {
        // SAFETY: the level says the processor has the kernel's features; both slices hold d.
        #[cfg(target_arch = "x86_64")]
        Level::Avx512 => unsafe { dot_avx512(q.as_ptr(), k.as_ptr(), d) },
        #[cfg(target_arch = "x86_64")]
        Level::Avx2 => unsafe { dot_avx2(q.as_ptr(), k.as_ptr(), d) },
        // The 1-query tile with key stride 0 (all NK "keys" are the same row).
        _ => tile::<E, 1>(lv, 0, q, d, k, 0, d, None)[0][0],
    }
}

/// One pair of [`tile_avx512`].
///
/// # Safety
/// `q` and `k` hold `d` values; the processor has AVX-512F/BW/VL and FMA.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,fma")]
unsafe fn dot_avx512<E: Elem>(q: *const f32, k: *const E, d: usize) -> f32 {
    let mut acc = _mm512_setzero_ps();
    let mut i = 0;
    while i + 16 <= d {
        acc = _mm512_fmadd_ps(_mm512_loadu_ps(q.add(i)), E::load16(k.add(i)), acc);
        i += 16;
    }
    if i < d {
        let n = d - i;
        let mask = ((1u32 << n) - 1) as u16;
        let kv = E::load16_tail(k.add(i), n);
        acc = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(mask, q.add(i)), kv, acc);
    }
    _mm512_reduce_add_ps(acc)
}

/// One pair of [`tile_avx2`].
///
/// # Safety
/// `q` and `k` hold `d` values; the processor has AVX2, FMA and F16C.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn dot_avx2<E: Elem>(q: *const f32, k: *const E, d: usize) -> f32 {
    let mut acc = _mm256_setzero_ps();
    let mut i = 0;
    while i + 8 <= d {
        acc = _mm256_fmadd_ps(_mm256_loadu_ps(q.add(i)), E::load8(k.add(i)), acc);
        i += 8;
    }
    if i < d {
        let n = d - i;
        let kv = simd::load8_tail(k.add(i), n);
        acc = _mm256_fmadd_ps(simd::load8_tail(q.add(i), n), kv, acc);
    }
    simd::hsum8(acc)
}

/// Scans keys `range` (rows of `keys`, `d` wide) for the `nq` prepared queries in `q`, offering
/// every score to `heaps[i]` for query `i`.
pub(crate) fn scan<E: Elem>(
    lv: Level,
    q: &[f32],
    nq: usize,
    keys: &[E],
    d: usize,
    range: Range<usize>,
    factor: KeyFactor<'_>,
    heaps: &mut [TopK],
) {
    #[cfg(target_arch = "x86_64")]
    if nq == 1 && lv != Level::Generic {
        scan1(lv, &q[..d], keys, d, range, factor, &mut heaps[0]);
        return;
    }
    let mut pad: Vec<E> = Vec::new();
    // 16 ymm registers (AVX2 and below) hold a 3 x NK tile of 8-lane accumulators; AVX-512's 32
    // zmm registers hold 6 x NK.
    let mq = if lv == Level::Avx512 { MQ } else { AVX2_MQ };
    let pf_elems = PREFETCH_BYTES / std::mem::size_of::<E>();
    // f16 and int8 key tiles scored for several query groups are converted to f32 once,
    // instead of once per group: the conversions otherwise compete with the FMAs (AVX2, 32
    // queries x 200k x 768 f16 keys: 85 ms, against 48 ms for f32 keys). Exact, so the scores
    // are the same.
    let wide = std::any::TypeId::of::<E>() != std::any::TypeId::of::<f32>() && nq > mq;
    let mut kbuf = if wide { vec![0f32; NK * d] } else { Vec::new() };
    let mut t = range.start;
    while t < range.end {
        let nk = NK.min(range.end - t);
        // The padded last tile lives elsewhere: no prefetching relative to it.
        let pf = if nk == NK { pf_elems } else { 0 };
        let kt: &[E] = key_tile(keys, t, nk, d, &mut pad);
        if wide {
            simd::to_f32(lv, kt, &mut kbuf, pf);
        }
        let mut f = [1f32; NK];
        let mut need_norm = false;
        let mut tiny = false; // a key of this tile is scored in f64
        match factor {
            KeyFactor::One => {}
            KeyFactor::PerKey(s) => f[..nk].copy_from_slice(&s[t..t + nk]),
            KeyFactor::InvNorm => need_norm = true,
        }
        let mut qi = 0;
        while qi < nq {
            let m = mq.min(nq - qi);
            let qq = &q[qi * d..];
            // The first query group of a tile also computes the keys' norms.
            let mut ss = [0f32; NK];
            let want = need_norm && qi == 0;
            macro_rules! run {
                ($m:literal) => {{
                    let s = if wide {
                        tile::<f32, $m>(lv, 0, qq, d, &kbuf, d, d, want.then_some(&mut ss))
                    } else {
                        tile::<E, $m>(lv, pf, qq, d, kt, d, d, want.then_some(&mut ss))
                    };
                    if want {
                        for j in 0..nk {
                            f[j] = simd::inv_norm_of(ss[j], &kt[j * d..(j + 1) * d]);
                            tiny |= f[j] == f32::INFINITY;
                        }
                    }
                    if tiny {
                        offer_with_tiny_keys(&s, &f, nk, t, qq, kt, d, &mut heaps[qi..qi + $m]);
                    } else {
                        for mm in 0..$m {
                            let h = &mut heaps[qi + mm];
                            for j in 0..nk {
                                h.offer(s[mm][j] * f[j], (t + j) as u32);
                            }
                        }
                    }
                }};
            }
            match m {
                6 => run!(6),
                5 => run!(5),
                4 => run!(4),
                3 => run!(3),
                2 => run!(2),
                _ => run!(1),
            }
            qi += m;
        }
        t += nk;
    }
}

/// Searches `nq` prepared queries (`q`, row-major, `d` wide) against `n` keys, returning each
/// query's best `k` (score, index) pairs, best first. Parallel over (query block, key chunk).
pub(crate) fn search<E: Elem>(
    lv: Level,
    q: &[f32],
    nq: usize,
    keys: &[E],
    n: usize,
    d: usize,
    k: usize,
    factor: KeyFactor<'_>,
) -> Vec<Vec<(f32, u32)>> {
    drive(nq, n, d, k, &|q0, qn, r, heaps| {
        scan(lv, &q[q0 * d..(q0 + qn) * d], qn, keys, d, r, factor, heaps)
    })
}

/// Queries `[q0, q0 + qn)` against keys `r`, offering into `heaps` (one per query of the block).
pub(crate) type ScanFn<'a> = dyn Fn(usize, usize, Range<usize>, &mut [TopK]) + Sync + 'a;

/// Runs `scan_block` over (query block, key chunk) tasks in parallel and merges deterministically:
/// each query's best `k` (score, index) pairs, best first.
pub(crate) fn drive(
    nq: usize,
    n: usize,
    d: usize,
    k: usize,
    scan_block: &ScanFn<'_>,
) -> Vec<Vec<(f32, u32)>> {
    if nq == 0 {
        return vec![];
    }
    if k == 0 || n == 0 {
        return vec![vec![]; nq];
    }
    let Some(parts) = drive_parts(nq, n, d, k, &|_| TopK::new(k), scan_block) else {
        // Interrupted (Ctrl-C): the caller drops the result.
        return vec![vec![]; nq];
    };
    // Deterministic merge: gather each query's candidates from all chunks, order, truncate.
    parts
        .into_iter()
        .map(|chunks| {
            let mut all: Vec<(f32, u32)> = Vec::with_capacity(k * chunks.len());
            for h in &chunks {
                all.extend_from_slice(&h.heap);
            }
            all.sort_unstable_by(order);
            all.truncate(k);
            all
        })
        .collect()
}

/// The parallel part of [`drive`]: for each query, the heaps its key chunks filled (made by
/// `heap(query)`; `k` sizes the chunks). `None` when interrupted (Ctrl-C). Needs `nq, n, k > 0`.
pub(crate) fn drive_parts(
    nq: usize,
    n: usize,
    d: usize,
    k: usize,
    heap: &(dyn Fn(usize) -> TopK + Sync),
    scan_block: &ScanFn<'_>,
) -> Option<Vec<Vec<TopK>>> {
    let pool = crate::parallel::pool(0);
    let threads = pool.current_num_threads().max(1);
    let qblocks = nq.div_ceil(QB);
    // Enough tasks to balance, chunks big enough that per-chunk heaps stay cheap to merge.
    // Small tasks also keep a descheduled thread (on a shared machine) from holding up the rest.
    let want_chunks = (8 * threads).div_ceil(qblocks).max(1);
    let min_chunk = (8 * k).max(1024);
    let chunk = n.div_ceil(want_chunks).max(min_chunk).min(n);
    let kchunks = n.div_ceil(chunk);
    let work = nq * n * d;
    // A large `k` makes chunks (and tasks) large: a task scans its keys in steps, looking for
    // Ctrl-C between them (on the calling thread; elsewhere the poll is a cheap no).
    const STEP: usize = 1 << 14;
    let interrupted = std::sync::atomic::AtomicBool::new(false);
    let task = |t: usize| -> Vec<TopK> {
        let (qb, kc) = (t / kchunks, t % kchunks);
        let q0 = qb * QB;
        let qn = QB.min(nq - q0);
        let r = kc * chunk..(kc * chunk + chunk).min(n);
        let mut heaps: Vec<TopK> = (q0..q0 + qn).map(heap).collect();
        let mut start = r.start;
        while start < r.end {
            let end = (start + STEP).min(r.end);
            scan_block(q0, qn, start..end, &mut heaps);
            start = end;
            if start < r.end && crate::parallel::interrupt::poll() {
                interrupted.store(true, std::sync::atomic::Ordering::Relaxed);
                break;
            }
        }
        heaps
    };
    let tasks = qblocks * kchunks;
    let parts: Vec<Vec<TopK>> = if work < (1 << 18) || tasks == 1 {
        let mut parts = Vec::with_capacity(tasks);
        for t in 0..tasks {
            parts.push(task(t));
            if interrupted.load(std::sync::atomic::Ordering::Relaxed) {
                return None;
            }
        }
        parts
    } else {
        // The calling thread scans too and never waits for a pool thread that has not started.
        let mut slots: Vec<Vec<TopK>> = vec![Vec::new(); tasks];
        if !crate::parallel::for_each_mut(&pool, &mut slots, 1, |t, slot| *slot = task(t))
            || interrupted.load(std::sync::atomic::Ordering::Relaxed)
        {
            return None;
        }
        slots
    };
    // Regroup by query: task `qb * kchunks + kc` holds the heaps of block `qb`, chunk `kc`.
    let mut out: Vec<Vec<TopK>> = (0..nq).map(|_| Vec::with_capacity(kchunks)).collect();
    for (t, heaps) in parts.into_iter().enumerate() {
        let q0 = (t / kchunks) * QB;
        for (i, h) in heaps.into_iter().enumerate() {
            out[q0 + i].push(h);
        }
    }
    Some(out)
}

/// The scores [`search`] computes (for a batch of `nq` queries, at level `lv`) between query
/// `qi`, whose prepared row is `qr`, and the keys `ids`: the same kernel, so the same bits. Which
/// kernel that is depends on the size of the query's block (see [`scan`]).
pub(crate) fn exact_scores<E: Elem>(
    lv: Level,
    nq: usize,
    qi: usize,
    qr: &[f32],
    keys: &[E],
    d: usize,
    ids: &[u32],
    out: &mut Vec<f32>,
) {
    out.clear();
    // A lone query in its block takes the row kernel, which scores each row on its own, so the
    // scattered rows are scored where they lie.
    let row_kernel =
        cfg!(target_arch = "x86_64") && lv != Level::Generic && QB.min(nq - qi / QB * QB) == 1;
    simd::for_rows_prefetched(keys, d, ids, 4, |_, row| {
        out.push(if row_kernel {
            row1_score(lv, qr, row)
        } else {
            dot(lv, qr, row)
        })
    });
}

/// Copies queries into a fresh buffer, L2-normalised for cosine (zero rows stay zero).
pub(crate) fn prepare_queries(lv: Level, queries: &[f32], d: usize, metric: Metric) -> Vec<f32> {
    let mut q = queries.to_vec();
    if metric == Metric::Cosine && d > 0 {
        for r in q.chunks_exact_mut(d) {
            simd::normalize(lv, r);
        }
    }
    q
}

/// Scores `[B, k]` (descending) and indices `[B, k]`, row-major.
#[derive(Debug, PartialEq)]
pub struct TopKResult {
    pub scores: Vec<f32>,
    pub indices: Vec<i64>,
    pub k: usize,
}

impl TopKResult {
    pub(crate) fn from_lists(lists: Vec<Vec<(f32, u32)>>, k: usize) -> Self {
        let mut scores = Vec::with_capacity(lists.len() * k);
        let mut indices = Vec::with_capacity(lists.len() * k);
        for l in lists {
            // Shorter only when the scan was interrupted (and the result is dropped).
            debug_assert!(l.len() == k || crate::parallel::interrupt::stopped());
            for (s, i) in l {
                scores.push(s);
                indices.push(i as i64);
            }
        }
        TopKResult { scores, indices, k }
    }
}

pub(crate) fn check_search_args(nq_len: usize, d: usize, n: usize, k: usize) -> Result<usize> {
    if d == 0 {
        return Err(Error::Value(
            "vectors must have at least one dimension".into(),
        ));
    }
    if !nq_len.is_multiple_of(d) {
        return Err(Error::Value(format!(
            "queries have {nq_len} values, not a multiple of the dimension {d}"
        )));
    }
    if k > n {
        return Err(Error::Value(format!(
            "k = {k} is larger than the number of keys ({n})"
        )));
    }
    if n > u32::MAX as usize {
        return Err(Error::Value(format!(
            "at most {} keys are supported, got {n}",
            u32::MAX
        )));
    }
    let nq = nq_len / d;
    // The results and the heaps behind them take about 24 bytes per (query, k): a MemoryError
    // for what cannot be had, before any work.
    super::check_alloc(nq.saturating_mul(k).saturating_mul(24), "the results")?;
    Ok(nq)
}

/// Exact top-`k` of `queries` ([B, d]) against `keys` ([n, d]), both row-major.
///
/// Cosine normalises queries up front and divides each key's dot product by its norm on the fly
/// (keys are not copied). Scores are sorted descending; ties go to the lower index; NaN scores
/// (from NaN inputs; with cosine, infinite ones too) rank below every number. `k > n` is an
/// error; `k = 0` gives empty rows.
pub fn topk<E: Elem>(
    queries: &[f32],
    keys: &[E],
    n: usize,
    d: usize,
    k: usize,
    metric: Metric,
) -> Result<TopKResult> {
    topk_at(simd::level(), queries, keys, n, d, k, metric)
}

pub(crate) fn topk_at<E: Elem>(
    lv: Level,
    queries: &[f32],
    keys: &[E],
    n: usize,
    d: usize,
    k: usize,
    metric: Metric,
) -> Result<TopKResult> {
    if n.checked_mul(d) != Some(keys.len()) {
        return Err(Error::Value(format!(
            "keys have {} values, not {n} x {d}",
            keys.len()
        )));
    }
    let nq = check_search_args(queries.len(), d, n, k)?;
    let q = prepare_queries(lv, queries, d, metric);
    let factor = if metric == Metric::Cosine {
        KeyFactor::InvNorm
    } else {
        KeyFactor::One
    };
    let lists = search(lv, &q, nq, keys, n, d, k, factor);
    Ok(TopKResult::from_lists(lists, k))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::embed::testutil::randn;
    use half::f16;

    /// Reference: full score matrix in f64, stable sort by (score desc, index asc).
    pub(crate) fn reference(
        q: &[f32],
        keys: &[f32],
        d: usize,
        k: usize,
        metric: Metric,
    ) -> Vec<Vec<(f64, usize)>> {
        let norm = |v: &[f32]| {
            let n = v.iter().map(|&x| x as f64 * x as f64).sum::<f64>().sqrt();
            if n == 0.0 {
                0.0
            } else {
                1.0 / n
            }
        };
        q.chunks(d)
            .map(|qr| {
                let qn = if metric == Metric::Cosine {
                    norm(qr)
                } else {
                    1.0
                };
                let mut s: Vec<(f64, usize)> = keys
                    .chunks(d)
                    .enumerate()
                    .map(|(i, kr)| {
                        let kn = if metric == Metric::Cosine {
                            norm(kr)
                        } else {
                            1.0
                        };
                        (
                            qr.iter()
                                .zip(kr)
                                .map(|(&a, &b)| a as f64 * b as f64)
                                .sum::<f64>()
                                * qn
                                * kn,
                            i,
                        )
                    })
                    .collect();
                s.sort_by(|a, b| b.0.partial_cmp(&a.0).unwrap().then(a.1.cmp(&b.1)));
                s.truncate(k);
                s
            })
            .collect()
    }

    /// Checks `got` against the reference, allowing index swaps only between near-equal scores.
    pub(crate) fn check(got: &TopKResult, want: &[Vec<(f64, usize)>], tol: f64, what: &str) {
        let k = got.k;
        for (qi, w) in want.iter().enumerate() {
            for j in 0..k {
                let (gs, gi) = (
                    got.scores[qi * k + j] as f64,
                    got.indices[qi * k + j] as usize,
                );
                assert!(
                    (gs - w[j].0).abs() <= tol,
                    "{what}: q{qi} #{j}: score {gs} vs {}",
                    w[j].0
                );
                if gi != w[j].1 {
                    // Only acceptable if the reference scores of both are within tolerance.
                    let wpos = w.iter().position(|x| x.1 == gi);
                    assert!(
                        wpos.is_some_and(|p| (w[p].0 - w[j].0).abs() <= 2.0 * tol)
                            || (gs - w[k - 1].0).abs() <= 2.0 * tol,
                        "{what}: q{qi} #{j}: index {gi} vs {}",
                        w[j].1
                    );
                }
                if j > 0 {
                    assert!(
                        got.scores[qi * k + j - 1] >= got.scores[qi * k + j],
                        "{what}: not sorted"
                    );
                }
            }
        }
    }

    #[test]
    fn matches_reference_all_levels_shapes_and_metrics() {
        for &(nq, n, d) in &[
            (1usize, 1usize, 1usize),
            (7, 103, 33),
            (13, 2000, 64),
            (100, 3001, 17),
            (3, 5000, 768),
        ] {
            let q = randn(nq * d, 11);
            let keys = randn(n * d, 12);
            for metric in [Metric::Cosine, Metric::Dot] {
                for k in [1usize, n.min(5), n.min(10), n] {
                    let want = reference(&q, &keys, d, k, metric);
                    for lv in Level::available() {
                        let got = topk_at(lv, &q, &keys, n, d, k, metric).unwrap();
                        check(
                            &got,
                            &want,
                            1e-4 * (d as f64).sqrt(),
                            &format!("{lv:?} {metric:?} {nq}x{n}x{d} k={k}"),
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn single_query_kernel_matches_reference() {
        // One query takes the row-at-a-time kernel: every tail shape, f32 and f16 keys, chunked.
        for &(n, d) in &[
            (1usize, 1usize),
            (37, 15),
            (40, 16),
            (300, 17),
            (999, 80),
            (5000, 768),
        ] {
            let q = randn(d, 21);
            let keys = randn(n * d, 22);
            let kh: Vec<f16> = keys.iter().map(|&v| f16::from_f32(v)).collect();
            let kf: Vec<f32> = kh.iter().map(|v| v.to_f32()).collect();
            for k in [1usize, n.min(10)] {
                // Cosine on raw keys: the row kernel also sums each key's squares.
                for m in [Metric::Dot, Metric::Cosine] {
                    let tol = 1e-4
                        * if m == Metric::Dot {
                            (d as f64).sqrt()
                        } else {
                            1.0
                        };
                    let want = reference(&q, &keys, d, k, m);
                    let want_h = reference(&q, &kf, d, k, m);
                    for lv in Level::available() {
                        let what = format!("{lv:?} {m:?} 1x{n}x{d} k={k}");
                        check(
                            &topk_at(lv, &q, &keys, n, d, k, m).unwrap(),
                            &want,
                            tol,
                            &what,
                        );
                        let got = topk_at(lv, &q, &kh, n, d, k, m).unwrap();
                        check(&got, &want_h, tol, &what);
                    }
                }
            }
        }
    }

    #[test]
    fn f16_keys() {
        let (nq, n, d) = (5, 777, 40);
        let q = randn(nq * d, 1);
        let keys: Vec<f16> = randn(n * d, 2).iter().map(|&v| f16::from_f32(v)).collect();
        let kf: Vec<f32> = keys.iter().map(|v| v.to_f32()).collect();
        for lv in Level::available() {
            let got = topk_at(lv, &q, &keys, n, d, 10, Metric::Cosine).unwrap();
            check(
                &got,
                &reference(&q, &kf, d, 10, Metric::Cosine),
                1e-4,
                &format!("{lv:?}"),
            );
        }
    }

    #[test]
    fn ties_go_to_lower_index_across_chunks() {
        // Many identical keys: the answer must be the lowest indices, whatever the chunking.
        let (n, d) = (50_000, 8);
        let keys = vec![1.0f32; n * d];
        for nq in [1usize, 3] {
            let q = vec![1.0f32; nq * d];
            for lv in Level::available() {
                let got = topk_at(lv, &q, &keys, n, d, 7, Metric::Dot).unwrap();
                for r in 0..nq {
                    assert_eq!(
                        &got.indices[r * 7..r * 7 + 7],
                        &[0, 1, 2, 3, 4, 5, 6],
                        "{lv:?}"
                    );
                }
            }
        }
    }

    #[test]
    fn nan_ranks_last_and_zero_vectors_score_zero() {
        let d = 4;
        let mut keys = randn(10 * d, 3);
        keys[2 * d] = f32::NAN; // key 2 scores NaN
        keys[5 * d..6 * d].fill(0.0); // key 5 is zero
        let q = randn(d, 4);
        let got = topk(&q, &keys, 10, d, 10, Metric::Cosine).unwrap();
        assert_eq!(got.indices[9], 2);
        assert!(got.scores[9].is_nan());
        let p5 = got.indices.iter().position(|&i| i == 5).unwrap();
        assert_eq!(got.scores[p5], 0.0);
        // A NaN query: all scores NaN, indices in order.
        let qn = vec![f32::NAN; d];
        let got = topk(&qn, &keys, 10, d, 3, Metric::Dot).unwrap();
        assert_eq!(got.indices, vec![0, 1, 2]);
    }

    #[test]
    fn cosine_ignores_the_scale_of_keys_and_queries() {
        // Squared norms underflow or overflow f32 for rows below about 1e-19 or above 1e19;
        // cosine must still rank by direction.
        let (d, n) = (24, 300);
        let keys = randn(n * d, 5);
        let q = randn(3 * d, 6);
        for lv in Level::available() {
            let want = topk_at(lv, &q, &keys, n, d, 10, Metric::Cosine).unwrap();
            for s in [1e-25f32, 1e-36, 1e25, 1e36] {
                let ks: Vec<f32> = keys.iter().map(|v| v * s).collect();
                let qs: Vec<f32> = q.iter().map(|v| v * s).collect();
                for (qq, kk) in [(&q, &ks), (&qs, &keys), (&qs, &ks)] {
                    let got = topk_at(lv, qq, kk, n, d, 10, Metric::Cosine).unwrap();
                    assert_eq!(got.indices, want.indices, "{lv:?} scale {s}");
                    for (a, b) in got.scores.iter().zip(&want.scores) {
                        assert!((a - b).abs() < 1e-5, "{lv:?} scale {s}: {a} {b}");
                    }
                }
            }
            // One query (the single-query scan) too.
            let want1 = topk_at(lv, &q[..d], &keys, n, d, 5, Metric::Cosine).unwrap();
            let ks: Vec<f32> = keys.iter().map(|v| v * 1e30).collect();
            let got1 = topk_at(lv, &q[..d], &ks, n, d, 5, Metric::Cosine).unwrap();
            assert_eq!(got1.indices, want1.indices, "{lv:?}");
        }
    }

    #[test]
    fn results_too_large_for_memory_are_an_error() {
        let keys = vec![1f32; 4];
        let q = vec![1f32; 4];
        // Not too large: a [1, 4] result.
        assert!(topk(&q, &keys, 4, 1, 4, Metric::Dot).is_ok());
        assert!(matches!(
            super::super::check_alloc(usize::MAX / 2, "x"),
            Err(Error::TooLarge(_))
        ));
    }

    #[test]
    fn bad_args() {
        let keys = vec![0f32; 12];
        assert!(topk(&[0.0; 4], &keys, 3, 4, 4, Metric::Dot).is_err());
        assert!(topk(&[0.0; 5], &keys, 3, 4, 1, Metric::Dot).is_err());
        assert!(topk(&[0.0; 4], &keys, 4, 4, 1, Metric::Dot).is_err());
        let r = topk(&[0.0; 4], &keys, 3, 4, 0, Metric::Dot).unwrap();
        assert!(r.scores.is_empty());
    }

    #[test]
    fn heap_keeps_best() {
        let mut h = TopK::new(3);
        for (i, s) in [0.5f32, f32::NAN, 0.9, 0.1, 0.9, 0.7].iter().enumerate() {
            h.offer(*s, i as u32);
        }
        assert_eq!(h.into_sorted(), vec![(0.9, 2), (0.9, 4), (0.7, 5)]);
    }
}
