//! A flat (exhaustive) vector index with f32, f16 or int8 storage.
//!
//! Why these layouts: a single-query search reads every key once and is bound by memory
//! bandwidth, so the bytes scanned per key decide its speed. f16 halves them and int8 quarters
//! them; both are converted to f32 in registers by the same microkernel that serves f32 (see
//! `topk`). f16 keeps about 11 bits, which moves cosine scores by ~1e-5 and is searched as is.
//! int8 (one scale per vector) moves scores by ~1e-3, enough to swap near neighbours, so its
//! search keeps a shortlist of `max(4k, k + 64)` by the int8 score and rescores it with a second
//! int8 level that quantises the residual: together about 14 bits, read only for the shortlist.
//! No f32 copy is kept, so the int8 index takes 2 bytes a value (plus 12 bytes a key) instead of 4.
//! Where the processor has AVX-512 VNNI, the int8 scan runs on integer dot products (`vnni`).
//!
//! Keys are normalised when added (cosine), so a search is a plain dot product.
use super::quant::{quantize_into, to_f16};
use super::simd::{self, Level};
use super::topk::{self, KeyFactor, TopK, TopKResult};
use super::vnni;
use super::Metric;
use crate::{Error, Result};
use half::f16;
use rayon::prelude::*;
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::Path;

const MAGIC: &[u8; 8] = b"BPEMBIX\0";
const VERSION: u32 = 1;

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
    },
}

/// An exhaustive index over `len` keys of dimension `dim`.
#[derive(Clone, Debug)]
pub struct Index {
    metric: Metric,
    dim: usize,
    len: usize,
    store: Store,
}

impl Index {
    /// An empty index.
    pub fn new(dim: usize, metric: Metric, dtype: KeyType) -> Result<Index> {
        if dim == 0 {
            return Err(Error::Value(
                "vectors must have at least one dimension".into(),
            ));
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
            },
        };
        Ok(Index {
            metric,
            dim,
            len: 0,
            store,
        })
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
    /// Bytes held by the stored keys.
    pub fn nbytes(&self) -> usize {
        match &self.store {
            Store::F32(v) => v.len() * 4,
            Store::F16(v) => v.len() * 2,
            Store::I8 { codes, res, .. } => codes.len() + res.len() + self.len * 12,
        }
    }

