//! Token-id arguments (`decode*`), read fast and interruptibly.
//!
//! Why: PyO3's `Vec<u32>` extraction walks the iterator protocol at about 15 ns per id, which
//! made `decode` no faster than tiktoken's, and it never looks for Ctrl-C, so reading 240M ids
//! could not be stopped for seconds. Here lists and tuples of plain ints are read directly and
//! 1-D numpy integer arrays by their buffer, looking for Ctrl-C every [`SIGNAL_EVERY`] ids.
//! Anything else, and any item that is not a plain int in range, goes through PyO3's own
//! extraction, so results and exceptions stay those of tiktoken (whose bindings use it too).
use bytepair_core::Rank;
use numpy::{PyArray1, PyArrayMethods};
use pyo3::prelude::*;
use pyo3::types::{PyList, PyTuple};

/// How many ids are read between looks for Ctrl-C (well under a millisecond).
const SIGNAL_EVERY: usize = 1 << 16;

/// Token ids taken from a Python argument.
pub struct Tokens(pub Vec<Rank>);

impl FromPyObject<'_, '_> for Tokens {
    type Error = PyErr;

    fn extract(obj: Borrowed<'_, '_, PyAny>) -> PyResult<Self> {
        if let Some(v) = from_sequence(&obj)? {
            return Ok(Tokens(v));
        }
        if let Some(v) = from_array(&obj)? {
            return Ok(Tokens(v));
        }
        if let Some(v) = from_std_array(&obj)? {
            return Ok(Tokens(v));
        }
        Ok(Tokens(obj.extract::<Vec<Rank>>()?))
    }
}

/// A list or tuple read item by item; `None` for other types (or where the layout is not
/// readable: the stable ABI, free-threaded builds, PyPy, GraalPy).
#[cfg(not(any(Py_LIMITED_API, Py_GIL_DISABLED, PyPy, GraalPy)))]
fn from_sequence(obj: &Borrowed<'_, '_, PyAny>) -> PyResult<Option<Vec<Rank>>> {
    use pyo3::ffi;
    let py = obj.py();
    // Exact types only: a subclass may define its own iteration, which PyO3's path follows.
    let is_list = obj.is_exact_instance_of::<PyList>();
    if !is_list && !obj.is_exact_instance_of::<PyTuple>() {
        return Ok(None);
    }
    let p = obj.as_ptr();
    // SAFETY: `p` is a list or tuple held by the caller for the whole call, and the GIL is held.
    // A list's length is read again before every item, because Python code can run between
    // items (an `__index__`, a signal handler) and change it; the item is then borrowed only
    // until it is read, or owned (`from_borrowed_ptr`) while Python code runs on it.
    let len = |p| unsafe {
        if is_list {
            ffi::PyList_GET_SIZE(p)
        } else {
            ffi::PyTuple_GET_SIZE(p)
        }
    } as usize;
    let mut out = Vec::with_capacity(len(p));
    let mut i = 0;
    while i < len(p) {
        let item = unsafe {
            if is_list {
                ffi::PyList_GET_ITEM(p, i as ffi::Py_ssize_t)
            } else {
                ffi::PyTuple_GET_ITEM(p, i as ffi::Py_ssize_t)
            }
        };
        let fast = unsafe {
            if ffi::PyLong_CheckExact(item) != 0 {
                let v = ffi::PyLong_AsLongLong(item);
                if v == -1 && !ffi::PyErr_Occurred().is_null() {
                    ffi::PyErr_Clear();
                    None
                } else {
                    Rank::try_from(v).ok()
                }
            } else {
                None
            }
        };
        match fast {
            Some(v) => out.push(v),
            // As PyO3 converts it: the same value or the same exception.
            None => out.push(unsafe { Bound::from_borrowed_ptr(py, item) }.extract::<Rank>()?),
        }
        i += 1;
        if i % SIGNAL_EVERY == 0 {
            py.check_signals()?;
        }
    }
    Ok(Some(out))
}

#[cfg(any(Py_LIMITED_API, Py_GIL_DISABLED, PyPy, GraalPy))]
fn from_sequence(_obj: &Borrowed<'_, '_, PyAny>) -> PyResult<Option<Vec<Rank>>> {
    Ok(None)
}

