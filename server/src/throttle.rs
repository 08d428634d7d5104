//! Login and refresh throttling with decaying scores.
//!
//! Each failed attempt adds 1 to a score that leaks away at a steady rate, so a burst is
//! remembered for a while and then forgotten, whatever happens next (no counter that only a
//! success resets). Three scores guard a login:
//! - per (account, address): one place guessing one account. Counted **on admission**, before
//!   the password is hashed, so a burst of concurrent guesses cannot all pass the check;
//!   a success clears it.
//! - per account, across addresses: a distributed guess at one account; also counted on
//!   admission (a success takes its own attempt back).
//! - per address: a spray over many accounts from one place. Counted on failure only, and
//!   generous, because an office, a NAT or a carrier puts many officers behind one address:
//!   one bad actor there must not lock the others out.
//!
//! A login from a **known device** of the account (a device that logged in as this user before
//! and is not revoked) is held only to its own (account, device) score: an attacker guessing the
//! account from elsewhere, or from behind the officer's own carrier address, does not refuse the
//! officer's own phone its correct password.

use std::collections::HashMap;
use std::net::IpAddr;
use parking_lot::Mutex;
use std::time::{Duration, Instant};

/// How one score is judged: `free` failures pass, then each extra one costs `leak` of waiting;
/// the score leaks 1 per `leak`.
#[derive(Debug, Clone, Copy)]
struct Rule {
    free: f64,
    leak: Duration,
}

const PAIR: Rule = Rule { free: 5.0, leak: Duration::from_secs(60) };
const ACCOUNT: Rule = Rule { free: 20.0, leak: Duration::from_secs(30) };
const ADDRESS: Rule = Rule { free: 100.0, leak: Duration::from_secs(3) };
const REFRESH: Rule = Rule { free: 30.0, leak: Duration::from_secs(2) };
/// The longest wait ever asked.
const MAX_WAIT: Duration = Duration::from_secs(15 * 60);
/// Scores kept at most; past it, the ones that have leaked away are forgotten.
const MAX_ENTRIES: usize = 100_000;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Key {
    Pair(String, IpAddr),
    Device(String, String),
    Account(String),
    Address(IpAddr),
    Refresh(IpAddr),
}

#[derive(Debug, Clone, Copy)]
struct Score {
    value: f64,
    at: Instant,
}

impl Score {
    fn now(self, rule: Rule, now: Instant) -> f64 {
        let leaked = now.duration_since(self.at).as_secs_f64() / rule.leak.as_secs_f64();
        (self.value - leaked).max(0.0)
    }
}

fn rule(k: &Key) -> Rule {
    match k {
        Key::Pair(..) | Key::Device(..) => PAIR,
        Key::Account(_) => ACCOUNT,
        Key::Address(_) => ADDRESS,
        Key::Refresh(_) => REFRESH,
    }
}

/// The scores (in memory: a restart forgets them, which only ever lets a few more attempts in).
#[derive(Default)]
pub struct Throttle {
    scores: Mutex<HashMap<Key, Score>>,
}

/// An admitted login attempt: report how it went. Dropped unreported (the request was
/// abandoned), it stays counted as a failure.
#[must_use]
pub struct Attempt<'a> {
    throttle: &'a Throttle,
    account: String,
    pair: Key,
    ip: IpAddr,
}

impl Throttle {
    fn add(scores: &mut HashMap<Key, Score>, k: Key, delta: f64, now: Instant) {
        if scores.len() > MAX_ENTRIES {
            scores.retain(|k, s| s.now(rule(k), now) > 0.0);
        }
        let r = rule(&k);
        let e = scores.entry(k).or_insert(Score { value: 0.0, at: now });
        *e = Score { value: (e.now(r, now) + delta).max(0.0), at: now };
    }

    /// How long `k` must wait before one more attempt passes its rule.
    fn wait(scores: &HashMap<Key, Score>, k: &Key, now: Instant) -> Duration {
        let r = rule(k);
        let score = scores.get(k).map(|s| s.now(r, now)).unwrap_or(0.0);
        let over = score + 1.0 - r.free;
        if over <= 0.0 {
            Duration::ZERO
        } else {
            r.leak.mul_f64(over).min(MAX_WAIT).max(Duration::from_secs(1))
        }
    }

