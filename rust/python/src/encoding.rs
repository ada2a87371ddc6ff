//! `CoreBPE`: the native half of `bytepair.Encoding`.
use crate::errors::{run, to_py, DETACH_BYTES, POLL_BYTES};
use crate::ints::IntCache;
use crate::text::Text;
use crate::tokens::Tokens;
use bytepair_core::pretokenize::Pretokenizer;
use bytepair_core::{parallel, CoreBpe, Error, Rank, SpecialSet, Vocab};
use numpy::{IntoPyArray, PyArray1};
use pyo3::exceptions::{PyKeyError, PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::pybacked::PyBackedBytes;
use pyo3::types::{PyBytes, PyDict, PyList, PyString};
use std::sync::{Arc, OnceLock};

/// The native encoder behind `bytepair.Encoding`. Immutable and safe to share across threads.
#[pyclass(frozen, name = "CoreBPE", module = "bytepair._native")]
pub struct PyCoreBpe {
    pub inner: Arc<CoreBpe>,
    ints: IntCache,
    /// One shared `bytes` object per token id (made on first use), for `decode_tokens_bytes`
    /// of long lists; the slots are allocated on the first such call.
    token_bytes: OnceLock<Box<[OnceLock<Py<PyBytes>>]>>,
}

/// Lists shorter than this get fresh `bytes` objects, so that short calls never allocate the
/// shared ones' slots (3 MB for o200k).
const SHARED_BYTES_FROM: usize = 1 << 12;
/// The most ids with a shared `bytes` object (32 MB of slots); the others get fresh ones.
const MAX_SHARED_BYTES: usize = 1 << 21;

impl PyCoreBpe {
    pub fn wrap(core: CoreBpe) -> Self {
        let n = core.max_token().map_or(0, |m| m as usize + 1);
        PyCoreBpe {
            inner: Arc::new(core),
            ints: IntCache::new(n),
            token_bytes: OnceLock::new(),
        }
    }

    /// The work of encoding `bytes` bytes, in bytes of built-in-pattern text (what [`run`]'s
    /// thresholds are for): a regex pattern may backtrack, so its texts are polled for Ctrl-C
    /// from a few KB on.
    fn cost(&self, bytes: usize) -> usize {
        if self.inner.pretokenizer().is_native() {
            bytes
        } else {
            bytes.saturating_mul(128)
        }
    }

    fn shared_bytes(&self) -> &[OnceLock<Py<PyBytes>>] {
        self.token_bytes.get_or_init(|| {
            let n = self.inner.max_token().map_or(0, |m| m as usize + 1);
            (0..n.min(MAX_SHARED_BYTES))
                .map(|_| OnceLock::new())
                .collect()
        })
    }
}

/// `"all"`, or an iterable of special-token names (names that are not special tokens are
/// ignored; an item that is not a `str` is a TypeError, as in tiktoken).
fn special_set(core: &CoreBpe, arg: &Bound<'_, PyAny>) -> PyResult<SpecialSet> {
    if let Ok(s) = arg.cast::<PyString>() {
        if s.to_cow()? == "all" {
            return Ok(SpecialSet::All);
        }
        return Err(PyTypeError::new_err(
            "special-token sets must be \"all\" or a collection of str",
        ));
    }
    if arg.is_none() {
        return Ok(SpecialSet::None);
    }
    let mut names = Vec::new();
    for item in arg.try_iter()? {
        let item = item?;
        let Ok(s) = item.cast::<PyString>() else {
            return Err(PyTypeError::new_err(format!(
                "special tokens are str, not {}",
                item.get_type().name()?
            )));
        };
        names.push(s.to_cow()?.into_owned());
    }
    Ok(core.special_set(names.iter().map(String::as_str)))
}

/// Both special-token arguments of a call.
fn special_sets(
    core: &CoreBpe,
    allowed: &Bound<'_, PyAny>,
    disallowed: &Bound<'_, PyAny>,
) -> PyResult<(SpecialSet, SpecialSet)> {
    Ok((special_set(core, allowed)?, special_set(core, disallowed)?))
}

/// [`special_sets`] with the disallowed set optional (none refused when left out).
fn special_sets_opt(
    core: &CoreBpe,
    allowed: &Bound<'_, PyAny>,
    disallowed: Option<&Bound<'_, PyAny>>,
) -> PyResult<(SpecialSet, SpecialSet)> {
    let d = match disallowed {
        Some(d) => special_set(core, d)?,
        None => SpecialSet::None,
    };
    Ok((special_set(core, allowed)?, d))
}

/// Parallel map over texts in chunks, checking for Ctrl-C between chunks.
fn batch<T: Send>(
    py: Python<'_>,
    texts: &[Text],
    num_threads: usize,
    f: impl Fn(&str) -> bytepair_core::Result<T> + Sync,
) -> PyResult<Vec<T>> {
    let pool = parallel::pool_for(num_threads);
    let mut out = Vec::with_capacity(texts.len());
    let mut i = 0;
    while i < texts.len() {
        // Chunks of ~8 MB of text (at least one document) between signal checks.
        let (mut j, mut bytes) = (i, 0usize);
        while j < texts.len() && (j == i || bytes < (8 << 20)) {
            bytes += texts[j].len();
            j += 1;
        }
        let chunk = &texts[i..j];
        // A chunk of one long document runs on this thread, where Ctrl-C stops it.
        let part: Vec<T> = run(py, bytes.max(DETACH_BYTES), || {
            parallel::map_ordered(&pool, chunk, |t| f(t))
        })?;
        out.extend(part);
        py.check_signals()?;
        i = j;
    }
    Ok(out)
}

/// How long the caller of a batch waits for a pool thread between looks for Ctrl-C.
const WAIT_SLICE: std::time::Duration = std::time::Duration::from_millis(10);
/// How long it yields (rather than sleeps) while waiting: most waits are shorter.
const SPIN_WAIT: std::time::Duration = std::time::Duration::from_millis(1);

/// Token lists for a batch, with list building overlapped with encoding.
///
/// Why: turning token ids into Python lists needs the interpreter, so it is serial; done after
/// the parallel part it caps a 2-thread batch well below 2x. Here pool threads encode documents
/// while the calling thread, holding the interpreter only while it builds lists, turns finished
/// documents into lists in order and encodes unclaimed documents (detached) whenever the next
/// one in order is not ready. The error of the earliest failing document is raised; Ctrl-C is
/// checked between documents and, inside a long document the caller encodes, about every 20 ms;
/// the pool threads then stop within their current document.
fn batch_lists<'py>(
    py: Python<'py>,
    ints: &IntCache,
    texts: &[Text],
    num_threads: usize,
    f: impl Fn(&str) -> bytepair_core::Result<Vec<Rank>> + Sync,
) -> PyResult<Bound<'py, PyList>> {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    let n = texts.len();
    let out = PyList::empty(py);
    let pool = parallel::pool_for(num_threads);
    let threads = pool.current_num_threads().min(n);
    if threads <= 1 {
        for t in texts {
            let v = run(py, t.len(), || f(t))?;
            out.append(ints.list(py, &v)?)?;
            py.check_signals()?;
        }
        return Ok(out);
    }
    let next = AtomicUsize::new(0);
    let stop = AtomicBool::new(false);
    let slots: Vec<OnceLock<bytepair_core::Result<Vec<Rank>>>> =
        (0..n).map(|_| OnceLock::new()).collect();
    // A panic must not leave the calling thread waiting for a slot that is never filled.
    let encode = |i: usize| {
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(&texts[i])))
            .unwrap_or_else(|_| Err(Error::Value("internal error while encoding".into())));
        let _ = slots[i].set(r);
    };
    // A pool thread stops a long document soon after the caller gives up (Ctrl-C, an error).
    let stopped = || stop.load(Ordering::Relaxed);
    let helper = || {
        while !stop.load(Ordering::Relaxed) {
            let i = next.fetch_add(1, Ordering::Relaxed);
            if i >= n {
                break;
            }
            let _ = parallel::interrupt::with_poll(&stopped, || encode(i));
        }
    };
    // Pool threads that wake up after the caller is done do nothing, and the caller does not wait
    // for them (`with_helpers_then`): the caller encodes whatever is unclaimed itself.
    parallel::with_helpers_then(&pool, threads - 1, &helper, || {
        // Ok(None): done; Ok(Some(i)): document i failed (its error is taken out below).
        let result = (|| -> PyResult<Option<usize>> {
            for i in 0..n {
                let waited = std::time::Instant::now();
                let r = loop {
                    if let Some(r) = slots[i].get() {
                        break r;
                    }
                    let j = next.fetch_add(1, Ordering::Relaxed);
                    if j < n {
                        // Ctrl-C stops a long document here too.
                        run(py, texts[j].len().max(DETACH_BYTES), || {
                            encode(j);
                            Ok(())
                        })?;
                    } else {
                        // Every document is taken: wait for document i's thread, detached so
                        // that other Python threads run meanwhile, and back every 10 ms to look
                        // for Ctrl-C (a long document may take seconds). Yielding for the first
                        // millisecond, then sleeping, so a long wait does not hold a core.
                        let done = py.detach(|| {
                            let until = std::time::Instant::now() + WAIT_SLICE;
                            while slots[i].get().is_none() {
                                if std::time::Instant::now() >= until {
                                    return false;
                                }
                                if waited.elapsed() < SPIN_WAIT {
                                    std::thread::yield_now();
                                } else {
                                    std::thread::sleep(std::time::Duration::from_micros(50));
                                }
                            }
                            true
                        });
                        if !done {
                            py.check_signals()?;
                        }
                    }
                };
                let Ok(v) = r else { return Ok(Some(i)) };
                out.append(ints.list(py, v)?)?;
                py.check_signals()?;
            }
            Ok(None)
        })();
        stop.store(true, Ordering::Relaxed);
        result
    })?
    .map_or(Ok(out), |i| {
        let e = slots.into_iter().nth(i).and_then(OnceLock::into_inner);
        Err(to_py(e.expect("a failed document").expect_err("it failed")))
    })
}

