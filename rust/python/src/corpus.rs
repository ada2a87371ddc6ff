//! Bindings of `bytepair_core::shards`: corpus to token shards, corpus token counts and the
//! per-file document counts a cluster job plans with. The Python layer (`bytepair/corpus.py`)
//! expands inputs, keeps the manifest and shows progress.
//!
//! The work runs detached from the interpreter; between batches it re-attaches briefly to call
//! the optional Python callback and `check_signals`, so Ctrl-C stops it between batches (with
//! only complete shards left on disk) and raises `KeyboardInterrupt`.
use std::path::PathBuf;
use std::sync::Mutex;

use bytepair_core::input::OnError;
use bytepair_core::shards::{self, CorpusOptions, EncodeRange, Event, Summary};
use bytepair_core::Error;
use pyo3::prelude::*;
use pyo3::types::PyDict;

use crate::encoding::PyCoreBpe;
use crate::errors::to_py;

/// Calls the Python callback (if any) and checks for signals; keeps the first Python error.
struct Events<'a> {
    callback: Option<&'a Py<PyAny>>,
    error: &'a Mutex<Option<PyErr>>,
}

impl Events<'_> {
    fn send(&self, ev: Event) -> bytepair_core::Result<()> {
        let r = Python::attach(|py| -> PyResult<()> {
            if let Some(cb) = self.callback {
                match ev {
                    Event::Progress {
                        bytes_read,
                        total_bytes,
                        documents,
                        tokens,
                    } => {
                        cb.call1(py, ("progress", bytes_read, total_bytes, documents, tokens))?;
                    }
                    Event::Shard(s) => {
                        let name = s
                            .path
                            .file_name()
                            .map(|n| n.to_string_lossy().into_owned())
                            .unwrap_or_default();
                        cb.call1(py, ("shard", s.index, name, s.documents, s.tokens))?;
                    }
                }
            }
            py.check_signals()
        });
        r.map_err(|e| {
            self.error
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .get_or_insert(e);
            Error::Interrupted
        })
    }
}

/// Runs `f`, turning a panic (a bug) into an error instead of letting it reach Python.
fn no_panic<T>(f: impl FnOnce() -> bytepair_core::Result<T>) -> bytepair_core::Result<T> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).unwrap_or_else(|p| {
        let msg = p
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| p.downcast_ref::<String>().cloned())
            .unwrap_or_default();
        Err(Error::Value(format!(
            "internal error in bytepair (please report it): {msg}"
        )))
    })
}

fn convert(e: Error, kept: &Mutex<Option<PyErr>>) -> PyErr {
    match (e, kept.lock().unwrap_or_else(|p| p.into_inner()).take()) {
        (Error::Interrupted, Some(pe)) => pe,
        (e, _) => to_py(e),
    }
}

fn options(
    on_error: &str,
    field: &str,
    num_threads: Option<usize>,
    batch_bytes: usize,
) -> PyResult<CorpusOptions> {
    Ok(CorpusOptions {
        on_error: OnError::parse(on_error).map_err(to_py)?,
        field: field.to_string(),
        num_threads: num_threads.unwrap_or(0),
        batch_bytes,
        ..Default::default()
    })
}

/// Runs a corpus job with the interpreter detached: events go to `callback` (which also checks
/// for Ctrl-C), panics become errors, and a Python error raised by the callback wins over the
/// `Interrupted` it caused.
fn run_job(
    py: Python<'_>,
    callback: Option<&Py<PyAny>>,
    job: impl FnOnce(&mut dyn FnMut(Event) -> bytepair_core::Result<()>) -> bytepair_core::Result<Summary>
        + Send,
) -> PyResult<Summary> {
    let kept = Mutex::new(None);
    // Ctrl-C is also looked for within a batch (a document that cannot be cut, under a custom
    // pattern, may take seconds): only on the main thread, which alone runs signal handlers.
    let main = crate::errors::on_main_thread(py)?;
    py.detach(|| {
        let ev = Events {
            callback,
            error: &kept,
        };
        let poll = || {
            main && Python::attach(|py| match py.check_signals() {
                Ok(()) => false,
                Err(e) => {
                    *kept.lock().unwrap_or_else(|p| p.into_inner()) = Some(e);
                    true
                }
            })
        };
        let (r, hit) = bytepair_core::parallel::interrupt::with_poll(&poll, || {
            no_panic(|| job(&mut |e| ev.send(e)))
        });
        if hit {
            return Err(Error::Interrupted); // the handler's exception, kept above
        }
        r
    })
    .map_err(|e| convert(e, &kept))
}

