//! Bindings of `bytepair_core::embed`: borrow numpy buffers as slices (no copy), detach from the
//! interpreter, run the core, hand the result back as a numpy array (no copy).
//!
//! The Python layer (`bytepair/embed.py`) checks ranks and converts dtypes and layouts that the
//! kernels do not take; these functions still validate everything they receive and raise
//! `TypeError` / `ValueError` / `IndexError`, never panic.
//!
//! Ctrl-C: the long calls (gather, top-k, search, embed_texts) run with a poll installed on the
//! detached thread (`parallel::interrupt`) that re-attaches every 20 ms to run the signal
//! handlers; a `KeyboardInterrupt` (or whatever a handler raised) stops the work and is raised.
use std::path::PathBuf;
use std::sync::{Arc, RwLock};

use crate::encoding::PyCoreBpe;
use bytepair_core::embed::{self as core_embed, Bags, Index, KeyType, Metric, Pool, TopKResult};
use bytepair_core::CoreBpe;
use half::f16;
use numpy::ndarray::Array2;
use numpy::prelude::*;
use numpy::{PyArray1, PyArray2, PyReadonlyArray, PyReadonlyArray1, PyReadonlyArray2};
use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::PyBytes;

use crate::errors::{detached, to_py};
use crate::text::Text;

type Out2<'py> = Bound<'py, PyArray2<f32>>;

fn array2<T: numpy::Element>(
    py: Python<'_>,
    v: Vec<T>,
    rows: usize,
    cols: usize,
) -> PyResult<Bound<'_, PyArray2<T>>> {
    let a = Array2::from_shape_vec((rows, cols), v)
        .map_err(|e| PyValueError::new_err(e.to_string()))?;
    Ok(a.into_pyarray(py))
}

/// Borrows a C-contiguous array's buffer.
fn slice<'a, T: numpy::Element, D: numpy::ndarray::Dimension>(
    a: &'a PyReadonlyArray<'_, T, D>,
    what: &str,
) -> PyResult<&'a [T]> {
    a.as_slice()
        .map_err(|_| PyValueError::new_err(format!("{what} must be C-contiguous")))
}

fn borrow<'py, T: numpy::Element, D: numpy::ndarray::Dimension>(
    a: &Bound<'py, numpy::PyArray<T, D>>,
    what: &str,
) -> PyResult<PyReadonlyArray<'py, T, D>> {
    a.try_readonly()
        .map_err(|e| PyValueError::new_err(format!("{what}: {e}")))
}

fn topk_out(
    py: Python<'_>,
    r: TopKResult,
    nq: usize,
) -> PyResult<(Out2<'_>, Bound<'_, PyArray2<i64>>)> {
    let k = r.k;
    Ok((array2(py, r.scores, nq, k)?, array2(py, r.indices, nq, k)?))
}

/// Calls `$body` with `$t` bound to the table's slice (f32 or f16) and `$rows`, `$dim` to its shape.
macro_rules! with_table {
    ($table:expr, |$t:ident, $rows:ident, $dim:ident| $body:expr) => {{
        let table = $table;
        if let Ok(a) = table.cast::<PyArray2<f32>>() {
            let r = borrow(a, "table")?;
            let ($rows, $dim) = (r.shape()[0], r.shape()[1]);
            let $t: &[f32] = slice(&r, "table")?;
            $body
        } else if let Ok(a) = table.cast::<PyArray2<f16>>() {
            let r = borrow(a, "table")?;
            let ($rows, $dim) = (r.shape()[0], r.shape()[1]);
            let $t: &[f16] = slice(&r, "table")?;
            $body
        } else {
            Err(PyTypeError::new_err(
                "table must be a 2-D float32 or float16 numpy array",
            ))
        }
    }};
}