/// A mergeable rank's key: a `bytes` object, or the bytes of another sequence of ints.
enum Key {
    Bytes(PyBackedBytes),
    Owned(Vec<u8>),
}

impl AsRef<[u8]> for Key {
    fn as_ref(&self) -> &[u8] {
        match self {
            Key::Bytes(b) => b,
            Key::Owned(v) => v,
        }
    }
}

#[pymethods]
impl PyCoreBpe {
    /// Builds an encoder from mergeable ranks (dict[bytes, int]), special tokens
    /// (dict[str, int]) and a split pattern, under tiktoken's argument names.
    #[new]
    fn new(
        encoder: &Bound<'_, PyDict>,
        special_tokens_encoder: &Bound<'_, PyDict>,
        pattern: &str,
    ) -> PyResult<Self> {
        let mut entries: Vec<(Key, Rank)> = Vec::with_capacity(encoder.len());
        for (k, v) in encoder.iter() {
            // bytes, or (as tiktoken takes them) any other sequence of ints from 0 to 255
            let k = match k.extract::<PyBackedBytes>() {
                Ok(b) => Key::Bytes(b),
                Err(_) if !k.is_instance_of::<pyo3::types::PyString>() => Key::Owned(
                    k.extract::<Vec<u8>>()
                        .map_err(|_| PyTypeError::new_err("mergeable_ranks keys must be bytes"))?,
                ),
                Err(_) => return Err(PyTypeError::new_err("mergeable_ranks keys must be bytes")),
            };
            let v: Rank = v.extract()?;
            entries.push((k, v));
        }
        let vocab =
            Vocab::from_entries(entries.iter().map(|(k, v)| (k.as_ref(), *v))).map_err(to_py)?;
        let specials = extract_specials(special_tokens_encoder)?;
        let core = CoreBpe::new(vocab, pattern, specials).map_err(to_py)?;
        Ok(PyCoreBpe::wrap(core))
    }

