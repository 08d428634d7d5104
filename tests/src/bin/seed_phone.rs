//! A phone that records N cases and syncs them (for the app's browser tests and demos):
//! `seed-phone --server URL --username U --commune CODE --count N` (password on stdin).

use client_sdk::{Client, FixedKey, StoreKey};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let arg = |name: &str| args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).cloned().unwrap_or_else(|| die(&format!("{name} is required")));
    let (server, user, commune) = (arg("--server"), arg("--username"), arg("--commune"));
    let count: usize = arg("--count").parse().unwrap_or_else(|_| die("--count takes a number"));
    let mut password = String::new();
    std::io::stdin().read_line(&mut password).unwrap_or_else(|e| die(&e.to_string()));
    let dir = tempfile::tempdir().unwrap_or_else(|e| die(&e.to_string()));
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap_or_else(|e| die(&e.to_string()));
    let mut phone = Client::open(dir.path(), FixedKey(StoreKey::random())).unwrap_or_else(|e| die(&e.to_string()));
    rt.block_on(phone.login(&server, &user, password.trim_end(), None)).unwrap_or_else(|e| die(&e.to_string()));
    for i in 0..count {
        let (kind, record) = tests::fleet::record(i, &commune);
        phone.create(kind, &record).unwrap_or_else(|e| die(&e.to_string()));
    }
    let report = rt.block_on(phone.sync(|_| {})).unwrap_or_else(|e| die(&e.to_string()));
    println!("{}", serde_json::json!({"created": count, "pushed": report.pushed, "rejected": report.rejected}));
}

fn die(message: &str) -> ! {
    eprintln!("error: {message}");
    std::process::exit(1)
}
