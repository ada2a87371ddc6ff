//! `str` arguments as UTF-8, converted here rather than by CPython.
//!
//! Why: a `str` holding any non-ASCII character is stored as Latin-1, UCS-2 or UCS-4, and asking
//! CPython for its UTF-8 (what `&str` extraction does) runs a per-character encoder into a new
//! bytes object, then copies that into a buffer kept on the string. On Russian text that was
//! about 6.5% of `encode_ordinary`, as much as the lexer (now 1.5%). Here the code points are
//! converted by [`bytepair_core::utf8`] (AVX2) straight into a buffer owned by the call. ASCII
//! strings are UTF-8 already and are borrowed as they are. A string with surrogates (not valid
//! UTF-8) takes CPython's path, which raises the `UnicodeEncodeError` the Python layer handles as
//! tiktoken does.
use pyo3::prelude::*;
use pyo3::pybacked::PyBackedStr;
use pyo3::types::PyString;
use std::ops::Deref;

/// A `str` argument as UTF-8: borrowed from the string when it is ASCII, else converted.
pub enum Text {
    Borrowed(PyBackedStr),
    Owned(String),
}

impl Deref for Text {
    type Target = str;

    #[inline]
    fn deref(&self) -> &str {
        match self {
            Text::Borrowed(s) => s,
            Text::Owned(s) => s,
        }
    }
}

impl FromPyObject<'_, '_> for Text {
    type Error = PyErr;

    fn extract(obj: Borrowed<'_, '_, PyAny>) -> PyResult<Self> {
        let s = obj.cast::<PyString>()?;
        if let Some(t) = convert(&s) {
            return Ok(Text::Owned(t));
        }
        Ok(Text::Borrowed(PyBackedStr::try_from(s.to_owned())?))
    }
}

/// The UTF-8 of a non-ASCII `str` without surrogates; `None` for the others (and wherever the
/// interpreter's string layout is not readable: the stable ABI, PyPy, GraalPy, big-endian
/// targets, where PyO3 does not test its decoding of it).
#[cfg(all(target_endian = "little", not(any(Py_LIMITED_API, PyPy, GraalPy))))]
fn convert(s: &Bound<'_, PyString>) -> Option<String> {
    use bytepair_core::utf8;
    use pyo3::types::string::PyStringData;
    // SAFETY: `data` reads the string's own storage, which lives and stays unchanged while `s`
    // is held (str is immutable); PyO3 tests its layout decoding on little-endian x86-64 and
    // aarch64, which is what the wheels are built for.
    let data = unsafe { s.data() }.ok()?;
    let mut out = Vec::new();
    let ok = match data {
        PyStringData::Ucs1(b) => {
            if b.is_ascii() {
                return None;
            }
            utf8::from_latin1(b, &mut out);
            true
        }
        PyStringData::Ucs2(u) => utf8::from_ucs2(u, &mut out),
        PyStringData::Ucs4(u) => utf8::from_ucs4(u, &mut out),
    };
    // SAFETY: the converters write UTF-8.
    ok.then(|| unsafe { String::from_utf8_unchecked(out) })
}

#[cfg(not(all(target_endian = "little", not(any(Py_LIMITED_API, PyPy, GraalPy)))))]
fn convert(_: &Bound<'_, PyString>) -> Option<String> {
    None
}

/// A `str` from valid UTF-8, written straight into the new string's storage.
///
/// Why: `bytes.decode` (and `PyUnicode_FromStringAndSize`) decode at about 300 MB/s on English
/// text once one astral character makes the string UCS-4, and cannot be interrupted; a 500 MB
/// decode held Ctrl-C for seconds. Here the code points are counted, the string is made in the
/// storage CPython would give it, and it is filled in chunks, looking for Ctrl-C between them.
/// Short texts take CPython's own path.
#[cfg(all(target_endian = "little", not(any(Py_LIMITED_API, PyPy, GraalPy))))]
pub fn str_from_utf8<'py>(py: Python<'py>, s: &str) -> PyResult<Bound<'py, PyString>> {
    use bytepair_core::utf8::{self, Kind, Unit};
    use pyo3::ffi;
    /// Texts shorter than this go through CPython.
    const NATIVE_FROM: usize = 1 << 16;
    /// UTF-8 bytes converted between looks for Ctrl-C.
    const CHUNK: usize = 8 << 20;
    if s.len() < NATIVE_FROM {
        return Ok(PyString::new(py, s));
    }
    let (n, kind) = utf8::measure(s);
    // SAFETY: `PyUnicode_New` returns a new string (or null with an error set) with room for
    // `n` units of the width `kind` calls for; nothing else holds it until it is returned. It
    // is filled with exactly `n` code points of that width (`measure` counted them and chose
    // the kind from their largest), so it is a valid, canonical string. On an error midway it
    // is dropped, which does not read its characters.
    unsafe {
        let obj = ffi::PyUnicode_New(n as ffi::Py_ssize_t, kind.max_char());
        let string = Bound::from_owned_ptr_or_err(py, obj)?.cast_into_unchecked::<PyString>();
        fn fill<T: Unit>(py: Python<'_>, s: &str, out: &mut [T]) -> PyResult<()> {
            let mut o = 0;
            let mut rest = s;
            while !rest.is_empty() {
                let mut cut = rest.len().min(CHUNK);
                while !rest.is_char_boundary(cut) {
                    cut += 1;
                }
                let (head, tail) = rest.split_at(cut);
                o += utf8::to_units(head, &mut out[o..]);
                rest = tail;
                py.check_signals()?;
            }
            Ok(())
        }
        let data = ffi::PyUnicode_DATA(obj);
        match kind {
            Kind::Ascii | Kind::Latin1 => {
                fill(py, s, std::slice::from_raw_parts_mut(data as *mut u8, n))?
            }
            Kind::Ucs2 => fill(py, s, std::slice::from_raw_parts_mut(data as *mut u16, n))?,
            Kind::Ucs4 => fill(py, s, std::slice::from_raw_parts_mut(data as *mut u32, n))?,
        }
        Ok(string)
    }
}

#[cfg(not(all(target_endian = "little", not(any(Py_LIMITED_API, PyPy, GraalPy)))))]
pub fn str_from_utf8<'py>(py: Python<'py>, s: &str) -> PyResult<Bound<'py, PyString>> {
    Ok(PyString::new(py, s))
}
