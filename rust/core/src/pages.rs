//! [`HugePages`]: an allocator that backs large blocks with transparent huge pages.
//!
//! Why: the encoder's lookup tables (2-6 MB for the bundled vocabularies) are read at random, a
//! few bytes per lookup. With 4 KB pages every cold lookup also misses the TLB, and on a virtual
//! machine a TLB miss walks two levels of page tables. Linux gives huge pages to a private
//! mapping only where a 2 MiB-aligned range of it has been advised (`MADV_HUGEPAGE`) before it
//! is first written, and malloc does neither, so large blocks are mapped here: 2 MiB-aligned,
//! rounded up to whole huge pages, advised, then handed out. Blocks under [`MIN`], and every block
//! on other systems, come from the global allocator. Whether a block is mapped depends on its
//! layout alone, so `deallocate` knows how to free it.
use allocator_api2::alloc::{AllocError, Allocator, Global};
use std::alloc::Layout;
use std::ptr::NonNull;

/// Blocks of at least this many bytes are mapped on huge pages.
pub const MIN: usize = 1 << 20;

/// The size of a huge page on x86-64 and most aarch64 kernels.
pub const HUGE_PAGE: usize = 2 << 20;

/// See the module docs.
#[derive(Clone, Copy, Debug, Default)]
pub struct HugePages;

#[inline]
fn mapped(layout: Layout) -> bool {
    cfg!(target_os = "linux") && layout.size() >= MIN && layout.align() <= HUGE_PAGE
}

/// A fresh anonymous private mapping of `len` bytes (page-aligned, zero-filled).
#[cfg(target_os = "linux")]
pub(crate) fn map_anonymous(len: usize) -> Result<NonNull<u8>, AllocError> {
    // SAFETY: an anonymous private mapping; no existing memory is touched.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    if p == libc::MAP_FAILED {
        return Err(AllocError);
    }
    NonNull::new(p.cast::<u8>()).ok_or(AllocError)
}

#[cfg(target_os = "linux")]
fn map(len: usize) -> Result<NonNull<u8>, AllocError> {
    let over = len.checked_add(HUGE_PAGE).ok_or(AllocError)?;
    let p = map_anonymous(over)?.as_ptr().cast::<libc::c_void>();
    // SAFETY: the unmapped head and tail lie inside the mapping just made, and the advice only
    // changes how the kernel backs the pages.
    unsafe {
        let start = p as usize;
        let aligned = (start + HUGE_PAGE - 1) & !(HUGE_PAGE - 1);
        if aligned > start {
            libc::munmap(p, aligned - start);
        }
        let tail = start + over - (aligned + len);
        if tail > 0 {
            libc::munmap((aligned + len) as *mut libc::c_void, tail);
        }
        libc::madvise(aligned as *mut libc::c_void, len, libc::MADV_HUGEPAGE);
        NonNull::new(aligned as *mut u8).ok_or(AllocError)
    }
}

#[cfg(not(target_os = "linux"))]
fn map(_: usize) -> Result<NonNull<u8>, AllocError> {
    unreachable!("blocks are mapped on Linux only")
}

/// Bytes mapped for a block of `size` bytes: whole huge pages.
#[inline]
fn mapped_len(size: usize) -> usize {
    size.div_ceil(HUGE_PAGE) * HUGE_PAGE
}

// SAFETY: mapped blocks are valid, zero-filled and aligned to 2 MiB (so to any layout they are
// used for) until `deallocate` unmaps exactly what `allocate` mapped for the same layout; other
// blocks are the global allocator's.
unsafe impl Allocator for HugePages {
    fn allocate(&self, layout: Layout) -> Result<NonNull<[u8]>, AllocError> {
        if !mapped(layout) {
            return Global.allocate(layout);
        }
        let p = map(mapped_len(layout.size()))?;
        Ok(NonNull::slice_from_raw_parts(p, layout.size()))
    }

    /// Mapped blocks are zero-filled by the system already: their pages are not touched (a
    /// sparse table of zeros costs no memory until used).
    fn allocate_zeroed(&self, layout: Layout) -> Result<NonNull<[u8]>, AllocError> {
        if !mapped(layout) {
            return Global.allocate_zeroed(layout);
        }
        self.allocate(layout)
    }

    unsafe fn deallocate(&self, ptr: NonNull<u8>, layout: Layout) {
        if !mapped(layout) {
            return Global.deallocate(ptr, layout);
        }
        #[cfg(target_os = "linux")]
        libc::munmap(ptr.as_ptr().cast(), mapped_len(layout.size()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn large_blocks_are_aligned_zeroed_and_freed_small_ones_are_ordinary() {
        for size in [
            16usize,
            MIN - 1,
            MIN,
            HUGE_PAGE,
            HUGE_PAGE + 1,
            5 * HUGE_PAGE - 7,
        ] {
            let layout = Layout::from_size_align(size, 64).unwrap();
            let block = HugePages.allocate(layout).unwrap();
            let p = block.cast::<u8>();
            assert_eq!(block.len(), size);
            if cfg!(target_os = "linux") && size >= MIN {
                assert_eq!(p.as_ptr() as usize % HUGE_PAGE, 0, "{size}");
                // SAFETY: the block has `size` bytes.
                let bytes = unsafe { std::slice::from_raw_parts_mut(p.as_ptr(), size) };
                assert!(bytes.iter().all(|&b| b == 0));
                bytes.fill(0xA5);
                assert_eq!(bytes[size - 1], 0xA5);
            }
            // SAFETY: allocated above with this layout.
            unsafe { HugePages.deallocate(p, layout) };
        }
    }

    #[test]
    fn a_table_grows_across_the_threshold() {
        // hashbrown reallocates through `allocate` and `deallocate` as it grows, from ordinary
        // blocks to mapped ones; every key must survive the moves.
        let mut m: hashbrown::HashMap<u64, u32, crate::vocab::BuildKeyHasher, HugePages> =
            hashbrown::HashMap::with_hasher_in(Default::default(), HugePages);
        for k in 0..200_000u64 {
            m.insert(k * 7, k as u32);
        }
        assert!((0..200_000u64).all(|k| m.get(&(k * 7)) == Some(&(k as u32))));
        assert_eq!(m.get(&3), None);
    }
}
