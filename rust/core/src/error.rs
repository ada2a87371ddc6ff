//! The one error type of the core. The Python bindings map each variant to a Python exception.
use thiserror::Error;

#[derive(Debug, Error)]
pub enum Error {
    /// Bad argument value (Python `ValueError`).
    #[error("{0}")]
    Value(String),
    /// Missing key, e.g. an unknown token id or bytes not in the vocabulary (Python `KeyError`).
    #[error("{0}")]
    Key(String),
    /// An index out of range (Python `IndexError`).
    #[error("{0}")]
    Index(String),
    /// Wrong input type or shape (Python `TypeError`).
    #[error("{0}")]
    Type(String),
    /// A malformed rank file; `line` is 1-based.
    #[error("invalid rank file{}, line {line}: {msg}", .source_name.as_deref().map(|s| format!(" {s}")).unwrap_or_default())]
    RankFile {
        source_name: Option<String>,
        line: usize,
        msg: String,
    },
    /// An invalid split pattern.
    #[error("invalid pattern: {0}")]
    Pattern(String),
    /// Text contains a special token that the caller did not allow.
    #[error("disallowed special token {0:?}")]
    DisallowedSpecial(String),
    /// File-system and decompression errors (Python `OSError`).
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// A result too large to build (Python `MemoryError`).
    #[error("{0}")]
    TooLarge(String),
    /// The user asked to stop (Ctrl-C); Python raises `KeyboardInterrupt`.
    #[error("interrupted")]
    Interrupted,
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
