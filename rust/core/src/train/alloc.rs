//! [`Big`]: the allocator of the trainer's large tables, so that their memory goes back to the
//! system when they are freed, without changing the allocator of the rest of the process.
//!
//! Why: the counting tables grow on the worker threads, so glibc places them in the threads'
//! arenas. When they are freed at the end of counting, that memory joins the top of those
//! arenas, which `malloc_trim` does not shrink, and `free` shrinks only past the trim threshold,
//! which glibc raises (up to 64 MiB) as it sees big blocks freed: about 30 MiB of a 500 MB
//! corpus's counting tables stayed resident through the merge phase. A process-wide
//! `mallopt(M_MMAP_THRESHOLD)` fixes that but changes every later allocation of the user's
//! process, for good (glibc cannot restore its dynamic threshold). Here only the trainer's own
//! big blocks (32 KiB and more) get their own mappings: `mmap`, `mremap` to grow (no copy, no two
//! copies resident), `munmap` to free. Smaller blocks, and every block on other systems, come
//! from the system allocator.
use std::alloc::{GlobalAlloc, Layout, System};
use std::ptr::NonNull;

use allocator_api2::alloc::{AllocError, Allocator};

/// Blocks of at least this many bytes are mapped on their own. Small enough that the shards of
/// the counting table are mapped long before they are big (64 of them share the table).
const MAP_MIN: usize = 32 << 10;

/// The allocator of the trainer's large tables (see the module docs). Whether a block is mapped
/// depends only on its size, so `deallocate`, `grow` and `shrink` know from the layout.
#[derive(Clone, Copy, Debug, Default)]
pub struct Big;

#[inline]
fn mapped(layout: Layout) -> bool {
    cfg!(target_os = "linux") && layout.size() >= MAP_MIN && layout.align() <= 4096
}

#[inline]
fn slice(p: NonNull<u8>, len: usize) -> NonNull<[u8]> {
    NonNull::slice_from_raw_parts(p, len)
}

fn system_alloc(layout: Layout, zeroed: bool) -> Result<NonNull<[u8]>, AllocError> {
    if layout.size() == 0 {
        // A dangling, well-aligned pointer, as the global allocator's users expect.
        let p = NonNull::new(layout.align() as *mut u8).ok_or(AllocError)?;
        return Ok(slice(p, 0));
    }
    // SAFETY: the size is nonzero.
    let p = unsafe {
        if zeroed {
            System.alloc_zeroed(layout)
        } else {
            System.alloc(layout)
        }
    };
    NonNull::new(p)
        .map(|p| slice(p, layout.size()))
        .ok_or(AllocError)
}

#[cfg(target_os = "linux")]
mod map {
    use super::*;

    pub fn map(len: usize) -> Result<NonNull<[u8]>, AllocError> {
        crate::pages::map_anonymous(len).map(|p| slice(p, len))
    }

    /// # Safety
    /// `p` must be a mapping of `old` bytes made by [`map`] or [`remap`].
    pub unsafe fn remap(
        p: NonNull<u8>,
        old: usize,
        new: usize,
    ) -> Result<NonNull<[u8]>, AllocError> {
        let q = libc::mremap(p.as_ptr().cast(), old, new, libc::MREMAP_MAYMOVE);
        if q == libc::MAP_FAILED {
            return Err(AllocError);
        }
        NonNull::new(q.cast::<u8>())
            .map(|q| slice(q, new))
            .ok_or(AllocError)
    }

    /// # Safety
    /// `p` must be a mapping of `len` bytes made by [`map`] or [`remap`].
    pub unsafe fn unmap(p: NonNull<u8>, len: usize) {
        libc::munmap(p.as_ptr().cast(), len);
    }
}

#[cfg(not(target_os = "linux"))]
mod map {
    use super::*;

    pub fn map(_: usize) -> Result<NonNull<[u8]>, AllocError> {
        unreachable!("blocks are mapped on Linux only")
    }
    pub unsafe fn remap(_: NonNull<u8>, _: usize, _: usize) -> Result<NonNull<[u8]>, AllocError> {
        unreachable!("blocks are mapped on Linux only")
    }
    pub unsafe fn unmap(_: NonNull<u8>, _: usize) {
        unreachable!("blocks are mapped on Linux only")
    }
}

