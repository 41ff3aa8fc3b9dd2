//! Memory for the large buffers a run reads and writes (a plan's constant pool, the
//! activation arenas), placed on huge pages where the system offers them.
//!
//! A network streams its weights from memory on every run (ResNet-18's 46 MB do not stay
//! in cache), and on 4 KiB pages that is one TLB miss per 4 KiB read — each a page walk,
//! several memory accesses deep (more under virtualisation, where the walk is nested).
//! Buffers of [`HUGE_FROM`] bytes or more are therefore aligned to 2 MiB, their length
//! rounded up to it, and advised for transparent huge pages (`madvise(MADV_HUGEPAGE)`, on
//! Linux) before anything touches them, so that their first writes fault in whole 2 MiB
//! pages: a layer's 9.4 MB of weights is 5 TLB entries instead of 2,300. Where huge pages
//! are disabled or none is free, the kernel backs the range with small pages and nothing
//! else changes. Smaller buffers are aligned to a cache line.

use std::alloc::{Layout, alloc, dealloc, handle_alloc_error};
use std::ptr::NonNull;

/// Size and alignment of a huge page (x86-64 and most AArch64 kernels).
pub const HUGE_PAGE: usize = 2 << 20;

/// Buffers from this size on are placed on huge pages (the rounding wastes under half).
pub const HUGE_FROM: usize = 1 << 20;

/// Alignment of smaller buffers (a cache line).
const LINE: usize = 64;

/// An owned, aligned byte buffer (see the module docs).
pub struct PageBuffer {
    ptr: NonNull<u8>,
    layout: Layout,
    len: usize,
}

// SAFETY: the buffer is plain owned memory; `&PageBuffer` only reads it and `&mut` writes
// it exclusively.
unsafe impl Send for PageBuffer {}
// SAFETY: as above: shared references only read.
unsafe impl Sync for PageBuffer {}

impl PageBuffer {
    /// A buffer of `len` bytes, every one `byte`.
    pub fn filled(len: usize, byte: u8) -> PageBuffer {
        let buffer = PageBuffer::uninit(len);
        // SAFETY: the allocation holds `layout.size()` bytes, all written here.
        unsafe { buffer.ptr.as_ptr().write_bytes(byte, buffer.layout.size()) };
        buffer
    }

    /// An allocation for `len` bytes, advised for huge pages when large, not yet written
    /// (every caller writes all of it before reading).
    fn uninit(len: usize) -> PageBuffer {
        let (size, align) = if len >= HUGE_FROM {
            (len.next_multiple_of(HUGE_PAGE), HUGE_PAGE)
        } else {
            (len.max(1).next_multiple_of(LINE), LINE)
        };
        let layout = match Layout::from_size_align(size, align) {
            Ok(layout) => layout,
            // Only a length within 2 MiB of `isize::MAX`: no allocation could succeed.
            Err(_) => handle_alloc_error(Layout::new::<u8>()),
        };
        // SAFETY: `layout` has a nonzero size.
        let ptr = unsafe { alloc(layout) };
        let Some(ptr) = NonNull::new(ptr) else {
            handle_alloc_error(layout)
        };
        if align == HUGE_PAGE {
            advise_huge_pages(ptr.as_ptr(), size);
        }
        PageBuffer { ptr, layout, len }
    }

    /// The buffer's length in bytes (as asked; the allocation may be longer).
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the buffer is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The first byte.
    pub fn as_ptr(&self) -> *const u8 {
        self.ptr.as_ptr()
    }

    /// The bytes.
    pub fn as_bytes(&self) -> &[u8] {
        // SAFETY: the allocation holds at least `len` initialised bytes, alive and not
        // written while `self` is borrowed shared.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }

    /// The bytes, writable.
    pub fn as_bytes_mut(&mut self) -> &mut [u8] {
        // SAFETY: as in `as_bytes`, borrowed exclusively.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
    }

    /// Bytes allocated (the length rounded up to the alignment).
    pub fn allocated(&self) -> usize {
        self.layout.size()
    }

    /// Whether the buffer was placed for huge pages (aligned and advised; whether the
    /// system backed it with them is its own affair).
    pub fn huge(&self) -> bool {
        self.layout.align() == HUGE_PAGE
    }
}

impl Drop for PageBuffer {
    fn drop(&mut self) {
        // SAFETY: allocated in `uninit` with this layout, freed once.
        unsafe { dealloc(self.ptr.as_ptr(), self.layout) };
    }
}

impl std::fmt::Debug for PageBuffer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PageBuffer")
            .field("len", &self.len)
            .field("huge", &self.huge())
            .finish()
    }
}

/// Asks the kernel to back `[ptr, ptr + len)` (2 MiB-aligned, whole pages) with transparent
/// huge pages. A hint: a failure (huge pages disabled, an old kernel) changes nothing.
fn advise_huge_pages(ptr: *mut u8, len: usize) {
    #[cfg(target_os = "linux")]
    // SAFETY: the range is a live allocation of ours; MADV_HUGEPAGE changes how it is backed,
    // never its contents or validity.
    unsafe {
        libc::madvise(ptr.cast(), len, libc::MADV_HUGEPAGE);
    }
    #[cfg(not(target_os = "linux"))]
    let _ = (ptr, len);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_buffers_are_line_aligned_and_filled() {
        let b = PageBuffer::filled(100, 7);
        assert_eq!(b.len(), 100);
        assert!(!b.huge());
        assert_eq!(b.as_ptr() as usize % LINE, 0);
        assert!(b.as_bytes().iter().all(|&x| x == 7));
        let empty = PageBuffer::filled(0, 0);
        assert!(empty.is_empty());
        assert_eq!(empty.as_bytes(), &[] as &[u8]);
    }

    #[test]
    fn large_buffers_sit_on_huge_page_boundaries() {
        let mut b = PageBuffer::filled(3 * HUGE_PAGE + 1, 0);
        assert!(b.huge());
        assert_eq!(b.as_ptr() as usize % HUGE_PAGE, 0);
        assert_eq!(b.allocated(), 4 * HUGE_PAGE);
        assert!(b.as_bytes().iter().all(|&x| x == 0));
        b.as_bytes_mut()[3 * HUGE_PAGE] = 9;
        assert_eq!(b.as_bytes()[3 * HUGE_PAGE], 9);
        let just = PageBuffer::filled(HUGE_FROM, 1);
        assert!(just.huge() && just.allocated() == HUGE_PAGE);
        let below = PageBuffer::filled(HUGE_FROM - 1, 1);
        assert!(!below.huge());
    }
}
