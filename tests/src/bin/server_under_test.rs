//! The `gesync-server` program, built in the test package (see Cargo.toml).
fn main() {
    gesync_server::cli::main();
}