    /// An encoder over a rank file compiled into the library (no file or network access).
    #[staticmethod]
    fn builtin(
        py: Python<'_>,
        rank_file: &str,
        special_tokens: &Bound<'_, PyDict>,
        pat_str: &str,
    ) -> PyResult<Self> {
        let specials = extract_specials(special_tokens)?;
        let name = rank_file.to_owned();
        let pat = pat_str.to_owned();
        let core = py
            .detach(|| {
                let vocab = bytepair_core::vocab::bundled(&name)
                    .ok_or_else(|| Error::Value(format!("no bundled rank file named {name:?}")))?;
                CoreBpe::new(vocab, &pat, specials)
            })
            .map_err(to_py)?;
        Ok(PyCoreBpe::wrap(core))
    }

    /// Parses a `.tiktoken` rank file's bytes into an encoder.
    #[staticmethod]
    #[pyo3(signature = (data, special_tokens, pat_str, source=None))]
    fn from_tiktoken_bytes(
        py: Python<'_>,
        data: PyBackedBytes,
        special_tokens: &Bound<'_, PyDict>,
        pat_str: &str,
        source: Option<String>,
    ) -> PyResult<Self> {
        let specials = extract_specials(special_tokens)?;
        let pat = pat_str.to_owned();
        let core = py
            .detach(|| {
                let vocab = bytepair_core::vocab::parse_tiktoken(&data, source.as_deref())?;
                CoreBpe::new(vocab, &pat, specials)
            })
            .map_err(to_py)?;
        Ok(PyCoreBpe::wrap(core))
    }

