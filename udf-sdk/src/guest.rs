//! The guest side of the ABI: memory handed to the host, the call, the panic hook, logging.
//! Used through [`resolver!`](crate::resolver); public only for the macro's expansion.
//!
//! Every call runs on a fresh instance that the host discards afterwards, so memory given out
//! here is never freed: leaking is the cheapest correct allocator for a one-shot instance.
//!
//! On wasm32 the SDK also installs `BumpAllocator` as the global allocator (cargo feature
//! `allocator`, on by default): allocation is a pointer bump in a zeroed arena that is part of
//! the module's initial memory, so a typical call never grows memory and touches only the
//! pages it uses, which is what makes a fresh instance per call cheap.

use crate::{Conflict, Decision, resolve_json};

#[cfg(target_arch = "wasm32")]
#[allow(unsafe_code)]
mod host {
    #[link(wasm_import_module = "converge")]
    unsafe extern "C" {
        #[link_name = "log"]
        pub fn converge_log(ptr: *const u8, len: usize);
        #[link_name = "panic"]
        pub fn converge_panic(ptr: *const u8, len: usize);
    }
}

/// Sends `message` to the host's log (natively: standard error).
pub fn log(message: &str) {
    #[cfg(target_arch = "wasm32")]
    #[allow(unsafe_code)]
    // SAFETY: the host reads `len` bytes at `ptr` from this instance's memory during the call.
    unsafe {
        host::converge_log(message.as_ptr(), message.len())
    };
    #[cfg(not(target_arch = "wasm32"))]
    eprintln!("{message}");
}

/// `converge_alloc`: `len` writable bytes that stay valid for the rest of the call.
pub fn alloc(len: i32) -> i32 {
    let Ok(len) = usize::try_from(len) else {
        return 0;
    };
    let mut buf: Vec<u8> = Vec::new();
    if buf.try_reserve_exact(len).is_err() {
        return 0;
    }
    buf.leak().as_mut_ptr() as usize as i32
}

fn install_panic_hook() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        std::panic::set_hook(Box::new(|info| {
            let msg = match (
                info.payload().downcast_ref::<&str>(),
                info.payload().downcast_ref::<String>(),
            ) {
                (Some(s), _) => (*s).to_owned(),
                (_, Some(s)) => s.clone(),
                _ => info.to_string(),
            };
            #[cfg(target_arch = "wasm32")]
            #[allow(unsafe_code)]
            // SAFETY: as for `log`; the host copies the message before the guest traps.
            unsafe {
                host::converge_panic(msg.as_ptr(), msg.len())
            };
            #[cfg(not(target_arch = "wasm32"))]
            eprintln!("resolver panicked: {msg}");
        }));
    });
}

/// `converge_resolve`: decodes the input at `[ptr, ptr+len)`, runs `resolver`, and returns
/// the packed location of the output.
pub fn resolve(ptr: i32, len: i32, resolver: fn(&Conflict) -> Decision) -> i64 {
    resolve_raw(ptr, len, |input| resolve_json(input, resolver).into_bytes())
}

/// `converge_resolve` for a resolver that reads the input bytes and writes the output bytes
/// itself (see `resolver!(raw: ...)`).
pub fn resolve_raw(ptr: i32, len: i32, resolver: impl FnOnce(&[u8]) -> Vec<u8>) -> i64 {
    install_panic_hook();
    let input: &[u8] = match usize::try_from(len) {
        Ok(0) | Err(_) => &[],
        #[allow(unsafe_code)]
        // SAFETY: the host wrote `len` bytes at `ptr`, memory this module handed out through
        // `converge_alloc`, and does not touch it during the call.
        Ok(n) => unsafe { std::slice::from_raw_parts(ptr as usize as *const u8, n) },
    };
    let out = resolver(input).leak();
    (((out.as_ptr() as usize as u64) << 32) | out.len() as u64) as i64
}

/// Size of the arena in the module's initial memory (its zeroed data section).
#[cfg(target_arch = "wasm32")]
const ARENA_BYTES: usize = 256 << 10;

/// The SDK's global allocator on wasm32: bumps a pointer through an arena in the module's
/// initial memory, then through memory grown a page run at a time. Freeing the most recent
/// allocation takes it back and growing it extends it in place (so a `Vec` that grows while
/// nothing else allocates does not copy); anything else is reclaimed when the instance is
/// dropped after the call. Single-threaded, as wasm32 resolvers are.
#[cfg(target_arch = "wasm32")]
pub struct BumpAllocator {
    state: std::cell::UnsafeCell<Bump>,
}

