//! Bindings of the trainer: `WordCounts` (phase 1) and `_train_merges` (phase 2). The Python
//! layer (`bytepair/train.py`) dispatches inputs, shows progress and builds the `Encoding`.
//!
//! Long calls run detached from the interpreter. Between native chunks they re-attach briefly
//! to report progress to an optional Python callback and to run `check_signals`, so Ctrl-C
//! stops the work with `KeyboardInterrupt`.
use std::cell::RefCell;
use std::sync::{Mutex, MutexGuard, TryLockError};

use bytepair_core::input::{self, InputOptions, OnError, Reader};
use bytepair_core::train::{self, MergeOptions, Progress, WordCounts};
use bytepair_core::Error;
use pyo3::exceptions::{PyKeyboardInterrupt, PyRuntimeError, PyTypeError};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyString};

use crate::errors::to_py;

/// Reports progress to Python and checks for Ctrl-C. The first Python error is kept, and the
/// core sees `Error::Interrupted`, which stops it.
struct Reporter {
    callback: Option<Py<PyAny>>,
    error: RefCell<Option<PyErr>>,
    /// For the tests: with `_BYTEPAIR_TEST_MERGE_MARKS` set, each merge progress report is also
    /// written to stderr (`merge <done> <total>`) from Rust, so that a test can see the merge
    /// loop run without a Python callback (any Python call would run signal handlers itself).
    marks: bool,
}

impl Reporter {
    fn new(callback: Option<Py<PyAny>>) -> Self {
        Reporter {
            callback,
            error: RefCell::new(None),
            marks: std::env::var_os("_BYTEPAIR_TEST_MERGE_MARKS").is_some(),
        }
    }

    fn report_attached(&self, py: Python<'_>, p: Progress) -> PyResult<()> {
        if let Some(cb) = &self.callback {
            match p {
                Progress::Read {
                    bytes,
                    total,
                    documents,
                } => cb.call1(py, ("read", bytes, total, documents))?,
                Progress::Merge { done, total } => {
                    cb.call1(py, ("merge", done, total, py.None()))?
                }
            };
        }
        py.check_signals()
    }

    fn report(&self, p: Progress) -> bytepair_core::Result<()> {
        if let (true, Progress::Merge { done, total }) = (self.marks, p) {
            eprintln!("merge {done} {total}");
        }
        Python::attach(|py| self.report_attached(py, p)).map_err(|e| {
            self.error.borrow_mut().get_or_insert(e);
            Error::Interrupted
        })
    }

    /// The Python error behind an `Interrupted`, or the converted core error.
    fn convert(&self, e: Error) -> PyErr {
        match (e, self.error.borrow_mut().take()) {
            (Error::Interrupted, Some(pe)) => pe,
            (e, _) => to_py(e),
        }
    }
}