    /// The split pattern.
    #[getter]
    fn pattern(&self) -> &str {
        self.inner.pattern()
    }

    /// True when the pattern runs on a hand-written lexer rather than the regex engine.
    #[getter]
    fn native_pretokenizer(&self) -> bool {
        self.inner.pretokenizer().is_native()
    }

    /// Number of mergeable tokens.
    #[getter]
    fn n_mergeable(&self) -> usize {
        self.inner.vocab().len()
    }

    /// Largest mergeable rank, or None.
    #[getter]
    fn max_mergeable_rank(&self) -> Option<Rank> {
        self.inner.vocab().max_rank()
    }

    /// The mergeable ranks as a new dict[bytes, int].
    fn mergeable_ranks<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let d = PyDict::new(py);
        for (b, r) in self.inner.vocab().iter() {
            d.set_item(PyBytes::new(py, b), r)?;
        }
        Ok(d)
    }

    /// The rank file in `.tiktoken` format (ordered by rank).
    fn to_tiktoken_bytes<'py>(&self, py: Python<'py>) -> Bound<'py, PyBytes> {
        let data = py.detach(|| self.inner.vocab().to_tiktoken());
        PyBytes::new(py, &data)
    }

    /// `encode_ordinary` of one large text on `num_threads` threads (identical output).
    fn encode_ordinary_parallel<'py>(
        &self,
        py: Python<'py>,
        text: Text,
        num_threads: usize,
    ) -> PyResult<Bound<'py, PyList>> {
        let pool = parallel::pool_for(num_threads);
        let parts = run(py, text.len().max(DETACH_BYTES), || {
            self.inner
                .encode_ordinary_parallel_parts(&text, &pool, 1 << 20)
        })?;
        self.ints.list_parts(py, &parts)
    }

    fn encode_ordinary<'py>(&self, py: Python<'py>, text: Text) -> PyResult<Bound<'py, PyList>> {
        let v = run(py, self.cost(text.len()), || {
            self.inner.encode_ordinary(&text)
        })?;
        self.ints.list(py, &v)
    }

    /// `disallowed_special` may be left out, as in tiktoken's `CoreBPE` (then nothing is refused).
    #[pyo3(signature = (text, allowed_special, disallowed_special = None))]
    fn encode<'py>(
        &self,
        py: Python<'py>,
        text: Text,
        allowed_special: &Bound<'_, PyAny>,
        disallowed_special: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Bound<'py, PyList>> {
        let (a, d) = special_sets_opt(&self.inner, allowed_special, disallowed_special)?;
        let v = run(py, self.cost(text.len()), || {
            self.inner.encode(&text, &a, &d)
        })?;
        self.ints.list(py, &v)
    }

    /// `disallowed_special` may be left out, as in tiktoken's `CoreBPE` (then nothing is refused).
    #[pyo3(signature = (text, allowed_special, disallowed_special = None))]
    fn encode_to_numpy<'py>(
        &self,
        py: Python<'py>,
        text: Text,
        allowed_special: &Bound<'_, PyAny>,
        disallowed_special: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Bound<'py, PyArray1<u32>>> {
        let (a, d) = special_sets_opt(&self.inner, allowed_special, disallowed_special)?;
        let v = run(py, self.cost(text.len()), || {
            self.inner.encode(&text, &a, &d)
        })?;
        Ok(v.into_pyarray(py))
    }

    /// tiktoken's `CoreBPE.encode_to_tiktoken_buffer`: the tokens as native-endian `uint32`
    /// bytes (for `numpy.frombuffer(..., dtype=numpy.uint32)`).
    #[pyo3(signature = (text, allowed_special))]
    fn encode_to_tiktoken_buffer<'py>(
        &self,
        py: Python<'py>,
        text: Text,
        allowed_special: &Bound<'_, PyAny>,
    ) -> PyResult<Bound<'py, PyBytes>> {
        let (a, d) = special_sets_opt(&self.inner, allowed_special, None)?;
        let v = run(py, self.cost(text.len()), || {
            self.inner.encode(&text, &a, &d)
        })?;
        Ok(PyBytes::new(py, u32_bytes(&v)))
    }

    /// `disallowed_special` may be left out, as in tiktoken's `CoreBPE` (then nothing is refused).
    #[pyo3(signature = (text, allowed_special, disallowed_special = None))]
    fn count(
        &self,
        py: Python<'_>,
        text: Text,
        allowed_special: &Bound<'_, PyAny>,
        disallowed_special: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<usize> {
        let (a, d) = special_sets_opt(&self.inner, allowed_special, disallowed_special)?;
        run(py, self.cost(text.len()), || {
            self.inner.count(&text, &a, &d)
        })
    }

    fn encode_ordinary_batch<'py>(
        &self,
        py: Python<'py>,
        texts: Vec<Text>,
        num_threads: usize,
    ) -> PyResult<Bound<'py, PyList>> {
        batch_lists(py, &self.ints, &texts, num_threads, |t| {
            self.inner.encode_ordinary(t)
        })
    }

    fn encode_batch<'py>(
        &self,
        py: Python<'py>,
        texts: Vec<Text>,
        allowed_special: &Bound<'_, PyAny>,
        disallowed_special: &Bound<'_, PyAny>,
        num_threads: usize,
    ) -> PyResult<Bound<'py, PyList>> {
        let (a, d) = special_sets(&self.inner, allowed_special, disallowed_special)?;
        batch_lists(py, &self.ints, &texts, num_threads, |t| {
            self.inner.encode(t, &a, &d)
        })
    }

    fn count_batch(
        &self,
        py: Python<'_>,
        texts: Vec<Text>,
        allowed_special: &Bound<'_, PyAny>,
        disallowed_special: &Bound<'_, PyAny>,
        num_threads: usize,
    ) -> PyResult<Vec<usize>> {
        let (a, d) = special_sets(&self.inner, allowed_special, disallowed_special)?;
        batch(py, &texts, num_threads, |t| self.inner.count(t, &a, &d))
    }

    /// `disallowed_special` may be left out, as in tiktoken's `CoreBPE` (then nothing is refused).
    #[pyo3(signature = (text, allowed_special, disallowed_special = None))]
    fn encode_with_unstable<'py>(
        &self,
        py: Python<'py>,
        text: Text,
        allowed_special: &Bound<'_, PyAny>,
        disallowed_special: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<(Bound<'py, PyList>, Bound<'py, PyList>)> {
        let (a, d) = special_sets_opt(&self.inner, allowed_special, disallowed_special)?;
        // Always stoppable: a long unstable tail can take seconds whatever the text's length.
        let (tokens, completions) = run(py, text.len().max(POLL_BYTES), || {
            self.inner.encode_with_unstable(&text, &a, &d)
        })?;
        // The shared int objects: completions can hold millions of tokens.
        let out = PyList::empty(py);
        for c in &completions {
            out.append(self.ints.list(py, c)?)?;
        }
        Ok((self.ints.list(py, &tokens)?, out))
    }

    fn encode_single_token(&self, piece: PyBackedBytes) -> PyResult<Rank> {
        self.inner
            .encode_single_token(&piece)
            .ok_or_else(|| PyKeyError::new_err(piece.to_vec()))
    }

    /// Takes `bytes` only, as tiktoken's does (a `bytearray` is a TypeError there too).
    fn encode_single_piece(&self, piece: &Bound<'_, PyBytes>) -> PyResult<Vec<Rank>> {
        self.inner
            .encode_single_piece(piece.as_bytes())
            .map_err(to_py)
    }

    /// Takes `bytes` only, as tiktoken's does (and under its argument name).
    fn _encode_bytes(&self, py: Python<'_>, bytes: Bound<'_, PyBytes>) -> PyResult<Vec<Rank>> {
        let data = PyBackedBytes::from(bytes);
        run(py, self.cost(data.len()), || self.inner.encode_bytes(&data))
    }

    fn decode_bytes<'py>(&self, py: Python<'py>, tokens: Tokens) -> PyResult<Bound<'py, PyBytes>> {
        let tokens = tokens.0;
        let b = run(py, tokens.len() * 4, || self.inner.decode_bytes(&tokens))?;
        Ok(PyBytes::new(py, &b))
    }

    /// The decoded text as a `str` when it is valid UTF-8 (the `errors` of `decode` cannot
    /// matter then), else as `bytes`, for the caller to decode with its `errors`.
    fn decode<'py>(&self, py: Python<'py>, tokens: Tokens) -> PyResult<Bound<'py, PyAny>> {
        let tokens = tokens.0;
        let text = run(py, tokens.len() * 4, || {
            self.inner.decode_bytes(&tokens).map(String::from_utf8)
        })?;
        text_or_bytes(py, text)
    }

    fn decode_bytes_batch<'py>(
        &self,
        py: Python<'py>,
        batch: Vec<Tokens>,
        num_threads: usize,
    ) -> PyResult<Vec<Bound<'py, PyBytes>>> {
        let out = self.decode_all(py, &batch, num_threads, |b| b)?;
        Ok(out.iter().map(|b| PyBytes::new(py, b)).collect())
    }

    /// `decode` for each token list, in parallel.
    fn decode_batch<'py>(
        &self,
        py: Python<'py>,
        batch: Vec<Tokens>,
        num_threads: usize,
    ) -> PyResult<Vec<Bound<'py, PyAny>>> {
        let out = self.decode_all(py, &batch, num_threads, String::from_utf8)?;
        out.into_iter().map(|t| text_or_bytes(py, t)).collect()
    }

    fn decode_single_token_bytes<'py>(
        &self,
        py: Python<'py>,
        token: Rank,
    ) -> PyResult<Bound<'py, PyBytes>> {
        match self.inner.token_bytes(token) {
            Some(b) => Ok(PyBytes::new(py, b)),
            None => Err(PyKeyError::new_err(token.to_string())),
        }
    }

    fn decode_tokens_bytes<'py>(
        &self,
        py: Python<'py>,
        tokens: Tokens,
    ) -> PyResult<Bound<'py, PyList>> {
        // Long lists share one `bytes` object per token id (bytes are immutable): a reference
        // each instead of an allocation each, which also keeps 100M tokens from taking 5 GB.
        let shared: &[OnceLock<Py<PyBytes>>] = if tokens.0.len() >= SHARED_BYTES_FROM {
            self.shared_bytes()
        } else {
            &[]
        };
        let mut items = Vec::with_capacity(tokens.0.len());
        for (i, &t) in tokens.0.iter().enumerate() {
            let slot = shared.get(t as usize);
            if let Some(obj) = slot.and_then(OnceLock::get) {
                items.push(obj.bind(py).clone());
            } else {
                let Some(b) = self.inner.token_bytes(t) else {
                    return Err(PyKeyError::new_err(t.to_string()));
                };
                let obj = PyBytes::new(py, b);
                // Not `get_or_init`, which would hold the slot while the allocator runs; a
                // racing thread's object is simply kept instead.
                if let Some(slot) = slot {
                    let _ = slot.set(obj.clone().unbind());
                }
                items.push(obj);
            }
            if i % (1 << 16) == 0xffff {
                py.check_signals()?;
            }
        }
        PyList::new(py, items)
    }

    /// All mergeable token byte strings, sorted.
    fn token_byte_values<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        let ids = self.inner.sorted_tokens();
        let v = self.inner.vocab();
        PyList::new(
            py,
            ids.iter().map(|&r| PyBytes::new(py, v.token(r).unwrap())),
        )
    }

    /// The pieces the split pattern cuts `text` into.
    fn split<'py>(&self, py: Python<'py>, text: Text) -> PyResult<Bound<'py, PyList>> {
        let pieces = run(py, self.cost(text.len()), || {
            self.inner.pretokenizer().pieces(&text)
        })?;
        // Each piece straight into its `str` (no owned copy of each first), looking for Ctrl-C
        // as it goes: tens of millions of pieces take seconds.
        let list = PyList::empty(py);
        for (i, p) in pieces.iter().enumerate() {
            list.append(PyString::new(py, p))?;
            if i % (1 << 16) == 0xFFFF {
                py.check_signals()?;
            }
        }
        Ok(list)
    }
}

