//! A global allocator for the binaries that move hundreds of megabytes:
//! the system allocator, plus a transparent-huge-page hint on every large
//! block. Ranking touches ~2 GB of fresh memory per 10M tracks; with 4 KiB
//! pages that is ~500K page faults, which in a VM cost more than the work
//! itself. With 2 MiB pages it is a few thousand. Correctness never depends
//! on the hint: where THP is off or unsupported, `madvise` just fails.

use std::alloc::{GlobalAlloc, Layout, System};

/// Blocks at least this large get the huge-page hint.
const HUGE_PAGE_HINT_BYTES: usize = 4 << 20;
const HUGE_PAGE_BYTES: usize = 2 << 20;

/// `#[global_allocator] static ALLOCATOR: HugePageHintAllocator = HugePageHintAllocator;`
pub struct HugePageHintAllocator;

impl HugePageHintAllocator {
    fn hint(ptr: *mut u8, size: usize) {
        #[cfg(target_os = "linux")]
        if !ptr.is_null() && size >= HUGE_PAGE_HINT_BYTES {
            // Only whole huge pages inside the block are advised.
            let start = (ptr as usize).next_multiple_of(HUGE_PAGE_BYTES);
            let end = (ptr as usize + size) & !(HUGE_PAGE_BYTES - 1);
            if end > start {
                // SAFETY: the range lies inside a block this allocator just
                // returned; MADV_HUGEPAGE changes no contents.
                unsafe { libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_HUGEPAGE) };
            }
        }
    }
}

// SAFETY: every method delegates to `System` and only adds an advisory
// `madvise` on memory the caller now owns.
unsafe impl GlobalAlloc for HugePageHintAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let ptr = unsafe { System.alloc(layout) };
        Self::hint(ptr, layout.size());
        ptr
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let ptr = unsafe { System.alloc_zeroed(layout) };
        Self::hint(ptr, layout.size());
        ptr
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let new = unsafe { System.realloc(ptr, layout, new_size) };
        Self::hint(new, new_size);
        new
    }
}

/// The malloc arenas the publish function runs with (its `main` and the
/// publish benchmark's worker call [`limit_malloc_arenas`] with it).
pub const PUBLISH_MALLOC_ARENAS: i32 = 2;

/// Caps the number of glibc malloc arenas at `arenas` (`M_ARENA_MAX`), for a
/// process whose many threads each allocate and free blocks of a few
/// megabytes: the publish step (a decoder thread per file, a writer, the
/// upload), where each thread's arena otherwise keeps what it freed. Peak
/// RSS of the publish step at 100M ranks varied from 250 to 490 MB that way,
/// and was 145–210 MB with 2 arenas at the same CPU time: no hot path
/// allocates per row. Does nothing on other allocators and systems. Takes
/// effect for arenas created after it: call it first thing in `main`.
pub fn limit_malloc_arenas(arenas: i32) {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes a setting of the allocator; arenas that
    // exist stay usable.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, arenas);
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    let _ = arenas;
}