#[cfg(target_arch = "wasm32")]
struct Bump {
    /// Next free address and the end of the current region.
    next: usize,
    end: usize,
    arena: [u8; ARENA_BYTES],
}

#[cfg(target_arch = "wasm32")]
impl BumpAllocator {
    /// An allocator whose arena is not yet in use.
    pub const fn new() -> Self {
        BumpAllocator {
            state: std::cell::UnsafeCell::new(Bump {
                next: 0,
                end: 0,
                arena: [0; ARENA_BYTES],
            }),
        }
    }
}

#[cfg(target_arch = "wasm32")]
impl Default for BumpAllocator {
    fn default() -> Self {
        Self::new()
    }
}

// SAFETY: wasm32 resolvers run on one thread (the host has no threads support).
#[cfg(target_arch = "wasm32")]
#[allow(unsafe_code)]
unsafe impl Sync for BumpAllocator {}

#[cfg(target_arch = "wasm32")]
impl Bump {
    fn alloc(&mut self, layout: std::alloc::Layout) -> *mut u8 {
        if self.end == 0 {
            self.next = self.arena.as_mut_ptr() as usize;
            self.end = self.next + ARENA_BYTES;
        }
        let align = layout.align();
        let start = (self.next + align - 1) & !(align - 1);
        match start.checked_add(layout.size()) {
            Some(stop) if stop <= self.end => {
                self.next = stop;
                start as *mut u8
            }
            _ => self.grow(layout),
        }
    }

    /// Continues in fresh pages at the end of memory, enough for `layout`.
    fn grow(&mut self, layout: std::alloc::Layout) -> *mut u8 {
        const PAGE: usize = 65536;
        let need = layout.size() + layout.align();
        let pages = need.div_ceil(PAGE).max(16);
        let old = core::arch::wasm32::memory_grow(0, pages);
        if old == usize::MAX {
            return std::ptr::null_mut();
        }
        let base = old * PAGE;
        if base == self.end {
            // Contiguous with the current region: keep bumping through both.
            self.end += pages * PAGE;
        } else {
            self.next = base;
            self.end = base + pages * PAGE;
        }
        self.alloc(layout)
    }
}

// SAFETY: every block handed out lies in the arena or in grown memory, is aligned as asked,
// and is never handed out twice (the pointer only moves back over the latest block).
#[cfg(target_arch = "wasm32")]
#[allow(unsafe_code)]
unsafe impl std::alloc::GlobalAlloc for BumpAllocator {
    unsafe fn alloc(&self, layout: std::alloc::Layout) -> *mut u8 {
        // SAFETY: single-threaded; no other reference to the state is live.
        unsafe { (*self.state.get()).alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: std::alloc::Layout) {
        // SAFETY: as above.
        let s = unsafe { &mut *self.state.get() };
        if ptr as usize + layout.size() == s.next {
            s.next = ptr as usize;
        }
    }

    unsafe fn alloc_zeroed(&self, layout: std::alloc::Layout) -> *mut u8 {
        // SAFETY: as above; the block is zeroed below unless it is fresh arena or fresh
        // pages, which are zero already... but a block taken back by `dealloc` may not be,
        // so always clear.
        let p = unsafe { self.alloc(layout) };
        if !p.is_null() {
            // SAFETY: `p` points to `layout.size()` writable bytes.
            unsafe { std::ptr::write_bytes(p, 0, layout.size()) };
        }
        p
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: std::alloc::Layout, new_size: usize) -> *mut u8 {
        // SAFETY: as above.
        let s = unsafe { &mut *self.state.get() };
        let start = ptr as usize;
        if start + layout.size() == s.next {
            if let Some(stop) = start.checked_add(new_size) {
                if stop <= s.end {
                    s.next = stop;
                    return ptr;
                }
            }
        }
        let Ok(new_layout) = std::alloc::Layout::from_size_align(new_size, layout.align()) else {
            return std::ptr::null_mut();
        };
        let p = s.alloc(new_layout);
        if !p.is_null() {
            // SAFETY: both blocks are valid for the copied length and do not overlap (the new
            // one was handed out after the old one).
            unsafe { std::ptr::copy_nonoverlapping(ptr, p, layout.size().min(new_size)) };
        }
        p
    }
}