    /// Appends `keys` (row-major, `dim` wide): normalised for cosine, then stored in the index's
    /// dtype. Parallel over keys.
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
                grow(v, keys.len());
                v.extend_from_slice(keys);
                if metric == Metric::Cosine {
                    pool.install(|| {
                        v[at..]
                            .par_chunks_mut(d)
                            .for_each(|r| simd::normalize(lv, r))
                    });
                }
            }
            Store::F16(v) => {
                if metric == Metric::Dot {
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
                let at = v.len();
                grow(v, n * d);
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
            }
            Store::I8 {
                codes,
                scales,
                res,
                res_scales,
                sums,
            } => {
                let at = codes.len();
                grow(codes, n * d);
                grow(res, n * d);
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
            }
        }
        self.len += n;
        Ok(())
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
        let q = topk::prepare_queries(lv, queries, d, self.metric);
        let n = self.len;
        let lists = match &self.store {
            Store::F32(v) => topk::search(lv, &q, nq, v, n, d, k, KeyFactor::One),
            Store::F16(v) => topk::search(lv, &q, nq, v, n, d, k, KeyFactor::One),
            Store::I8 {
                codes,
                scales,
                res,
                res_scales,
                sums,
            } => {
                let short = (4 * k).max(k + 64).min(n);
                // Integer dot products where the processor has them: AVX-512 VNNI, or AVX2 (one
                // query keeps up with memory where converting every key byte to f32 does not, and
                // batches do a third of the work). They stay below 2^31 for d < 66,000
                // (255 * 127 * d).
                let kernel = if vnni && lv == Level::Avx512 && vnni::available() {
                    Some(vnni::IntKernel::Vnni)
                } else if lv == Level::Avx2 {
                    Some(vnni::IntKernel::Avx2)
                } else {
                    None
                };
                let cands = if let (Some(kernel), true) = (kernel, d < 66_000) {
                    let qc = match kernel {
                        vnni::IntKernel::Vnni => vnni::quantize_queries(&q, d),
                        vnni::IntKernel::Avx2 => vnni::quantize_queries7(&q, d),
                    };
                    topk::drive(nq, n, d, short, &|q0, _qn, r, heaps| {
                        vnni::scan(kernel, &qc, q0, codes, scales, sums, d, r, heaps)
                    })
                } else {
                    topk::search(lv, &q, nq, codes, n, d, short, KeyFactor::PerKey(scales))
                };
                // Rescore the shortlist with the f32 query against both int8 levels.
                let rescore = |(qi, c): (usize, Vec<(f32, u32)>)| {
                    let qr = &q[qi * d..(qi + 1) * d];
                    let mut h = TopK::new(k);
                    for (_, i) in c {
                        let i = i as usize;
                        let (s, rs) = (scales[i], res_scales[i]);
                        let mut fine = s * topk::dot(lv, qr, &codes[i * d..(i + 1) * d]);
                        if rs != 0.0 {
                            fine += rs * topk::dot(lv, qr, &res[i * d..(i + 1) * d]);
                        }
                        h.push(fine, i as u32);
                    }
                    h.into_sorted()
                };
                if nq * short * d >= 1 << 18 {
                    crate::parallel::pool(0)
                        .install(|| cands.into_par_iter().enumerate().map(rescore).collect())
                } else {
                    cands.into_iter().enumerate().map(rescore).collect()
                }
            }
        };
        Ok(TopKResult::from_lists(lists, k))
    }

    /// Writes the index to `path` (little-endian binary; see [`Index::load`]).
    pub fn save(&self, path: &Path) -> Result<()> {
        let mut w = BufWriter::with_capacity(1 << 20, std::fs::File::create(path)?);
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
        w.write_all(&[metric, dtype, 0, 0])?;
        w.write_all(&(self.len as u64).to_le_bytes())?;
        w.write_all(&(self.dim as u64).to_le_bytes())?;
        match &self.store {
            Store::F32(v) => write_pod(&mut w, v)?,
            Store::F16(v) => write_pod(&mut w, v)?,
            Store::I8 {
                codes,
                scales,
                res,
                res_scales,
                ..
            } => {
                write_pod(&mut w, codes)?;
                write_pod(&mut w, scales)?;
                write_pod(&mut w, res)?;
                write_pod(&mut w, res_scales)?;
            }
        }
        w.flush()?;
        Ok(())
    }

    /// Reads an index written by [`Index::save`]. A file of another format, version or size is a
    /// `Value` error.
    pub fn load(path: &Path) -> Result<Index> {
        let file = std::fs::File::open(path)?;
        let size = file.metadata()?.len();
        let mut r = BufReader::with_capacity(1 << 20, file);
        let bad = |m: &str| {
            Error::Value(format!(
                "{}: not a bytepair index file ({m})",
                path.display()
            ))
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
        if dim == 0 || len > u32::MAX as u64 || Some(size) != payload.checked_add(32) {
            return Err(bad(&format!(
                "size {size} does not match {len} keys of dimension {dim}"
            )));
        }
        let (len, dim, nd) = (len as usize, dim as usize, nd as usize);
        let store = match head[13] {
            0 => Store::F32(read_pod(&mut r, nd)?),
            1 => Store::F16(read_pod(&mut r, nd)?),
            _ => {
                let codes: Vec<i8> = read_pod(&mut r, nd)?;
                Store::I8 {
                    sums: vnni::code_sums(&codes, dim),
                    codes,
                    scales: read_pod(&mut r, len)?,
                    res: read_pod(&mut r, nd)?,
                    res_scales: read_pod(&mut r, len)?,
                }
            }
        };
        Ok(Index {
            metric,
            dim,
            len,
            store,
        })
    }
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
            assert_eq!((a.scores, a.indices), (b.scores, b.indices));
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
