//! # heap-trim
//!
//! One function, [`trim`]: asks glibc's malloc to hand back to the system the memory its arenas
//! hold freed (`malloc_trim(3)`). It is a crate of its own so that the crates that use it keep
//! `#![forbid(unsafe_code)]`: this is the workspace's one call into C that is not behind a
//! dependency's safe API.

/// Hands back what every malloc arena holds freed; returns whether any memory was released.
/// On other platforms and C libraries it does nothing and returns `false`.
pub fn trim() -> bool {
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