// SAFETY: blocks are valid for their layout until deallocated: mapped blocks (page-aligned,
// zero-filled) when `mapped(layout)`, system blocks otherwise; the layout says which.
unsafe impl Allocator for Big {
    fn allocate(&self, layout: Layout) -> Result<NonNull<[u8]>, AllocError> {
        if mapped(layout) {
            map::map(layout.size())
        } else {
            system_alloc(layout, false)
        }
    }

    fn allocate_zeroed(&self, layout: Layout) -> Result<NonNull<[u8]>, AllocError> {
        if mapped(layout) {
            map::map(layout.size()) // fresh mappings are zero-filled
        } else {
            system_alloc(layout, true)
        }
    }

    unsafe fn deallocate(&self, ptr: NonNull<u8>, layout: Layout) {
        if mapped(layout) {
            map::unmap(ptr, layout.size());
        } else if layout.size() != 0 {
            System.dealloc(ptr.as_ptr(), layout);
        }
    }

    unsafe fn grow(
        &self,
        ptr: NonNull<u8>,
        old: Layout,
        new: Layout,
    ) -> Result<NonNull<[u8]>, AllocError> {
        self.resize(ptr, old, new)
    }

    unsafe fn shrink(
        &self,
        ptr: NonNull<u8>,
        old: Layout,
        new: Layout,
    ) -> Result<NonNull<[u8]>, AllocError> {
        self.resize(ptr, old, new)
    }
}

impl Big {
    /// Grows or shrinks a block: mapped to mapped in place where the kernel can (`mremap`), else
    /// by moving it.
    ///
    /// # Safety
    /// `ptr` must be a block of this allocator with layout `old`.
    unsafe fn resize(
        &self,
        ptr: NonNull<u8>,
        old: Layout,
        new: Layout,
    ) -> Result<NonNull<[u8]>, AllocError> {
        if mapped(old) && mapped(new) {
            return map::remap(ptr, old.size(), new.size());
        }
        self.move_to(ptr, old, new)
    }

    /// Moves a block to a new one of layout `new` (for changes between mapped and system blocks).
    ///
    /// # Safety
    /// `ptr` must be a block of this allocator with layout `old`.
    unsafe fn move_to(
        &self,
        ptr: NonNull<u8>,
        old: Layout,
        new: Layout,
    ) -> Result<NonNull<[u8]>, AllocError> {
        let q = self.allocate(new)?;
        std::ptr::copy_nonoverlapping(
            ptr.as_ptr(),
            q.cast::<u8>().as_ptr(),
            old.size().min(new.size()),
        );
        self.deallocate(ptr, old);
        Ok(q)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use allocator_api2::vec::Vec as AVec;

    #[test]
    fn grows_and_shrinks_across_the_threshold() {
        let mut v: AVec<u32, Big> = AVec::new_in(Big);
        for i in 0..1_000_000u32 {
            v.push(i);
        }
        assert!(v.capacity() * 4 >= MAP_MIN);
        assert!(v.iter().enumerate().all(|(i, &x)| x as usize == i));
        v.truncate(10);
        v.shrink_to_fit();
        assert_eq!(&v[..], &(0..10).collect::<std::vec::Vec<u32>>()[..]);
        let z = Big.allocate_zeroed(Layout::from_size_align(3 << 20, 8).unwrap());
        let z = z.unwrap();
        // SAFETY: a fresh zeroed block of 3 MiB.
        unsafe {
            assert!(z.as_ref().iter().all(|&b| b == 0));
            Big.deallocate(z.cast(), Layout::from_size_align(3 << 20, 8).unwrap());
        }
        let mut t = hashbrown::HashTable::<u64, Big>::with_capacity_in(4, Big);
        for k in 0..300_000u64 {
            t.insert_unique(k, k, |&x| x);
        }
        assert_eq!(t.find(123_456, |&x| x == 123_456), Some(&123_456));
    }
}
