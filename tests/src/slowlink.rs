//! A slow, dropping link on loopback: a TCP proxy that carries each direction at a set rate,
//! delays every new connection (the round trips of TCP and TLS set-up on 2G), and cuts every
//! connection a fixed time after it opened, as an EDGE link at the edge of coverage does
//! (`../shared/field-link.md`). It counts the bytes it delivered each way.
//!
//! Rates are per link, shared by all its connections (one phone's radio), and each chunk is
//! delivered only once its transmission time has passed, so a cut loses what was still in flight.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;

/// The link's figures.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Link {
    /// Server → phone, bytes per second.
    pub down: f64,
    /// Phone → server, bytes per second.
    pub up: f64,
    /// Added before a new connection carries its first byte.
    pub connect_delay: Duration,
    /// Every connection is cut this long after it opened.
    pub cut_every: Option<Duration>,
}

impl Link {
    /// The project's reference link: EDGE at the edge of coverage.
    pub const EDGE: Link = Link { down: 8_000.0, up: 4_000.0, connect_delay: Duration::from_millis(600), cut_every: Some(Duration::from_secs(30)) };

    /// Seconds the bytes alone need on this link.
    pub fn seconds_for(&self, up: u64, down: u64) -> f64 {
        up as f64 / self.up + down as f64 / self.down
    }

    pub fn describe(&self) -> String {
        let cut = self.cut_every.map(|c| format!("cut every {} s", c.as_secs_f64())).unwrap_or_else(|| "no cuts".into());
        // 8 KB/s, 1.5 KB/s: no needless ".0", no rounding away of a half.
        let kb = |b: f64| format!("{}", (b / 100.0).round() / 10.0);
        format!("{} KB/s down, {} KB/s up, {:.1} s per connection, {cut}", kb(self.down), kb(self.up), self.connect_delay.as_secs_f64())
    }
}

/// What crossed the link.
#[derive(Debug, Default)]
pub struct Stats {
    pub up: AtomicU64,
    pub down: AtomicU64,
    pub connections: AtomicU64,
    pub cuts: AtomicU64,
}

impl Stats {
    /// (up, down) bytes delivered.
    pub fn get(&self) -> (u64, u64) {
        (self.up.load(Ordering::Relaxed), self.down.load(Ordering::Relaxed))
    }

    /// Zeroes every count (a benchmark starts its clock).
    pub fn reset(&self) {
        for c in [&self.up, &self.down, &self.connections, &self.cuts] {
            c.store(0, Ordering::Relaxed);
        }
    }
}

/// A running slow link in front of a server; stops when dropped.
pub struct SlowLink {
    pub addr: SocketAddr,
    pub stats: Arc<Stats>,
    task: tokio::task::JoinHandle<()>,
}

impl SlowLink {
    /// Starts the link in front of `target`.
    pub async fn start(target: SocketAddr, link: Link) -> SlowLink {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let stats = Arc::new(Stats::default());
        let (down, up) = (Arc::new(Pace::new(link.down)), Arc::new(Pace::new(link.up)));
        let s = stats.clone();
        let task = tokio::spawn(async move {
            while let Ok((phone, _)) = listener.accept().await {
                let (s, down, up) = (s.clone(), down.clone(), up.clone());
                tokio::spawn(async move {
                    let opened = Instant::now();
                    s.connections.fetch_add(1, Ordering::Relaxed);
                    tokio::time::sleep(link.connect_delay).await;
                    let Ok(server) = TcpStream::connect(target).await else { return };
                    let _ = server.set_nodelay(true);
                    let (pr, pw) = phone.into_split();
                    let (sr, sw) = server.into_split();
                    let both = async {
                        tokio::join!(carry(pr, sw, &up, &s.up), carry(sr, pw, &down, &s.down));
                    };
                    match link.cut_every {
                        Some(cut) => tokio::select! {
                            () = both => {}
                            () = tokio::time::sleep_until(opened + cut) => {
                                // Dropping both halves of both sockets: the connection is gone.
                                s.cuts.fetch_add(1, Ordering::Relaxed);
                            }
                        },
                        None => both.await,
                    }
                });
            }
        });
        SlowLink { addr, stats, task }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for SlowLink {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// One direction's rate, shared by the link's connections.
struct Pace {
    bytes_per_s: f64,
    /// When the radio is free to start sending the next chunk.
    free_at: Mutex<Instant>,
}

impl Pace {
    fn new(bytes_per_s: f64) -> Pace {
        Pace { bytes_per_s, free_at: Mutex::new(Instant::now()) }
    }

    /// Waits until `n` bytes have been transmitted after whatever was queued before them.
    async fn transmit(&self, n: usize) {
        let done = {
            let mut free = self.free_at.lock().unwrap();
            let start = (*free).max(Instant::now());
            *free = start + Duration::from_secs_f64(n as f64 / self.bytes_per_s);
            *free
        };
        tokio::time::sleep_until(done).await;
    }
}

/// Carries one direction until it ends, chunk by chunk at the link's rate.
async fn carry(mut from: OwnedReadHalf, mut to: OwnedWriteHalf, pace: &Pace, count: &AtomicU64) {
    let mut buf = vec![0u8; 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        pace.transmit(n).await;
        if to.write_all(&buf[..n]).await.is_err() {
            break;
        }
        count.fetch_add(n as u64, Ordering::Relaxed);
    }
    let _ = to.shutdown().await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_link_keeps_its_rate_and_cuts_on_time() {
        // An echo server behind a 20 KB/s link cut after 1 s: ~20 KB pass, then the cut.
        let echo = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let target = echo.local_addr().unwrap();
        tokio::spawn(async move {
            let (s, _) = echo.accept().await.unwrap();
            let (mut r, mut w) = s.into_split();
            let _ = tokio::io::copy(&mut r, &mut w).await;
        });
        let link = Link { down: 20_000.0, up: 1_000_000.0, connect_delay: Duration::from_millis(100), cut_every: Some(Duration::from_secs(1)) };
        let slow = SlowLink::start(target, link).await;
        let mut phone = TcpStream::connect(slow.addr).await.unwrap();
        let started = Instant::now();
        phone.write_all(&vec![7u8; 100_000]).await.unwrap();
        let mut got = 0usize;
        let mut buf = vec![0u8; 4096];
        while let Ok(n) = phone.read(&mut buf).await {
            if n == 0 {
                break;
            }
            got += n;
        }
        let took = started.elapsed();
        assert!((12_000..=22_000).contains(&got), "{got} bytes came through in {took:?}");
        assert!(took >= Duration::from_millis(950) && took < Duration::from_secs(3), "{took:?}");
        assert_eq!(slow.stats.cuts.load(Ordering::Relaxed), 1);
        assert_eq!(slow.stats.get().1, got as u64);
    }
}