fn extract_specials(d: &Bound<'_, PyDict>) -> PyResult<Vec<(String, Rank)>> {
    let mut v = Vec::with_capacity(d.len());
    for (k, r) in d.iter() {
        let Ok(k) = k.cast::<PyString>() else {
            return Err(PyTypeError::new_err("special_tokens keys must be str"));
        };
        // A str with surrogates is a UnicodeEncodeError, as in tiktoken.
        let k = k.to_cow()?.into_owned();
        let r: Rank = r.extract()?;
        if k.is_empty() {
            return Err(PyValueError::new_err(
                "special tokens must not be empty strings",
            ));
        }
        v.push((k, r));
    }
    Ok(v)
}

/// Splits `text` with `pattern` (a regex string); for tests and tools.
#[pyfunction]
#[pyo3(signature = (pattern, text, *, force_regex=false))]
fn split_text(
    py: Python<'_>,
    pattern: &str,
    text: &str,
    force_regex: bool,
) -> PyResult<Vec<String>> {
    let pre = if force_regex {
        Pretokenizer::regex(pattern)
    } else {
        Pretokenizer::new(pattern)
    }
    .map_err(to_py)?;
    let pieces = run(py, text.len().max(DETACH_BYTES), || pre.pieces(text))?;
    Ok(pieces.into_iter().map(str::to_owned).collect())
}

