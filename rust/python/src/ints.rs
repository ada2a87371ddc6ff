//! Token lists for Python, fast.
//!
//! Why: turning ~1000 token ids into a Python list costs about as much as encoding 4 KB of text
//! when every id becomes a freshly allocated int. Each encoder keeps one shared int object per
//! token id, created on first use and published with a compare-and-swap (safe without the GIL),
//! so building a list is an incref and a store per token. This caches Python objects only; it
//! never caches encoding work.
//!
//! On CPython 3.12 to 3.15 (GIL builds, 64-bit) the ints below [`IMMORTAL_IDS`] are instead
//! shared by every encoder of the process and immortal (PEP 683): a list then stores their
//! pointers without touching them, and freeing it writes nothing back. There, the reference
//! counts cost a quarter of `encode_ordinary` on English (see `immortal`).
use bytepair_core::pages::HugePages;
use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::types::PyList;
use std::os::raw::c_ulong;
use std::ptr::null_mut;
use std::sync::atomic::{AtomicPtr, Ordering};

/// Token ids with process-wide immortal ints (every built-in encoding's ids are below it); 0
/// where the interpreter has no immortal objects this code can make.
#[cfg(immortal_ints)]
pub const IMMORTAL_IDS: usize = immortal::IDS;
#[cfg(not(immortal_ints))]
pub const IMMORTAL_IDS: usize = 0;

/// Immortal token ints for CPython 3.12 to 3.15 (`cfg(immortal_ints)`, set by `build.rs`).
///
/// CPython makes an object immortal by setting its reference count (the low 32 bits of the
/// count field) to `UINT_MAX` on 3.12 and 3.13, and on 3.14 and 3.15 to `3 << 30` together
/// with the immortal bit of the object's flags (which the interpreter's stack references read);
/// its own `_Py_SetImmortalUntracked` does the same. `Py_INCREF` and `Py_DECREF` then return
/// without writing, and the object is never freed. Later versions are left out until they are
/// tested. The slots are process-wide, so every encoder shares at most `IDS` ints (8 MB at
/// most, in practice what the text used) instead of leaking a set per encoder. They are only
/// read and written with the GIL held.
///
/// Measured on CPython 3.12.1 (fresh 4 KB documents of `../shared/corpus/en.txt`, cl100k, as in
/// `benches/sequential_encode.py`): `count` ran at 172-174 MB/s and `encode_ordinary` at
/// 127-130 MB/s with mortal cached ints, the list's increfs and `list_dealloc`'s decrefs taking a
/// cache miss and a write each per token; 155-172 MB/s with immortal ones.
#[cfg(immortal_ints)]
mod immortal {
    use super::*;
    use std::sync::OnceLock;

    pub const IDS: usize = 1 << 18;

    fn slots() -> &'static [AtomicPtr<ffi::PyObject>] {
        static SLOTS: OnceLock<allocator_api2::vec::Vec<AtomicPtr<ffi::PyObject>, HugePages>> =
            OnceLock::new();
        SLOTS.get_or_init(|| {
            let mut v = allocator_api2::vec::Vec::with_capacity_in(IDS, HugePages);
            v.extend((0..IDS).map(|_| AtomicPtr::new(null_mut())));
            v
        })
    }

    /// The immortal int `v` (`v < IDS`), or null with a Python error set. No reference is
    /// counted: the object lives as long as the process. Needs the GIL.
    #[inline(always)]
    pub unsafe fn get(v: u32) -> *mut ffi::PyObject {
        // SAFETY (index): v < IDS = slots().len().
        let slot = slots().get_unchecked(v as usize);
        let p = slot.load(Ordering::Relaxed);
        if !p.is_null() {
            return p;
        }
        let obj = ffi::PyLong_FromUnsignedLong(v as c_ulong);
        if obj.is_null() {
            return obj;
        }
        // Ints are not tracked by the garbage collector, which immortal objects must not be.
        // Small ints are immortal already (a negative low half is how CPython tells).
        if ((*obj).ob_refcnt.ob_refcnt as i32) >= 0 {
            set_immortal(obj);
        }
        slot.store(obj, Ordering::Relaxed);
        obj
    }

    /// CPython 3.12/3.13's `_Py_IMMORTAL_REFCNT` on 64-bit targets.
    #[cfg(not(Py_3_14))]
    unsafe fn set_immortal(obj: *mut ffi::PyObject) {
        (*obj).ob_refcnt.ob_refcnt = u32::MAX as ffi::Py_ssize_t;
    }

    /// CPython 3.14 and 3.15's `_Py_IMMORTAL_FLAGS` and `_Py_IMMORTAL_INITIAL_REFCNT` on 64-bit
    /// targets (`Include/refcount.h`, `Include/object.h`); the other flag bits and the overflow
    /// half are left as they are.
    #[cfg(Py_3_14)]
    unsafe fn set_immortal(obj: *mut ffi::PyObject) {
        const IMMORTAL_FLAGS: u16 = 1;
        const INITIAL_REFCNT: u32 = 3 << 30;
        let f = &mut (*obj).ob_refcnt.refcnt_and_flags;
        f.ob_flags |= IMMORTAL_FLAGS;
        f.ob_refcnt = INITIAL_REFCNT;
    }
}