/// The Python error raised by an earlier report, if any.
fn take_err(r: &Reporter) -> PyResult<()> {
    match r.error.borrow_mut().take() {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// Word counts of a corpus: the distinct pieces of its text under one split pattern, with
/// 64-bit counts. Use `bytepair.WordCounts`, which adds input handling on top.
#[pyclass(module = "bytepair._native", name = "WordCounts", subclass, frozen)]
pub struct PyWordCounts {
    inner: Mutex<WordCounts>,
}

impl PyWordCounts {
    /// The counts, or `RuntimeError` while another thread uses them (waiting for the lock while
    /// attached could deadlock with a thread that reports progress).
    fn lock(&self) -> PyResult<MutexGuard<'_, WordCounts>> {
        match self.inner.try_lock() {
            Ok(g) => Ok(g),
            Err(TryLockError::Poisoned(e)) => Ok(e.into_inner()),
            Err(TryLockError::WouldBlock) => Err(PyRuntimeError::new_err(
                "this WordCounts is in use by another thread",
            )),
        }
    }
}

fn word_bytes<'a>(w: &'a Bound<'_, PyAny>) -> PyResult<std::borrow::Cow<'a, [u8]>> {
    if let Ok(b) = w.cast::<PyBytes>() {
        return Ok(std::borrow::Cow::Owned(b.as_bytes().to_vec()));
    }
    if let Ok(s) = w.cast::<PyString>() {
        return Ok(match s.to_cow() {
            Ok(c) => std::borrow::Cow::Owned(c.into_owned().into_bytes()),
            // Surrogates (not UTF-8): tiktoken's rule, as the encoder applies it, so that training
            // counts what encoding will see: a pair becomes its code point, a lone one U+FFFD.
            Err(_) => {
                let fixed = s
                    .call_method1("encode", ("utf-16", "surrogatepass"))?
                    .call_method1("decode", ("utf-16", "replace"))?;
                std::borrow::Cow::Owned(
                    fixed
                        .cast::<PyString>()?
                        .to_cow()?
                        .into_owned()
                        .into_bytes(),
                )
            }
        });
    }
    Err(PyTypeError::new_err(format!(
        "expected str or bytes, got {}",
        w.get_type().name()?
    )))
}

#[pymethods]
impl PyWordCounts {
    /// Empty counts for `pattern` (a built-in encoding name or a regex) and special tokens
    /// (removed from the text before splitting).
    #[new]
    #[pyo3(signature = (*_args, pattern = "cl100k_base", special_tokens = None, **_kwargs))]
    fn new(
        _args: &Bound<'_, pyo3::types::PyTuple>,
        pattern: &str,
        special_tokens: Option<Vec<String>>,
        _kwargs: Option<&Bound<'_, pyo3::types::PyDict>>,
    ) -> PyResult<Self> {
        let wc = WordCounts::new(
            train::resolve_pattern(pattern).map_err(to_py)?,
            special_tokens.unwrap_or_default(),
        )
        .map_err(to_py)?;
        Ok(PyWordCounts {
            inner: Mutex::new(wc),
        })
    }

    /// The split pattern (a regex).
    #[getter]
    fn pattern(&self) -> PyResult<String> {
        Ok(self.lock()?.pattern().to_string())
    }

    /// The special tokens removed before counting.
    #[getter]
    fn special_tokens(&self) -> PyResult<Vec<String>> {
        Ok(self.lock()?.specials().to_vec())
    }

    /// Sets the counting options: threads, spill limit and directory.
    #[pyo3(signature = (*, num_threads = None, max_memory = None, spill_dir = None))]
    fn _configure(
        &self,
        num_threads: Option<usize>,
        max_memory: Option<usize>,
        spill_dir: Option<String>,
    ) -> PyResult<()> {
        let mut g = self.lock()?;
        g.options.num_threads = num_threads.unwrap_or(0);
        g.options.max_memory = max_memory;
        g.options.spill_dir = spill_dir.map(Into::into);
        Ok(())
    }

    /// Counts documents (str or bytes) from a Python iterable, in batches of about
    /// `batch_bytes`, on worker threads while Python produces the next batch.
    #[pyo3(signature = (iterable, *, batch_bytes = 4 << 20, callback = None))]
    fn _count_iter(
        &self,
        py: Python<'_>,
        iterable: &Bound<'_, PyAny>,
        batch_bytes: usize,
        callback: Option<Py<PyAny>>,
    ) -> PyResult<()> {
        let reporter = Reporter::new(callback);
        let it = iterable.try_iter()?;
        let mut guard = self.lock()?;
        let wc: &mut WordCounts = &mut guard;
        let (mut bytes, mut docs) = (0u64, 0u64);
        // The waits run without the interpreter, so that other Python threads (and their signal
        // handlers) run meanwhile; `check_signals` looks for Ctrl-C between them.
        let wait = |f: &mut (dyn FnMut() + Send)| py.detach(f);
        // An error of the iterable (or a document of the wrong type) is raised once the documents
        // before it are counted, as `Counter.update` leaves them; Ctrl-C stops at once.
        let mut failed: Option<PyErr> = None;
        let produce = |feed: &mut bytepair_core::parallel::Feed<'_, Vec<Vec<u8>>, PyErr>| {
            let mut it = it;
            loop {
                let mut batch: Vec<Vec<u8>> = Vec::new();
                let mut size = 0;
                while size < batch_bytes && failed.is_none() {
                    let Some(doc) = it.next() else { break };
                    match doc.and_then(|d| Ok(word_bytes(&d)?.into_owned())) {
                        Ok(b) => {
                            size += b.len();
                            batch.push(b);
                        }
                        Err(e) if e.is_instance_of::<PyKeyboardInterrupt>(py) => return Err(e),
                        Err(e) => failed = Some(e),
                    }
                    if batch.len().is_multiple_of(1024) {
                        py.check_signals()?;
                    }
                }
                if batch.is_empty() {
                    return Ok(());
                }
                bytes += size as u64;
                docs += batch.len() as u64;
                if !feed.send(batch)? {
                    return Ok(()); // the counter failed: its error is returned
                }
                let read = Progress::Read {
                    bytes,
                    total: None,
                    documents: docs,
                };
                reporter.report_attached(py, read)?;
                if failed.is_some() {
                    return Ok(());
                }
            }
        };
        let counted = bytepair_core::parallel::pipeline(
            |rx| {
                for batch in rx {
                    wc.count_documents(&batch)?;
                }
                Ok(())
            },
            produce,
            &mut || py.check_signals(),
            &wait,
        )?;
        counted.map_err(to_py)?;
        failed.map_or(Ok(()), Err)
    }

    /// Counts files, directories and globs, read in Rust (see `bytepair_core::input`).
    /// Returns the skipped errors under `on_error="skip"`.
    #[pyo3(signature = (paths, *, on_error = "fail", field = "text", callback = None))]
    fn _count_files(
        &self,
        py: Python<'_>,
        paths: Vec<std::path::PathBuf>,
        on_error: &str,
        field: &str,
        callback: Option<Py<PyAny>>,
    ) -> PyResult<(u64, Vec<String>)> {
        let on_error = OnError::parse(on_error).map_err(to_py)?;
        let reporter = Reporter::new(callback);
        let mut guard = self.lock()?;
        let block_size = guard.splitter().can_cut().then_some(train::BATCH_BYTES);
        let opts = InputOptions {
            on_error,
            field: field.to_string(),
            block_size,
        };
        let files = py.detach(|| input::expand(&paths)).map_err(to_py)?;
        let reader = Reader::new(files, opts);
        let stats = reader.stats();
        let wc: &mut WordCounts = &mut guard;
        // The reporter holds Python objects; it is only used on this thread (`report` attaches).
        let rep = SendPtr(&reporter);
        py.detach(move || {
            let rep = rep;
            train::count_reader(wc, reader, &mut |p| unsafe { &*rep.0 }.report(p))
        })
        .map_err(|e| reporter.convert(e))?;
        take_err(&reporter)?;
        Ok((
            stats.skipped.load(std::sync::atomic::Ordering::Relaxed),
            stats.errors(),
        ))
    }

    /// Adds `count` occurrences of one word (str or bytes).
    fn _add(&self, word: &Bound<'_, PyAny>, count: u64) -> PyResult<()> {
        let w = word_bytes(word)?;
        self.lock()?.add(&w, count).map_err(to_py)
    }

    /// Adds the counts of another `WordCounts` (same pattern and special tokens).
    fn _merge(&self, other: &Bound<'_, PyWordCounts>) -> PyResult<()> {
        let o = other.get();
        if std::ptr::eq(o, self) {
            let mut copy = self.lock()?.try_clone().map_err(to_py)?;
            return self.lock()?.merge(&mut copy).map_err(to_py);
        }
        let mut a = self.lock()?;
        let mut b = o.lock()?;
        a.merge(&mut b).map_err(to_py)
    }

    /// Replaces the contents with a copy of `other`'s.
    fn _assign(&self, other: &Bound<'_, PyWordCounts>) -> PyResult<()> {
        let o = other.get();
        if std::ptr::eq(o, self) {
            return Ok(());
        }
        let c = o.lock()?.try_clone().map_err(to_py)?;
        *self.lock()? = c;
        Ok(())
    }

    /// The number of distinct words.
    fn __len__(&self, py: Python<'_>) -> PyResult<usize> {
        let mut g = self.lock()?;
        let wc: &mut WordCounts = &mut g;
        py.detach(|| wc.sorted().map(|s| s.len())).map_err(to_py)
    }

    /// The count of one word (0 if absent).
    fn __getitem__(&self, word: &Bound<'_, PyAny>) -> PyResult<u64> {
        let w = word_bytes(word)?;
        let mut g = self.lock()?;
        Ok(g.sorted().map_err(to_py)?.get(&w))
    }

    fn __contains__(&self, word: &Bound<'_, PyAny>) -> PyResult<bool> {
        Ok(self.__getitem__(word)? > 0)
    }

    /// The sum of all counts (the number of pieces counted).
    fn total(&self) -> PyResult<u128> {
        Ok(self.lock()?.sorted().map_err(to_py)?.total())
    }

    /// The `n` most common words (all if `n` is None) as `(bytes, count)`, most common first,
    /// ties in byte order. As in `collections.Counter`, a negative `n` gives none.
    #[pyo3(signature = (n = None))]
    fn most_common<'py>(
        &self,
        py: Python<'py>,
        n: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Vec<(Bound<'py, PyBytes>, u64)>> {
        let n = match n {
            None => None,
            Some(o) => match o.extract::<i64>() {
                Ok(v) => Some(v.max(0) as usize),
                // An int beyond 64 bits: all words, or none.
                Err(e) if e.is_instance_of::<pyo3::exceptions::PyOverflowError>(py) => {
                    (!o.gt(0)?).then_some(0)
                }
                Err(e) => return Err(e),
            },
        };
        let mut g = self.lock()?;
        let s = g.sorted().map_err(to_py)?;
        let mut idx: Vec<u32> = (0..s.len() as u32).collect();
        let key = |i: &u32| (std::cmp::Reverse(s.count(*i as usize)), *i);
        let n = n.unwrap_or(idx.len()).min(idx.len());
        if n < idx.len() && n > 0 {
            idx.select_nth_unstable_by_key(n - 1, key);
        }
        idx.truncate(n);
        idx.sort_unstable_by_key(key);
        Ok(idx
            .into_iter()
            .map(|i| (PyBytes::new(py, s.word(i as usize)), s.count(i as usize)))
            .collect())
    }

    /// All `(bytes, count)` pairs, in byte order of the words.
    fn items<'py>(&self, py: Python<'py>) -> PyResult<Vec<(Bound<'py, PyBytes>, u64)>> {
        let mut g = self.lock()?;
        let s = g.sorted().map_err(to_py)?;
        Ok(s.iter().map(|(w, c)| (PyBytes::new(py, w), c)).collect())
    }

    /// The compact binary form (pattern, special tokens, prefix-coded sorted words).
    fn to_bytes<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyBytes>> {
        let mut g = self.lock()?;
        let wc: &mut WordCounts = &mut g;
        let b = py.detach(|| wc.to_bytes()).map_err(to_py)?;
        Ok(PyBytes::new(py, &b))
    }

    /// Replaces the contents with those of a blob from `to_bytes`.
    fn _load_bytes(&self, py: Python<'_>, data: &[u8]) -> PyResult<()> {
        let wc = py.detach(|| WordCounts::from_bytes(data)).map_err(to_py)?;
        let mut g = self.lock()?;
        let opts = g.options.clone();
        *g = wc;
        g.options = opts;
        Ok(())
    }

    /// Whether two counts hold the same pattern, special tokens and counts.
    fn __eq__(&self, other: &Bound<'_, PyAny>) -> PyResult<bool> {
        let Ok(o) = other.cast::<PyWordCounts>() else {
            return Ok(false);
        };
        let o = o.get();
        if std::ptr::eq(o, self) {
            return Ok(true);
        }
        let mut a = self.lock()?;
        let mut b = o.lock()?;
        if a.pattern() != b.pattern() || a.specials() != b.specials() {
            return Ok(false);
        }
        let sa = a.sorted().map_err(to_py)?.clone();
        Ok(&sa == b.sorted().map_err(to_py)?)
    }
}