fn summary_dict<'py>(py: Python<'py>, s: &Summary) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    d.set_item("documents", s.documents)?;
    d.set_item("tokens", s.tokens)?;
    d.set_item("skipped", s.skipped)?;
    d.set_item("errors", s.errors.clone())?;
    let shards: Vec<(u64, String, u64, u64)> = s
        .shards
        .iter()
        .map(|i| {
            let name = i
                .path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            (i.index, name, i.documents, i.tokens)
        })
        .collect();
    d.set_item("shards", shards)?;
    d.set_item("per_file", s.per_file.clone())?;
    Ok(d)
}

/// Encodes `files` (already expanded, in order) into `out/shard_NNNNN.npy`, `docs_per_shard`
/// documents a shard, each document followed by `eot`. Skips the first `skip_docs` documents,
/// stops after `max_docs`, numbers shards from `first_shard`. Returns a summary dict.
#[pyfunction]
#[pyo3(signature = (core, files, out, *, eot, docs_per_shard, skip_docs = 0, max_docs = None, first_shard = 0,
                    on_error = "fail", field = "text", num_threads = None, batch_bytes = 4 << 20, callback = None))]
fn _encode_shards<'py>(
    py: Python<'py>,
    core: &Bound<'py, PyCoreBpe>,
    files: Vec<PathBuf>,
    out: PathBuf,
    eot: u32,
    docs_per_shard: u64,
    skip_docs: u64,
    max_docs: Option<u64>,
    first_shard: u64,
    on_error: &str,
    field: &str,
    num_threads: Option<usize>,
    batch_bytes: usize,
    callback: Option<Py<PyAny>>,
) -> PyResult<Bound<'py, PyDict>> {
    let opts = options(on_error, field, num_threads, batch_bytes)?;
    let bpe = core.get().inner.clone();
    let range = EncodeRange {
        skip_docs,
        max_docs,
        first_shard,
    };
    let s = run_job(py, callback.as_ref(), |send| {
        shards::encode_to_shards(&bpe, files, &out, eot, docs_per_shard, range, &opts, send)
    })?;
    summary_dict(py, &s)
}

/// Counts the tokens (`encode_ordinary` lengths) of the documents of `files`, per file.
#[pyfunction]
#[pyo3(signature = (core, files, *, on_error = "fail", field = "text", num_threads = None, batch_bytes = 4 << 20,
                    callback = None))]
fn _count_tokens<'py>(
    py: Python<'py>,
    core: &Bound<'py, PyCoreBpe>,
    files: Vec<PathBuf>,
    on_error: &str,
    field: &str,
    num_threads: Option<usize>,
    batch_bytes: usize,
    callback: Option<Py<PyAny>>,
) -> PyResult<Bound<'py, PyDict>> {
    let opts = options(on_error, field, num_threads, batch_bytes)?;
    let bpe = core.get().inner.clone();
    let s = run_job(py, callback.as_ref(), |send| {
        shards::count_tokens(&bpe, files, &opts, send)
    })?;
    summary_dict(py, &s)
}

/// The number of documents in each file (the rules of `_encode_shards`); returns
/// `(per_file, skipped, errors)`.
#[pyfunction]
#[pyo3(signature = (files, *, on_error = "fail", field = "text"))]
fn _count_documents(
    py: Python<'_>,
    files: Vec<PathBuf>,
    on_error: &str,
    field: &str,
) -> PyResult<(Vec<u64>, u64, Vec<String>)> {
    let opts = options(on_error, field, Some(1), 4 << 20)?;
    py.detach(|| no_panic(|| shards::count_documents(files, &opts)))
        .map_err(to_py)
}

/// The `.npy` header bytes of a shard of `len` tokens (`dtype` "uint16" or "uint32").
#[pyfunction]
fn _npy_header(dtype: &str, len: u64) -> PyResult<Vec<u8>> {
    let d = match dtype {
        "uint16" => shards::Dtype::U16,
        "uint32" => shards::Dtype::U32,
        _ => {
            return Err(pyo3::exceptions::PyValueError::new_err(format!(
                "unknown dtype {dtype:?}"
            )))
        }
    };
    Ok(shards::npy_header(d, len).to_vec())
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(_encode_shards, m)?)?;
    m.add_function(wrap_pyfunction!(_count_tokens, m)?)?;
    m.add_function(wrap_pyfunction!(_count_documents, m)?)?;
    m.add_function(wrap_pyfunction!(_npy_header, m)?)?;
    Ok(())
}
