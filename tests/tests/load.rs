//! The `load` binary itself, in a reduced size (the full size is in the README's benchmarks):
//! it runs a whole deadline rush against the real server process and its last line reports an
//! exact end state.

use std::process::Command;

use serde_json::Value;

#[test]
fn the_load_binary_reports_an_exact_end_state() {
    let (phones, per_phone) = (24, 3);
    let out = Command::new(env!("CARGO_BIN_EXE_load"))
        .args(["--phones", &phones.to_string(), "--records-per-phone", &per_phone.to_string()])
        .args(["--phones-per-commune", "3", "--communes-per-district", "4", "--spread-ms", "300", "--seed", "7"])
        .output()
        .expect("the load binary runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "load failed:\n{stderr}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let last = stdout.lines().last().unwrap_or_else(|| panic!("no output; stderr:\n{stderr}"));
    let report: Value = serde_json::from_str(last).unwrap_or_else(|e| panic!("last line is not JSON ({e}): {last}"));
    assert_eq!(report["phones"], phones);
    assert_eq!(report["records"], phones * per_phone);
    assert_eq!(report["seed"], 7);
    for field in ["errors", "lost", "duplicates", "mismatched"] {
        assert_eq!(report[field], 0, "{field} in {report}\n{stderr}");
    }
    // Login, then three sync phases of one request each per phone at least.
    assert!(report["requests"].as_u64().unwrap() >= 4 * phones as u64, "{report}");
    assert_eq!(report["sync_calls"], 3 * phones);
    let (p50, p99) = (report["p50_ms"].as_f64().unwrap(), report["p99_ms"].as_f64().unwrap());
    assert!(p50 > 0.0 && p50 <= p99, "{report}");
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
}
