//! Maps core errors to Python exceptions, and runs core work with the interpreter detached.
use bytepair_core::Error;
use pyo3::exceptions::{
    PyIndexError, PyKeyError, PyKeyboardInterrupt, PyMemoryError, PyTypeError, PyValueError,
};
use pyo3::prelude::*;
use pyo3::types::PyString;
use std::sync::Mutex;

/// The Python exception for a core error.
pub fn to_py(e: Error) -> PyErr {
    match e {
        Error::Value(m) => PyValueError::new_err(m),
        e @ Error::Pattern(_) => PyValueError::new_err(e.to_string()),
        Error::Key(m) => PyKeyError::new_err(m),
        Error::Index(m) => PyIndexError::new_err(m),
        Error::Type(m) => PyTypeError::new_err(m),
        e @ Error::RankFile { .. } => PyValueError::new_err(e.to_string()),
        Error::DisallowedSpecial(tok) => Python::attach(|py| {
            // `repr` runs the signal handlers (CPython checks for signals there): a Ctrl-C that
            // came during the encode is raised, not lost behind this error.
            let r = match PyString::new(py, &tok).repr() {
                Ok(r) => r.to_string(),
                Err(e) => return e,
            };
            PyValueError::new_err(format!(
                "Encountered text corresponding to disallowed special token {r}.\n\
                 If you want this text to be encoded as a special token, pass it to `allowed_special`, \
                 e.g. `allowed_special={{{r}, ...}}`.\n\
                 If you want this text to be encoded as normal text, disable the check for this token \
                 by passing `disallowed_special=(enc.special_tokens_set - {{{r}}})`.\n\
                 To disable this check for all special tokens, pass `disallowed_special=()`.\n"
            ))
        }),
        Error::Io(e) => PyErr::from(e),
        Error::TooLarge(m) => PyMemoryError::new_err(m),
        Error::Interrupted => PyKeyboardInterrupt::new_err("interrupted"),
    }
}

/// Inputs at least this long run with the interpreter detached; shorter ones are not worth the
/// hand-off.
pub const DETACH_BYTES: usize = 2048;

/// Inputs at least this long (about a millisecond of work and more) also run with the Ctrl-C
/// poll installed ([`detached`]); for shorter ones the check after the call is soon enough.
pub const POLL_BYTES: usize = 256 << 10;

/// Runs `f` on an input of `bytes` bytes, and converts its error: detached from the interpreter
/// from [`DETACH_BYTES`], and stoppable by Ctrl-C from [`POLL_BYTES`].
#[inline]
pub fn run<T: Send>(
    py: Python<'_>,
    bytes: usize,
    f: impl FnOnce() -> bytepair_core::Result<T> + Send,
) -> PyResult<T> {
    if bytes >= POLL_BYTES {
        detached(py, f)
    } else if bytes >= DETACH_BYTES {
        py.detach(f).map_err(to_py)
    } else {
        f().map_err(to_py)
    }
}

/// Whether this is the interpreter's main thread, the only one that runs signal handlers
/// (remembered per thread). The first call on a thread asks `threading`, which runs Python code:
/// a handler that raises then (Ctrl-C) is reported, not swallowed.
pub(crate) fn on_main_thread(py: Python<'_>) -> PyResult<bool> {
    thread_local! {
        static MAIN: std::cell::Cell<Option<bool>> = const { std::cell::Cell::new(None) };
    }
    if let Some(v) = MAIN.with(|m| m.get()) {
        return Ok(v);
    }
    let threading = py.import("threading")?;
    let v = threading
        .call_method0("current_thread")?
        .is(&threading.call_method0("main_thread")?);
    MAIN.with(|m| m.set(Some(v)));
    Ok(v)
}

/// Runs `f` detached from the interpreter, stopping it when a signal handler raises (Ctrl-C).
/// Only the main thread polls: elsewhere there are no handlers to run, and re-attaching would
/// wait for the other Python threads for nothing.
pub fn detached<T: Send>(
    py: Python<'_>,
    f: impl FnOnce() -> bytepair_core::Result<T> + Send,
) -> PyResult<T> {
    if !on_main_thread(py)? {
        return py.detach(f).map_err(to_py);
    }
    let raised: Mutex<Option<PyErr>> = Mutex::new(None);
    let poll = || {
        Python::attach(|py| match py.check_signals() {
            Ok(()) => false,
            Err(e) => {
                *raised.lock().unwrap_or_else(|e| e.into_inner()) = Some(e);
                true
            }
        })
    };
    let (r, hit) = py.detach(|| bytepair_core::parallel::interrupt::with_poll(&poll, f));
    if hit {
        if let Some(e) = raised.into_inner().unwrap_or_else(|e| e.into_inner()) {
            return Err(e);
        }
    }
    r.map_err(to_py)
}