/// A 1-D C-contiguous numpy integer array (exactly `ndarray`) read from its buffer; `None` for
/// anything else, and for an array holding an id out of range (PyO3's extraction then raises
/// the usual error).
fn from_array(obj: &Borrowed<'_, '_, PyAny>) -> PyResult<Option<Vec<Rank>>> {
    macro_rules! try_dtype {
        ($($t:ty),*) => {$(
            if let Ok(a) = obj.cast::<PyArray1<$t>>() {
                let Ok(r) = a.try_readonly() else { return Ok(None) };
                let Ok(s) = r.as_slice() else { return Ok(None) };
                return convert(obj.py(), s);
            }
        )*};
    }
    // A plain ndarray only: subclasses (masked arrays, ...) iterate in their own way.
    if !numpy_ready(obj.py())? || !obj.is_exact_instance_of::<numpy::PyUntypedArray>() {
        return Ok(None);
    }
    try_dtype!(u32, i64, i32, u64, u16, i16, u8, i8);
    Ok(None)
}

/// Whether numpy arrays can be told apart here: numpy is imported (an object can only be an
/// array if it is) and its C API loads. rust-numpy's type checks panic where that API cannot be
/// had (numpy missing or broken, or a Ctrl-C during its first import), so this asks first, the
/// way rust-numpy will, without importing numpy where the program has not. A Ctrl-C meanwhile
/// is raised; any other failure means no arrays.
fn numpy_ready(py: Python<'_>) -> PyResult<bool> {
    use pyo3::exceptions::PyKeyboardInterrupt;
    use pyo3::types::{PyCapsule, PyDict, PyModule};
    use std::sync::atomic::{AtomicBool, Ordering};
    static READY: AtomicBool = AtomicBool::new(false);
    if READY.load(Ordering::Relaxed) {
        return Ok(true);
    }
    let ask = || -> PyResult<bool> {
        let modules = py.import("sys")?.getattr("modules")?;
        let Some(np) = modules.cast::<PyDict>()?.get_item("numpy")? else {
            return Ok(false);
        };
        if !np.is_instance_of::<PyModule>() {
            return Ok(false);
        }
        let version = np.getattr("__version__")?;
        let major: u8 = py
            .import("numpy.lib")?
            .getattr("NumpyVersion")?
            .call1((version,))?
            .getattr("major")?
            .extract()?;
        let core = if major >= 2 {
            "numpy._core"
        } else {
            "numpy.core"
        };
        let api = py
            .import(format!("{core}.multiarray"))?
            .getattr("_ARRAY_API")?;
        Ok(api.is_instance_of::<PyCapsule>())
    };
    match ask() {
        Ok(ready) => {
            READY.store(ready, Ordering::Relaxed);
            Ok(ready)
        }
        Err(e) if e.is_instance_of::<PyKeyboardInterrupt>(py) => Err(e),
        Err(_) => Ok(false),
    }
}

/// An `array.array` of integers read from its buffer (a copy, then converted looking for
/// Ctrl-C); `None` for anything else, and for one holding an id out of range (PyO3's extraction
/// then raises the usual error).
fn from_std_array(obj: &Borrowed<'_, '_, PyAny>) -> PyResult<Option<Vec<Rank>>> {
    use pyo3::buffer::PyBuffer;
    let ty = obj.get_type();
    if ty.name()? != "array" || ty.module()? != "array" {
        return Ok(None);
    }
    macro_rules! try_type {
        ($($t:ty),*) => {$(
            if let Ok(buf) = PyBuffer::<$t>::get(obj) {
                let v = buf.to_vec(obj.py())?;
                return convert(obj.py(), &v);
            }
        )*};
    }
    try_type!(u32, i64, i32, u64, u16, i16, u8, i8);
    Ok(None)
}

fn convert<T: Copy>(py: Python<'_>, s: &[T]) -> PyResult<Option<Vec<Rank>>>
where
    Rank: TryFrom<T>,
{
    let mut out = Vec::with_capacity(s.len());
    for chunk in s.chunks(SIGNAL_EVERY * 16) {
        for &x in chunk {
            match Rank::try_from(x) {
                Ok(v) => out.push(v),
                Err(_) => return Ok(None),
            }
        }
        py.check_signals()?;
    }
    Ok(Some(out))
}
