//! The `load` binary itself, in a reduced size (the full size is in the README's benchmarks):
//! it runs a whole deadline rush against the real server process and its last line reports an
//! exact end state. And `bench-record`, which splits a created record's cost by layer.

use std::process::Command;

use serde_json::Value;

#[test]
fn the_load_binary_reports_an_exact_end_state() {
    let (phones, per_phone) = (24, 3);
    let (report, stderr) = run_load(phones, per_phone, &[]);
    assert_eq!(report["phones"], phones);
    assert_eq!(report["records"], phones * per_phone);
    assert_eq!(report["seed"], 7);
    assert_eq!(report["store_in_memory"], false);
    for field in ["errors", "lost", "duplicates", "mismatched"] {
        assert_eq!(report[field], 0, "{field} in {report}\n{stderr}");
    }
    // Login, then three sync phases of one request each per phone at least.
    assert!(report["requests"].as_u64().unwrap() >= 4 * phones as u64, "{report}");
    assert_eq!(report["sync_calls"], 3 * phones);
    let (p50, p99) = (report["p50_ms"].as_f64().unwrap(), report["p99_ms"].as_f64().unwrap());
    assert!(p50 > 0.0 && p50 <= p99, "{report}");
    // The server's own time for the same sync requests, from its histogram.
    assert!(report["server_sync_p99_ms"].as_f64().unwrap() > 0.0, "{report}");
    let within = report["server_sync_within_1s"].as_f64().unwrap();
    assert!(within > 0.0 && within <= 1.0, "{report}");
    assert!(stderr.contains("server's own time for these sync requests: p99"), "{stderr}");
    assert!(report["server_rss_mb"].as_u64().unwrap() > 0, "{report}");
    // Both processes' CPU during the sync phases is reported (Linux /proc).
    assert!(report["sync_cpu_s"]["server"].as_f64().unwrap() > 0.0, "{report}");
    assert!(report["sync_cpu_s"]["phones"].as_f64().unwrap() > 0.0, "{report}");
    assert!(stderr.contains("seed 7"), "the seed is printed:\n{stderr}");
    // The push-only phases: one phone a commune made as many records again (nothing delivered),
    // then one more each, and the end state above was checked with them.
    let communes = report["communes"].as_u64().unwrap();
    assert_eq!(communes, (phones / 3) as u64);
    let push_only = &report["server_cpu_us"]["push_only"];
    assert_eq!(push_only["pushed"], communes * per_phone as u64, "{report}");
    assert_eq!(push_only["delivered"], 0, "{report}");
    assert!(push_only["per_record"].is_number() && push_only["per_write_request"].is_number(), "{report}");
    let total = phones * per_phone + communes as usize * (per_phone + 1);
    assert!(stderr.contains(&format!("checked {total} server records")), "every record, those of the push-only phase too:\n{stderr}");
    assert!(stderr.contains(&format!("the store reopens with {total} records")), "{stderr}");
}

/// `--store-in-memory`: the server serves a copy of the seeded store from memory (the seeded
/// accounts log in), the same exact end state is checked over the API, and no store is reopened.
#[test]
fn the_load_binary_on_a_store_in_memory_checks_the_end_state_over_the_api_and_reopens_nothing() {
    let (phones, per_phone) = (12, 2);
    let (report, stderr) = run_load(phones, per_phone, &["--store-in-memory"]);
    assert_eq!(report["store_in_memory"], true);
    for field in ["errors", "lost", "duplicates", "mismatched"] {
        assert_eq!(report[field], 0, "{field} in {report}\n{stderr}");
    }
    let communes = report["communes"].as_u64().unwrap() as usize;
    let total = phones * per_phone + communes * (per_phone + 1);
    assert!(stderr.contains(&format!("checked {total} server records")), "{stderr}");
    assert!(stderr.contains("its store was in memory, so there is none to reopen"), "{stderr}");
    assert!(!stderr.contains("the store reopens"), "{stderr}");
}

/// `--store-in-memory` copies the embedded store; on PostgreSQL it is one line and exit 1.
#[test]
fn the_load_binary_refuses_a_store_in_memory_on_postgresql() {
    let out = Command::new(env!("CARGO_BIN_EXE_load"))
        .args(["--phones", "3", "--store-in-memory", "--database", "postgres://nobody@127.0.0.1:1/none"])
        .output()
        .expect("the load binary runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.trim_end().ends_with("error: --store-in-memory copies the embedded store; it does not take --database"), "{stderr}");
}

/// `bench-record` takes every record through Automerge, the core and the data layer (in memory
/// and on sled), accepted each time (else it exits 1), and reports each step of both kinds.
#[test]
fn the_record_benchmark_reports_every_layer_for_both_kinds_of_record() {
    let out = Command::new(env!("CARGO_BIN_EXE_bench-record")).args(["--records", "40", "--seed", "3"]).output().expect("bench-record runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "bench-record failed:\n{stderr}");
    assert!(stderr.contains("seed 3"), "the seed is printed:\n{stderr}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let report: Value = serde_json::from_str(stdout.lines().last().expect("a JSON line")).expect("the last line is JSON");
    for kind in ["load_case", "with_notes"] {
        let r = &report[kind];
        let us = |layer: &str, step: &str| r[layer][step].as_f64().unwrap_or_else(|| panic!("{kind}.{layer}.{step} in {report}"));
        for step in ["load_us", "inspect_us", "save_us", "drop_us", "hydrate_us"] {
            assert!(us("automerge", step) > 0.0, "{kind}: {step} in {report}");
        }
        assert!(us("core", "merge_us") > 0.0 && us("core", "decide_us") > 0.0, "{report}");
        for store in ["memory", "sled"] {
            let layer = &r["data_layer"][store];
            assert!(layer["wall_us"].as_f64().unwrap() > 0.0, "{kind} on {store}: {report}");
            assert!(layer["cpu_us"].is_number(), "{kind} on {store}: {report}");
            assert_eq!(layer["per_request"], 20, "{report}");
        }
    }
    // The notes make the second kind's documents the larger.
    assert!(report["with_notes"]["document_bytes"].as_u64() > report["load_case"]["document_bytes"].as_u64(), "{report}");
}

/// Runs `load` with `phones` phones of `per_phone` records, three a commune, seed 7, and
/// `extra` flags; returns its JSON report (its last line on stdout) and its stderr.
fn run_load(phones: usize, per_phone: usize, extra: &[&str]) -> (Value, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_load"))
        .args(["--phones", &phones.to_string(), "--records-per-phone", &per_phone.to_string()])
        .args(["--phones-per-commune", "3", "--communes-per-district", "4", "--spread-ms", "300", "--seed", "7"])
        .args(extra)
        .output()
        .expect("the load binary runs");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "load failed:\n{stderr}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let last = stdout.lines().last().unwrap_or_else(|| panic!("no output; stderr:\n{stderr}"));
    let report: Value = serde_json::from_str(last).unwrap_or_else(|e| panic!("last line is not JSON ({e}): {last}"));
    (report, stderr)
}
