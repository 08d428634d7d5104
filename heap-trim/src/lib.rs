//! # heap-trim
//!
//! The server's memory allocator and its tuning, and handing freed memory back to the system:
//! the workspace's calls into C that are not behind a dependency's safe API, in a crate of their
//! own so that the crates that use them keep `#![forbid(unsafe_code)]`.
//!
//! - [`Allocator`]: mimalloc, built without transparent huge pages. `gesync-server` makes it the
//!   global allocator of every program that links it. Against glibc's malloc, where malloc and
//!   free were a fifth of the server's samples under `load`, it took the server's CPU there
//!   from 9.4–9.8 s to 7.7–8.4 s and the peak RSS of `bench-sync`'s ingest under 300 MiB
//!   (README, "Measured figures").
//! - [`tune`]: sets mimalloc's purge delay to [`PURGE_DELAY_MS`].
//! - [`trim`]: hands back what the allocator holds freed (mimalloc's forced collection, and
//!   glibc's `malloc_trim(3)` for what glibc's malloc still serves).

/// The allocator the server runs on (see the crate's documentation).
pub use mimalloc::MiMalloc as Allocator;

/// How long mimalloc keeps a freed page before handing it back to the system, in ms. Its
/// default (1 s) held the peak RSS of a 100,000-record ingest at 308–328 MiB; 10 ms held it at
/// 272–289 MiB, at no cost beyond this machine's swings; 0 cost CPU for no less memory.
pub const PURGE_DELAY_MS: i64 = 10;

/// mimalloc's option number for the purge delay (`mi_option_purge_delay` in mimalloc 3's
/// `mimalloc.h`; the Rust bindings do not name it).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// Sets the allocator's options; call once, early (the server does it at launch). Harmless
/// where mimalloc is not the global allocator. An operator's own `MIMALLOC_PURGE_DELAY` (read by
/// mimalloc itself) wins.
pub fn tune() {
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_some() {
        return;
    }
    // SAFETY: mi_option_set writes one option's value; mimalloc reads options atomically and
    // allows setting them at any time.
    unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, PURGE_DELAY_MS as _) }
}

/// The allocator's purge delay now, in ms.
pub fn purge_delay_ms() -> i64 {
    // SAFETY: reads one option's value.
    unsafe { libmimalloc_sys::mi_option_get(MI_OPTION_PURGE_DELAY) as i64 }
}

/// Hands back what the allocator holds freed: mimalloc's pages waiting for their purge delay,
/// and what every glibc malloc arena holds free. Returns whether glibc released any memory
/// (mimalloc does not say). Each part does nothing where its allocator holds nothing.
pub fn trim() -> bool {
    // SAFETY: mi_collect(true) collects the calling thread's heap and purges what every arena
    // holds freed, under mimalloc's own locks; it may be called from any thread at any time.
    unsafe { libmimalloc_sys::mi_collect(true) };
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        extern "C" {
            fn malloc_trim(pad: usize) -> std::ffi::c_int;
        }
        // SAFETY: malloc_trim takes a byte count, works on malloc's own arenas under their
        // locks, and may be called from any thread at any time (glibc's malloc_trim(3)).
        unsafe { malloc_trim(0) == 1 }
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        false
    }
}

#[cfg(test)]
mod tests {
    /// Memory freed in a large block is handed back (glibc: the top of the heap, or whole
    /// pages in its middle), and a second trim with nothing freed since is harmless.
    #[test]
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    fn freed_memory_is_handed_back() {
        // Many small blocks (from the heap, not mapped one by one), then the first half freed:
        // free pages below live ones, which only a trim hands back.
        let mut blocks: Vec<Vec<u8>> = Vec::with_capacity(20_000);
        blocks.extend((0..20_000).map(|i| vec![i as u8; 4000]));
        for block in &mut blocks[..10_000] {
            *block = Vec::new();
        }
        let rss_kib = || -> u64 {
            let status = std::fs::read_to_string("/proc/self/status").unwrap();
            status.lines().find_map(|l| l.strip_prefix("VmRSS:")).and_then(|v| v.split_whitespace().next()).unwrap().parse().unwrap()
        };
        let before = rss_kib();
        assert!(super::trim(), "something was handed back");
        let after = rss_kib();
        // About 40 MB were freed; most of it goes back.
        assert!(after + 20_000 < before, "RSS {before} KiB before the trim, {after} KiB after");
        assert!(blocks[10_000..].iter().enumerate().all(|(i, b)| b.len() == 4000 && b[0] == (10_000 + i) as u8), "live memory is untouched");
        super::trim();
    }
}
