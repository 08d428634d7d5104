//! `gesync-server`: see `gesync_server::cli`.
#![forbid(unsafe_code)]

fn main() {
    gesync_server::cli::main();
}