pub struct IntCache {
    /// Ints of ids from [`IMMORTAL_IDS`] on (all of them where there are no immortal ints), on
    /// huge pages where the system has them (a list touches one slot per token).
    slots: allocator_api2::boxed::Box<[AtomicPtr<ffi::PyObject>], HugePages>,
}

/// Ids from this one on are not cached (each gets a new int): a slot costs 8 bytes whether its
/// id is used or not, and a custom vocabulary may have sparse ids up to `u32::MAX`.
const MAX_CACHED_IDS: usize = 1 << 21;

impl IntCache {
    /// A cache for ids below `n` (at most [`MAX_CACHED_IDS`]).
    pub fn new(n: usize) -> Self {
        let n = n.min(MAX_CACHED_IDS).saturating_sub(IMMORTAL_IDS);
        // Zeroed by the system, not written: a vocabulary with a few hundred tokens and a special
        // id in the millions pays for the pages its ids use, not 16 MB.
        let slots = allocator_api2::boxed::Box::new_zeroed_slice_in(n, HugePages);
        // SAFETY: all-zero bits are a valid `AtomicPtr` (null).
        IntCache {
            slots: unsafe { slots.assume_init() },
        }
    }

    /// A new strong reference to the int `v` (or the immortal int `v`, which needs none), or null
    /// with a Python error set.
    #[inline(always)]
    unsafe fn get(&self, v: u32) -> *mut ffi::PyObject {
        #[cfg(immortal_ints)]
        if (v as usize) < IMMORTAL_IDS {
            return immortal::get(v);
        }
        let Some(slot) = self.slots.get(v as usize - IMMORTAL_IDS) else {
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

    /// The concatenation of `parts` as one list of Python ints.
    pub fn list_parts<'py>(
        &self,
        py: Python<'py>,
        parts: &[Vec<u32>],
    ) -> PyResult<Bound<'py, PyList>> {
        let n = parts.iter().map(Vec::len).sum();
        self.list_of(py, n, parts.iter().flatten().copied())
    }

    /// `list(tokens)` as Python ints.
    pub fn list<'py>(&self, py: Python<'py>, tokens: &[u32]) -> PyResult<Bound<'py, PyList>> {
        self.list_of(py, tokens.len(), tokens.iter().copied())
    }

    /// A list of the `n` ints of `tokens`.
    #[inline(always)]
    fn list_of<'py>(
        &self,
        py: Python<'py>,
        n: usize,
        tokens: impl Iterator<Item = u32>,
    ) -> PyResult<Bound<'py, PyList>> {
        unsafe {
            let list = ffi::PyList_New(n as ffi::Py_ssize_t);
            if list.is_null() {
                return Err(PyErr::fetch(py));
            }
            let list = Bound::from_owned_ptr(py, list);
            for (i, t) in tokens.take(n).enumerate() {
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