/// Calls `$body` with `$ids` bound to the id array's slice, for each supported integer dtype.
macro_rules! with_ids {
    ($ids:expr, |$s:ident| $body:expr) => {{
        let ids = $ids;
        with_ids!(@try ids, $s, $body, i64, i32, u32, u16, u8, i16, i8, u64)
    }};
    (@try $ids:ident, $s:ident, $body:expr, $t:ty $(, $rest:ty)*) => {
        if let Ok(a) = $ids.cast::<PyArray1<$t>>() {
            let r = borrow(a, "ids")?;
            let $s: &[$t] = slice(&r, "ids")?;
            $body
        } else {
            with_ids!(@try $ids, $s, $body $(, $rest)*)
        }
    };
    (@try $ids:ident, $s:ident, $body:expr) => {
        Err(PyTypeError::new_err("ids must be a 1-D numpy array of integers"))
    };
}

/// Gathers and pools table rows. `offsets` (bag starts) or `fixed = (bags, len)` gives the bags.
/// Returns `[B, D]` float32 (`[len(ids), D]` for pool "none").
#[pyfunction]
#[pyo3(signature = (table, ids, offsets, fixed, pool, weights, normalize))]
fn embed_gather<'py>(
    py: Python<'py>,
    table: &Bound<'py, PyAny>,
    ids: &Bound<'py, PyAny>,
    offsets: Option<PyReadonlyArray1<'py, i64>>,
    fixed: Option<(usize, usize)>,
    pool: &str,
    weights: Option<PyReadonlyArray1<'py, f32>>,
    normalize: bool,
) -> PyResult<Out2<'py>> {
    let pool = Pool::parse(pool).map_err(to_py)?;
    let off = match &offsets {
        Some(o) => Some(slice(o, "offsets")?),
        None => None,
    };
    let bags = match (off, fixed) {
        (Some(o), None) => Bags::Offsets(o),
        (None, Some((bags, len))) => Bags::Fixed { bags, len },
        _ => {
            return Err(PyValueError::new_err(
                "give exactly one of offsets and fixed",
            ))
        }
    };
    let w = match &weights {
        Some(w) => Some(slice(w, "weights")?),
        None => None,
    };
    with_table!(table, |t, rows, dim| {
        with_ids!(ids, |s| {
            let n = s.len();
            let out_rows = match (pool, bags) {
                (Pool::None, _) => n,
                (_, Bags::Offsets(o)) => o.len(),
                (_, Bags::Fixed { bags, .. }) => bags,
            };
            let v = detached(py, || {
                core_embed::gather(t, rows, dim, s, bags, pool, w, normalize)
            })?;
            array2(py, v, out_rows, dim)
        })
    })
}

/// Exact top-k: `(scores [B, k] float32 descending, indices [B, k] int64)`.
#[pyfunction]
#[pyo3(signature = (queries, keys, k, metric))]
fn embed_topk<'py>(
    py: Python<'py>,
    queries: PyReadonlyArray2<'py, f32>,
    keys: &Bound<'py, PyAny>,
    k: usize,
    metric: &str,
) -> PyResult<(Out2<'py>, Bound<'py, PyArray2<i64>>)> {
    let metric = Metric::parse(metric).map_err(to_py)?;
    let (nq, qd) = (queries.shape()[0], queries.shape()[1]);
    let q = slice(&queries, "queries")?;
    with_table!(keys, |kk, n, d| {
        if qd != d {
            return Err(PyValueError::new_err(format!(
                "queries have dimension {qd} but keys have {d}"
            )));
        }
        let r = detached(py, || core_embed::topk(q, kk, n, d, k, metric))?;
        topk_out(py, r, nq)
    })
}

/// A flat vector index (see `bytepair.embed.Index`).
///
/// The lock guards only which index is current: readers take a snapshot (an `Arc`) and work on
/// it without any lock, and writers change a copy when a snapshot is out (`Arc::make_mut`). Why:
/// a search re-attaches every 20 ms to look for Ctrl-C, and the Python code that runs then (a
/// signal handler, a finalizer) may use the index; a search holding a lock there would deadlock
/// with an `add` from that code, or with a `len` behind another thread's waiting `add`.
#[pyclass(frozen, name = "EmbedIndex", module = "bytepair._native")]
struct PyEmbedIndex {
    inner: RwLock<Arc<Index>>,
}

