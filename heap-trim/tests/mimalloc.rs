//! The allocator as the server runs it: mimalloc as the global allocator, tuned at launch.

#[global_allocator]
static ALLOCATOR: heap_trim::Allocator = heap_trim::Allocator;

fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status.lines().find_map(|l| l.strip_prefix("VmRSS:")).and_then(|v| v.split_whitespace().next()).unwrap().parse().unwrap()
}

/// `tune` sets the purge delay the server runs with (mimalloc's own default is 1 s), and a
/// trim after a burst hands back what was freed while live memory stays as it was.
#[test]
fn tuned_and_freed_memory_is_handed_back() {
    assert_ne!(heap_trim::purge_delay_ms(), heap_trim::PURGE_DELAY_MS, "mimalloc's default differs from the server's setting");
    heap_trim::tune();
    assert_eq!(heap_trim::purge_delay_ms(), heap_trim::PURGE_DELAY_MS);

    // Many small blocks, then the first half freed from another thread (as a request's
    // buffers are freed by whichever worker drops them), nothing allocated since.
    let mut blocks: Vec<Vec<u8>> = Vec::with_capacity(20_000);
    blocks.extend((0..20_000).map(|i| vec![i as u8; 4000]));
    let freed: Vec<Vec<u8>> = blocks.drain(..10_000).collect();
    std::thread::spawn(move || drop(freed)).join().unwrap();
    let before = rss_kib();
    std::thread::sleep(std::time::Duration::from_millis(50)); // past the purge delay
    heap_trim::trim();
    let after = rss_kib();
    // About 40 MB were freed; most of it goes back.
    assert!(after + 20_000 < before, "RSS {before} KiB before the trim, {after} KiB after");
    assert!(blocks.iter().enumerate().all(|(i, b)| b.len() == 4000 && b[0] == (10_000 + i) as u8), "live memory is untouched");
}