    /// Admits a login attempt for `account` (a valid user name; case is folded here) from `ip`,
    /// or says how long to wait. `known_device`: the device the attempt names, when it logged in
    /// as this account before and is not revoked.
    pub fn admit(&self, account: &str, ip: IpAddr, known_device: Option<&str>) -> Result<Attempt<'_>, Duration> {
        let account = account.to_lowercase();
        let now = Instant::now();
        let mut scores = self.scores.lock();
        let pair = match known_device {
            Some(device) => Key::Device(account.clone(), device.to_string()),
            None => Key::Pair(account.clone(), ip),
        };
        let mut keys = vec![pair.clone()];
        if known_device.is_none() {
            keys.push(Key::Account(account.clone()));
            keys.push(Key::Address(ip));
        }
        let wait = keys.iter().map(|k| Self::wait(&scores, k, now)).max().unwrap_or_default();
        if wait > Duration::ZERO {
            return Err(wait);
        }
        Self::add(&mut scores, pair.clone(), 1.0, now);
        Self::add(&mut scores, Key::Account(account.clone()), 1.0, now);
        Ok(Attempt { throttle: self, account, pair, ip })
    }

    /// A refresh from `ip` may go ahead, or must wait this long.
    pub fn admit_refresh(&self, ip: IpAddr) -> Result<(), Duration> {
        let scores = self.scores.lock();
        match Self::wait(&scores, &Key::Refresh(ip), Instant::now()) {
            Duration::ZERO => Ok(()),
            wait => Err(wait),
        }
    }

    /// A refresh from `ip` presented a token that is unknown, expired or reused.
    pub fn refresh_failed(&self, ip: IpAddr) {
        let mut scores = self.scores.lock();
        Self::add(&mut scores, Key::Refresh(ip), 1.0, Instant::now());
    }
}

impl Attempt<'_> {
    /// The password was right: the pair's score is cleared and the account's attempt taken back.
    pub fn succeeded(self) {
        let now = Instant::now();
        let mut scores = self.throttle.scores.lock();
        scores.remove(&self.pair);
        Throttle::add(&mut scores, Key::Account(self.account.clone()), -1.0, now);
    }

    /// The password was wrong (or the account unknown or disabled): the address is charged too.
    pub fn failed(self) {
        let mut scores = self.throttle.scores.lock();
        Throttle::add(&mut scores, Key::Address(self.ip), 1.0, Instant::now());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(n: u8) -> IpAddr {
        IpAddr::from([10, 0, 0, n])
    }

    #[test]
    fn one_place_guessing_one_account_waits_and_a_burst_is_counted_on_admission() {
        let t = Throttle::default();
        // Admitted but not yet answered (a concurrent burst): each still counts.
        let burst: Vec<_> = (0..5).map(|_| t.admit("officer", ip(1), None).expect("free attempts")).collect();
        let wait = t.admit("officer", ip(1), None).err().expect("the sixth waits");
        assert!(wait >= Duration::from_secs(50) && wait <= Duration::from_secs(61), "{wait:?}");
        burst.into_iter().for_each(Attempt::failed);
        // Another account from the same place, and the same account from elsewhere, go on.
        t.admit("other", ip(1), None).unwrap().succeeded();
        t.admit("officer", ip(2), None).unwrap().succeeded();
    }

    #[test]
    fn many_failures_from_one_address_do_not_lock_out_its_other_officers() {
        let t = Throttle::default();
        for n in 0..60 {
            t.admit(&format!("guess{n}"), ip(1), None).unwrap().failed();
        }
        t.admit("officer", ip(1), None).expect("an officer behind the same NAT").succeeded();
    }

    #[test]
    fn a_distributed_guess_at_one_account_spares_its_known_devices() {
        let t = Throttle::default();
        for n in 0..20 {
            t.admit("officer", ip(n), None).unwrap().failed();
        }
        assert!(t.admit("officer", ip(100), None).is_err(), "a new device must wait");
        t.admit("officer", ip(101), Some("phone-1")).expect("the officer's own phone").succeeded();
        // Even from the address the guesses come from.
        for _ in 0..5 {
            let _ = t.admit("officer", ip(7), None).map(Attempt::failed);
        }
        t.admit("officer", ip(7), Some("phone-1")).expect("the officer's phone behind the same NAT").succeeded();
    }

    #[test]
    fn scores_leak_away() {
        let t = Throttle::default();
        let old = Instant::now() - Duration::from_secs(10 * 60);
        t.scores.lock().insert(Key::Pair("officer".into(), ip(1)), Score { value: 8.0, at: old });
        t.admit("officer", ip(1), None).expect("8 failures ten minutes ago have leaked away").succeeded();
        for _ in 0..30 {
            t.refresh_failed(ip(3));
        }
        assert!(t.admit_refresh(ip(3)).is_err());
        assert!(t.admit_refresh(ip(4)).is_ok());
    }
}
