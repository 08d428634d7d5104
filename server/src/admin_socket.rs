//! The running server's admin socket: `DIR/admin.sock`, a Unix socket only the server's own user
//! may use (mode 0600). sled holds an exclusive lock on the store, so a command-line tool cannot
//! open it while the server runs; `gesync-server backup` asks the server over this socket instead,
//! and the server writes the backup with [`backup::write_backup`] from its own handle.
//!
//! Protocol: one JSON line each way. Request `{"op": "backup", "out": "/absolute/path"}`; answer
//! `{"entries": N}` or `{"error": "..."}`. Nothing else is offered: no record contents ever cross
//! this socket, and the backup file is written with the server's permissions.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};

use crate::backup;
use crate::db::Db;

/// File name of the socket inside the data directory.
pub const SOCKET_NAME: &str = "admin.sock";

/// Where the socket of the server using `data_dir` lives.
pub fn socket_path(data_dir: &Path) -> PathBuf {
    data_dir.join(SOCKET_NAME)
}

#[derive(Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
enum Request {
    Backup { out: PathBuf },
}

/// The listening socket; removes its file when dropped (the server stopped).
pub struct AdminSocket {
    path: PathBuf,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for AdminSocket {
    fn drop(&mut self) {
        self.task.abort();
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Listens on `DIR/admin.sock` for the server holding `db`. A socket file left by a server that
/// was killed is replaced (the store's lock, already held by us, proves no other server runs).
pub fn listen(db: Db, data_dir: &Path) -> Result<AdminSocket, String> {
    use std::os::unix::fs::PermissionsExt;
    let path = socket_path(data_dir);
    let _ = std::fs::remove_file(&path);
    let listener = tokio::net::UnixListener::bind(&path).map_err(|e| format!("cannot create the admin socket {}: {e}", path.display()))?;
    // Only the server's user may ask for backups.
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).map_err(|e| format!("cannot restrict the admin socket {}: {e}", path.display()))?;
    let task = tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let db = db.clone();
            tokio::spawn(async move {
                let (read, mut write) = stream.into_split();
                let mut line = String::new();
                // Requests are one short line; a longer one is cut (and then fails to parse).
                let mut reader = tokio::io::BufReader::new(read.take(64 * 1024));
                if reader.read_line(&mut line).await.is_err() {
                    return;
                }
                let answer = handle(db, &line).await;
                let _ = write.write_all(format!("{answer}\n").as_bytes()).await;
            });
        }
    });
    Ok(AdminSocket { path, task })
}

async fn handle(db: Db, line: &str) -> Value {
    let request: Request = match serde_json::from_str(line.trim()) {
        Ok(r) => r,
        Err(e) => return json!({"error": format!("bad admin request: {e}")}),
    };
    match request {
        Request::Backup { out } => {
            if !out.is_absolute() {
                return json!({"error": "the backup path must be absolute"});
            }
            tracing::info!("backup requested over the admin socket");
            match tokio::task::spawn_blocking(move || backup::write_backup(&db, &out)).await {
                Ok(Ok(n)) => json!({"entries": n}),
                Ok(Err(e)) => json!({"error": e}),
                Err(_) => json!({"error": "the backup task failed"}),
            }
        }
    }
}

/// Asks the server running on `data_dir` to write a backup to `out`; returns the entry count.
pub fn request_backup(data_dir: &Path, out: &Path) -> Result<u64, String> {
    let path = socket_path(data_dir);
    let out = absolute(out)?;
    let mut stream = std::os::unix::net::UnixStream::connect(&path)
        .map_err(|e| format!("the store in {} is in use, but its server does not answer on {} ({e})", data_dir.display(), path.display()))?;
    let request = serde_json::to_string(&Request::Backup { out }).expect("request serialises");
    stream.write_all(format!("{request}\n").as_bytes()).map_err(|e| format!("cannot talk to the server: {e}"))?;
    let mut answer = String::new();
    BufReader::new(stream).read_line(&mut answer).map_err(|e| format!("cannot talk to the server: {e}"))?;
    let answer: Value = serde_json::from_str(&answer).map_err(|_| "the server gave no answer to the backup request (see its log)".to_string())?;
    match (answer["entries"].as_u64(), answer["error"].as_str()) {
        (Some(n), _) => Ok(n),
        (None, Some(e)) => Err(e.to_string()),
        (None, None) => Err("the server gave an unexpected answer to the backup request".into()),
    }
}

/// `out` made absolute against the current directory (the server's may differ).
fn absolute(out: &Path) -> Result<PathBuf, String> {
    if out.is_absolute() {
        return Ok(out.to_path_buf());
    }
    let cwd = std::env::current_dir().map_err(|e| format!("cannot find the current directory: {e}"))?;
    Ok(cwd.join(out))
}
