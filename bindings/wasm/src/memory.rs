//! The engine's allocator: dlmalloc (std's own on wasm32) over a system allocator that grows the
//! instance's memory by an eighth of its size at a time (1 MiB at least) rather than by what one
//! request needs. V8 counts each growth of a wasm memory as external memory and answers with a
//! garbage collection: growing 64 KiB at a time, a store filling with workflow history set off a
//! scavenge every ~40 runs, and full collections past ~100 MB.

use core::alloc::{GlobalAlloc, Layout};
use core::arch::wasm32;
use core::ptr;

use dlmalloc::{Allocator, Dlmalloc};

const PAGE: usize = 64 * 1024;
/// The least a growth adds, in pages (1 MiB).
const MIN_PAGES: usize = 16;

/// The system side of dlmalloc: memory from `memory.grow`, never given back (as std's).
struct Growing;

// SAFETY: regions come from `memory.grow` only, each new and page-aligned, and are never freed,
// which dlmalloc is told through `free`, `free_part` and `can_release_part`.
unsafe impl Allocator for Growing {
    fn alloc(&self, size: usize) -> (*mut u8, usize, u32) {
        let needed = size.div_ceil(PAGE);
        let generous = needed.max(wasm32::memory_size(0) / 8).max(MIN_PAGES);
        // Past what the host allows, settle for what the request needs.
        let (prev, pages) = match wasm32::memory_grow(0, generous) {
            usize::MAX => (wasm32::memory_grow(0, needed), needed),
            prev => (prev, generous),
        };
        if prev == usize::MAX {
            return (ptr::null_mut(), 0, 0);
        }
        let base = prev * PAGE;
        let size = pages * PAGE;
        // The very top of the address space: a pointer must not wrap to 0 (as std's allocator).
        if base.wrapping_add(size) == 0 {
            return (base as *mut u8, size - 16, 0);
        }
        (base as *mut u8, size, 0)
    }

    fn remap(&self, _ptr: *mut u8, _oldsize: usize, _newsize: usize, _can_move: bool) -> *mut u8 {
        ptr::null_mut()
    }

    fn free_part(&self, _ptr: *mut u8, _oldsize: usize, _newsize: usize) -> bool {
        false
    }

    fn free(&self, _ptr: *mut u8, _size: usize) -> bool {
        false
    }

    fn can_release_part(&self, _flags: u32) -> bool {
        false
    }

    fn allocates_zeros(&self) -> bool {
        true
    }

    fn page_size(&self) -> usize {
        PAGE
    }
}

/// The global allocator of the wasm engine.
pub struct Engine;

static mut DLMALLOC: Dlmalloc<Growing> = Dlmalloc::new_with_allocator(Growing);

// SAFETY: wasm32 without atomics runs one thread, so the one allocator is never used from two
// calls at once; every call passes dlmalloc the layout it was given.
unsafe impl GlobalAlloc for Engine {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        unsafe { (*ptr::addr_of_mut!(DLMALLOC)).malloc(layout.size(), layout.align()) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { (*ptr::addr_of_mut!(DLMALLOC)).free(ptr, layout.size(), layout.align()) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        unsafe { (*ptr::addr_of_mut!(DLMALLOC)).calloc(layout.size(), layout.align()) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        unsafe { (*ptr::addr_of_mut!(DLMALLOC)).realloc(ptr, layout.size(), layout.align(), new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Engine = Engine;