/// The split pattern of a built-in encoding name, or None.
#[pyfunction]
fn builtin_pattern(name: &str) -> Option<&'static str> {
    bytepair_core::pretokenize::builtin_pattern(name)
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<PyCoreBpe>()?;
    m.add_function(wrap_pyfunction!(split_text, m)?)?;
    m.add_function(wrap_pyfunction!(builtin_pattern, m)?)?;
    m.add(
        "BUNDLED_RANK_FILES",
        bytepair_core::vocab::BUNDLED_RANK_FILES.to_vec(),
    )?;
    Ok(())
}

impl PyCoreBpe {
    /// `then` of each token list's bytes, decoded in parallel (and `then` run there too).
    fn decode_all<T: Send>(
        &self,
        py: Python<'_>,
        batch: &[Tokens],
        num_threads: usize,
        then: impl Fn(Vec<u8>) -> T + Sync,
    ) -> PyResult<Vec<T>> {
        let pool = parallel::pool_for(num_threads);
        let bytes: usize = batch.iter().map(|t| t.0.len() * 4).sum();
        // One list at a time per thread, Ctrl-C looked for between lists and inside long ones.
        run(py, bytes, || {
            let mut out: Vec<Option<bytepair_core::Result<T>>> =
                (0..batch.len()).map(|_| None).collect();
            let done = parallel::for_each_mut(&pool, &mut out, 1, |i, slot| {
                *slot = Some(self.inner.decode_bytes(&batch[i].0).map(&then));
            });
            if !done {
                return Err(Error::Interrupted);
            }
            out.into_iter()
                .map(|r| r.unwrap_or(Err(Error::Interrupted)))
                .collect()
        })
    }
}

/// Decoded text as a `str` if it is valid UTF-8, else as `bytes`.
fn text_or_bytes(
    py: Python<'_>,
    text: Result<String, std::string::FromUtf8Error>,
) -> PyResult<Bound<'_, PyAny>> {
    match text {
        Ok(s) => Ok(crate::text::str_from_utf8(py, &s)?.into_any()),
        Err(e) => Ok(PyBytes::new(py, e.as_bytes()).into_any()),
    }
}

/// The bytes of `v` (native endianness).
fn u32_bytes(v: &[u32]) -> &[u8] {
    // SAFETY: any initialised u32 slice is a valid byte slice of 4x its length, alignment 1.
    unsafe { std::slice::from_raw_parts(v.as_ptr().cast::<u8>(), std::mem::size_of_val(v)) }
}