impl From<Index> for PyEmbedIndex {
    fn from(ix: Index) -> Self {
        PyEmbedIndex {
            inner: RwLock::new(Arc::new(ix)),
        }
    }
}

impl PyEmbedIndex {
    /// The current index. The lock is held for an `Arc` clone only, but taken without the
    /// interpreter all the same: a writer copying a large index holds it for a while.
    fn snapshot(&self, py: Python<'_>) -> Arc<Index> {
        py.detach(|| self.inner.read().unwrap_or_else(|e| e.into_inner()).clone())
    }
    /// Changes the index without the interpreter (a copy of it when a reader holds a snapshot),
    /// looking for Ctrl-C on the main thread while `f` runs (`f` must leave the index usable when
    /// it returns `Error::Interrupted`).
    fn update_interruptible<T: Send>(
        &self,
        py: Python<'_>,
        f: impl FnOnce(&mut Index) -> bytepair_core::Result<T> + Send,
    ) -> PyResult<T> {
        detached(py, || {
            let mut guard = self.inner.write().unwrap_or_else(|e| e.into_inner());
            f(Arc::make_mut(&mut guard))
        })
    }
    /// `f` of the current index.
    fn with_read<T: Send>(&self, py: Python<'_>, f: impl FnOnce(&Index) -> T + Send) -> T {
        f(&self.snapshot(py))
    }
}

#[pymethods]
impl PyEmbedIndex {
    /// An empty index of `dim`-dimensional keys; `sketch`: keep an int8 sketch of float keys.
    #[new]
    #[pyo3(signature = (dim, metric, dtype, sketch=true))]
    fn new(dim: usize, metric: &str, dtype: &str, sketch: bool) -> PyResult<Self> {
        let m = Metric::parse(metric).map_err(to_py)?;
        let t = KeyType::parse(dtype).map_err(to_py)?;
        let mut ix = Index::new(dim, m, t).map_err(to_py)?;
        ix.set_sketch(sketch).map_err(to_py)?;
        Ok(ix.into())
    }

    /// Whether searches scan an int8 sketch of the float keys first (same results, faster).
    #[getter]
    fn sketch(&self, py: Python<'_>) -> bool {
        self.with_read(py, Index::has_sketch)
    }
    #[setter]
    fn set_sketch(&self, py: Python<'_>, on: bool) -> PyResult<()> {
        self.update_interruptible(py, |ix| ix.set_sketch(on))
    }

    /// Appends keys `[n, dim]` float32.
    fn add(&self, py: Python<'_>, keys: PyReadonlyArray2<'_, f32>) -> PyResult<()> {
        let d = keys.shape()[1];
        let s = slice(&keys, "keys")?;
        self.update_interruptible(py, |ix| {
            if d != ix.dim() {
                return Err(bytepair_core::Error::Value(format!(
                    "keys have dimension {d} but the index has {}",
                    ix.dim()
                )));
            }
            ix.add(s)
        })
    }