/// Merge pairs and the counts they had when chosen.
type MergeList = (Vec<(u32, u32)>, Vec<u64>);

struct SendPtr<T>(*const T);
unsafe impl<T> Send for SendPtr<T> {}

/// Learns merges from word counts. Returns `(pairs, counts)`: merge `i` joins `pairs[i]` into
/// token `256 + i`; `counts[i]` is how often the pair occurred when it was chosen. With
/// `consume`, the counts are emptied (their memory is freed before the merge loop).
#[pyfunction]
#[pyo3(signature = (counts, num_merges, *, min_frequency = 1, max_token_length = None, num_threads = None, callback = None, consume = false))]
fn _train_merges(
    py: Python<'_>,
    counts: &Bound<'_, PyWordCounts>,
    num_merges: usize,
    min_frequency: u64,
    max_token_length: Option<usize>,
    num_threads: Option<usize>,
    callback: Option<Py<PyAny>>,
    consume: bool,
) -> PyResult<MergeList> {
    let reporter = Reporter::new(callback);
    let opts = MergeOptions {
        num_merges,
        min_frequency,
        max_token_length,
        num_threads: num_threads.unwrap_or(0),
    };
    let mut g = counts.get().lock()?;
    let wc: &mut WordCounts = &mut g;
    let rep = SendPtr(&reporter);
    let merges = py
        .detach(move || {
            let rep = rep;
            let report = &mut |p| unsafe { &*rep.0 }.report(p);
            if consume {
                train::learn_owned(wc.take_sorted()?, &opts, report)
            } else {
                train::learn(wc.sorted()?, &opts, report)
            }
        })
        .map_err(|e| reporter.convert(e))?;
    take_err(&reporter)?;
    Ok((merges.pairs, merges.counts))
}

