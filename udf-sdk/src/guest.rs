//! The guest side of the ABI: memory handed to the host, the call, the panic hook, logging.
//! Used through [`resolver!`](crate::resolver); public only for the macro's expansion.
//!
//! Every call runs on a fresh instance that the host discards afterwards, so memory given out
//! here is never freed: leaking is the cheapest correct allocator for a one-shot instance.

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
