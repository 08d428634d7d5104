//! When the server hands the memory its allocator holds freed back to the system.
//!
//! The server runs on mimalloc (`heap-trim`'s `Allocator`), which hands a freed page back
//! [`heap_trim::PURGE_DELAY_MS`] after it was freed, but only when some thread next calls into
//! the allocator: after a burst the server may have no thread that does. Once the server has
//! been quiet for [`QUIET`] after some work, a thread of its own asks the allocator once to hand
//! back everything it holds freed ([`heap_trim::trim`]). Trimming every 5 s whatever the server
//! does was tried first (on glibc's malloc, which the server ran on until 2026-12-05): in
//! `bench-sync` on PostgreSQL it averaged 2,350 records/s of ingest in four runs, against 2,700
//! in three runs without (the runs overlap), since what is handed back during a burst is asked
//! for again at once.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// How long the server must have been quiet before freed memory is handed back.
pub const QUIET: Duration = Duration::from_secs(2);

/// Milliseconds since [`start`] at the last piece of work (0: none since the last trim).
static LAST_WORK_MS: AtomicU64 = AtomicU64::new(0);

fn start() -> Instant {
    static START: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    *START.get_or_init(Instant::now)
}

/// Notes that the server is working (a request ends): memory is handed back only once it has
/// been quiet for [`QUIET`] since.
pub fn worked() {
    LAST_WORK_MS.store(start().elapsed().as_millis().max(1) as u64, Ordering::Relaxed);
}

/// Sets the allocator's options ([`heap_trim::tune`]) and starts the thread that hands freed
/// memory back after each burst of work (see [`heap_trim::trim`]), unless
/// `GESYNC_MALLOC_TRIM=0`.
pub fn return_freed_memory() {
    heap_trim::tune();
    if std::env::var("GESYNC_MALLOC_TRIM").is_ok_and(|v| v == "0") {
        return;
    }
    static STARTED: std::sync::Once = std::sync::Once::new();
    STARTED.call_once(|| {
        let _ = std::thread::Builder::new().name("gesync-heap-trim".into()).spawn(|| loop {
            std::thread::sleep(QUIET / 4);
            let last = LAST_WORK_MS.load(Ordering::Relaxed);
            if !trim_due(last, start().elapsed().as_millis() as u64) {
                continue;
            }
            // Work noted since the load wins: no trim now, one after it.
            if LAST_WORK_MS.compare_exchange(last, 0, Ordering::Relaxed, Ordering::Relaxed).is_ok() {
                heap_trim::trim();
            }
        });
    });
}

/// Whether to trim at `now` (ms since [`start`]) with the last work noted at `last` (0: none
/// since the last trim): once, after [`QUIET`] with no work.
fn trim_due(last: u64, now: u64) -> bool {
    last != 0 && now.saturating_sub(last) >= QUIET.as_millis() as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_is_handed_back_once_after_a_quiet_spell() {
        assert!(!trim_due(0, 60_000), "no work since the last trim: nothing to hand back");
        assert!(!trim_due(10_000, 11_999), "still busy");
        assert!(trim_due(10_000, 12_000));
        assert!(trim_due(10_000, 10_000 + QUIET.as_millis() as u64 * 10));
    }
}
