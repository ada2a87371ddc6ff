//! Token lists for Python, fast.
//!
//! Why: turning ~1000 token ids into a Python list costs about as much as encoding 4 KB of text
//! when every id becomes a freshly allocated int. Each encoder keeps one shared int object per
//! token id, created on first use and published with a compare-and-swap (safe without the GIL),
//! so building a list is an incref and a store per token. This caches Python objects only; it
//! never caches encoding work.
use bytepair_core::pages::HugePages;
use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::types::PyList;
use std::os::raw::c_ulong;
use std::ptr::null_mut;
use std::sync::atomic::{AtomicPtr, Ordering};

pub struct IntCache {
    /// On huge pages where the system has them (a list touches one slot per token).
    slots: allocator_api2::vec::Vec<AtomicPtr<ffi::PyObject>, HugePages>,
}

impl IntCache {
    pub fn new(n: usize) -> Self {
        let mut slots = allocator_api2::vec::Vec::with_capacity_in(n, HugePages);
        slots.extend((0..n).map(|_| AtomicPtr::new(null_mut())));
        IntCache { slots }
    }

    /// A new strong reference to the int `v`, or null with a Python error set.
    #[inline(always)]
    unsafe fn get(&self, v: u32) -> *mut ffi::PyObject {
        let Some(slot) = self.slots.get(v as usize) else {
            return ffi::PyLong_FromUnsignedLong(v as c_ulong);
        };
        let p = slot.load(Ordering::Acquire);
        if !p.is_null() {
            ffi::Py_INCREF(p);
            return p;
        }
        let obj = ffi::PyLong_FromUnsignedLong(v as c_ulong);
        if obj.is_null() {
            return obj;
        }
        match slot.compare_exchange(null_mut(), obj, Ordering::AcqRel, Ordering::Acquire) {
            Ok(_) => {
                ffi::Py_IncRef(obj); // one reference for the cache, one for the caller
                obj
            }
            Err(existing) => {
                ffi::Py_DecRef(obj);
                ffi::Py_IncRef(existing);
                existing
            }
        }
    }

    /// `list(tokens)` as Python ints.
    pub fn list<'py>(&self, py: Python<'py>, tokens: &[u32]) -> PyResult<Bound<'py, PyList>> {
        unsafe {
            let list = ffi::PyList_New(tokens.len() as ffi::Py_ssize_t);
            if list.is_null() {
                return Err(PyErr::fetch(py));
            }
            let list = Bound::from_owned_ptr(py, list);
            for (i, &t) in tokens.iter().enumerate() {
                let o = self.get(t);
                if o.is_null() {
                    return Err(PyErr::fetch(py));
                }
                // A fresh list's slots are empty, so storing without the checks of
                // PyList_SetItem is what it does anyway.
                #[cfg(not(feature = "abi3"))]
                ffi::PyList_SET_ITEM(list.as_ptr(), i as ffi::Py_ssize_t, o);
                #[cfg(feature = "abi3")]
                ffi::PyList_SetItem(list.as_ptr(), i as ffi::Py_ssize_t, o);
            }
            Ok(list.cast_into_unchecked())
        }
    }
}

impl Drop for IntCache {
    fn drop(&mut self) {
        if self
            .slots
            .iter()
            .all(|s| s.load(Ordering::Relaxed).is_null())
        {
            return;
        }
        Python::attach(|_| {
            for s in self.slots.iter() {
                let p = s.swap(null_mut(), Ordering::AcqRel);
                if !p.is_null() {
                    unsafe { ffi::Py_DecRef(p) };
                }
            }
        });
    }
}
