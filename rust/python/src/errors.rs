//! Maps core errors to Python exceptions, and runs core work with the interpreter detached.
use bytepair_core::Error;
use pyo3::exceptions::{PyIndexError, PyKeyError, PyKeyboardInterrupt, PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::PyString;

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
            let r = PyString::new(py, &tok)
                .repr()
                .map(|r| r.to_string())
                .unwrap_or_else(|_| format!("{tok:?}"));
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
        Error::Interrupted => PyKeyboardInterrupt::new_err("interrupted"),
    }
}

/// Inputs at least this long run with the interpreter detached; shorter ones are not worth the
/// hand-off.
pub const DETACH_BYTES: usize = 2048;

/// Runs `f`, detached from the interpreter when `big`, and converts its error.
#[inline]
pub fn run<T: Send>(
    py: Python<'_>,
    big: bool,
    f: impl FnOnce() -> bytepair_core::Result<T> + Send,
) -> PyResult<T> {
    if big { py.detach(f) } else { f() }.map_err(to_py)
}