/// Expands paths: files as given, directories recursively (sorted, hidden entries skipped),
/// globs sorted. Raises `FileNotFoundError` for a missing path or a glob without matches.
#[pyfunction]
fn _expand_paths(
    py: Python<'_>,
    paths: Vec<std::path::PathBuf>,
) -> PyResult<Vec<std::path::PathBuf>> {
    py.detach(|| input::expand(&paths)).map_err(to_py)
}

/// The regex of a built-in encoding name, or the pattern itself.
#[pyfunction]
fn _resolve_pattern(pattern: &str) -> PyResult<String> {
    Ok(train::resolve_pattern(pattern).map_err(to_py)?.to_string())
}

/// The number of merges for `vocab_size` with `n_specials` special tokens (ValueError if the
/// vocabulary is too small).
#[pyfunction]
fn _num_merges(vocab_size: usize, n_specials: usize) -> PyResult<usize> {
    train::num_merges(vocab_size, n_specials).map_err(to_py)
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<PyWordCounts>()?;
    m.add_function(wrap_pyfunction!(_train_merges, m)?)?;
    m.add_function(wrap_pyfunction!(_expand_paths, m)?)?;
    m.add_function(wrap_pyfunction!(_resolve_pattern, m)?)?;
    m.add_function(wrap_pyfunction!(_num_merges, m)?)?;
    Ok(())
}