    /// `(scores [B, k], indices [B, k])` for queries `[B, dim]` float32.
    fn search<'py>(
        &self,
        py: Python<'py>,
        queries: PyReadonlyArray2<'py, f32>,
        k: usize,
    ) -> PyResult<(Out2<'py>, Bound<'py, PyArray2<i64>>)> {
        let (nq, d) = (queries.shape()[0], queries.shape()[1]);
        let q = slice(&queries, "queries")?;
        let ix = self.snapshot(py);
        let r = detached(py, || {
            if d != ix.dim() {
                return Err(bytepair_core::Error::Value(format!(
                    "queries have dimension {d} but the index has {}",
                    ix.dim()
                )));
            }
            ix.search(q, k)
        })?;
        topk_out(py, r, nq)
    }

    fn __len__(&self, py: Python<'_>) -> usize {
        self.with_read(py, Index::len)
    }
    #[getter]
    fn dim(&self, py: Python<'_>) -> usize {
        self.with_read(py, Index::dim)
    }
    #[getter]
    fn metric(&self, py: Python<'_>) -> &'static str {
        self.with_read(py, |ix| ix.metric().name())
    }
    #[getter]
    fn dtype(&self, py: Python<'_>) -> &'static str {
        self.with_read(py, |ix| ix.dtype().name())
    }
    /// Bytes held by the stored keys and the sketch.
    #[getter]
    fn nbytes(&self, py: Python<'_>) -> usize {
        self.with_read(py, Index::nbytes)
    }

    /// Writes the index to `path`.
    fn save(&self, py: Python<'_>, path: PathBuf) -> PyResult<()> {
        let ix = self.snapshot(py);
        py.detach(|| ix.save(&path)).map_err(to_py)
    }

    /// The bytes `save` writes (for pickling).
    fn to_bytes<'py>(&self, py: Python<'py>) -> Bound<'py, PyBytes> {
        let ix = self.snapshot(py);
        let v = py.detach(|| ix.to_bytes());
        PyBytes::new(py, &v)
    }

    /// An index from the bytes of `to_bytes`.
    #[staticmethod]
    fn from_bytes(py: Python<'_>, data: &[u8]) -> PyResult<Self> {
        let ix = detached(py, || Index::from_bytes(data))?;
        Ok(ix.into())
    }

    /// Reads an index written by `save`.
    #[staticmethod]
    fn load(py: Python<'_>, path: PathBuf) -> PyResult<Self> {
        let ix = detached(py, || Index::load(&path))?;
        Ok(ix.into())
    }
}

/// The native encoder of an `Encoding` (or of its `_core_bpe`).
fn core_bpe(core: &Bound<'_, PyAny>) -> PyResult<Arc<CoreBpe>> {
    if let Ok(c) = core.cast::<PyCoreBpe>() {
        return Ok(c.get().inner.clone());
    }
    if let Ok(inner) = core.getattr("_core_bpe") {
        if let Ok(c) = inner.cast::<PyCoreBpe>() {
            return Ok(c.get().inner.clone());
        }
    }
    Err(PyTypeError::new_err(format!(
        "expected a bytepair Encoding, got {}",
        core.get_type().name()?
    )))
}

/// Tokenizes (ordinary tokens only), gathers, pools and normalises each text: `[len(texts), D]`.
#[pyfunction]
#[pyo3(signature = (core, table, texts, pool, normalize))]
fn embed_texts<'py>(
    py: Python<'py>,
    core: &Bound<'py, PyAny>,
    table: &Bound<'py, PyAny>,
    texts: Vec<Text>,
    pool: &str,
    normalize: bool,
) -> PyResult<Out2<'py>> {
    let bpe = core_bpe(core)?;
    let pool = Pool::parse(pool).map_err(to_py)?;
    let refs: Vec<&str> = texts.iter().map(|s| &**s).collect();
    with_table!(table, |t, rows, dim| {
        let v = detached(py, || {
            core_embed::embed_texts(&bpe, t, rows, dim, &refs, pool, normalize)
        })?;
        array2(py, v, refs.len(), dim)
    })
}

/// The SIMD level the kernels run at ("avx512+vnni", "avx512", "avx2" or "generic").
#[pyfunction]
fn embed_simd_level() -> &'static str {
    match core_embed::simd::level() {
        core_embed::simd::Level::Avx512 if core_embed::vnni_available() => "avx512+vnni",
        core_embed::simd::Level::Avx512 => "avx512",
        core_embed::simd::Level::Avx2 => "avx2",
        core_embed::simd::Level::Generic => "generic",
    }
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(embed_gather, m)?)?;
    m.add_function(wrap_pyfunction!(embed_topk, m)?)?;
    m.add_function(wrap_pyfunction!(embed_texts, m)?)?;
    m.add_function(wrap_pyfunction!(embed_simd_level, m)?)?;
    m.add_class::<PyEmbedIndex>()?;
    Ok(())
}
