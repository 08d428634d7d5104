//! Login and refresh throttling with decaying scores.
//!
//! Each attempt adds 1 to a score that leaks away at a steady rate, so a burst is remembered for
//! a while and then forgotten, whatever happens next (no counter that only a success resets).
//! Every score is charged **on admission**, before the password is hashed, so a burst of
//! concurrent attempts cannot all pass the check; a success takes its own charge back, so only
//! failures (and attempts still in flight) weigh: failures are slowed, successes are not.
//! Addresses are grouped as the connection limits group them: an IPv6 client is its /64.
//!
//! An attempt from a **proven device** (one that logged in as this account before, is not
//! revoked, and presents the device proof the server gave it then: `crate::auth::DeviceProofs`)
//! is held only to its own (account, device) score. Nobody else can charge that score: a
//! device id is not a secret (admins see it in the audit, reviewers in conflicts), the proof is.
//! So guesses at the account, from anywhere, never refuse the officer's own phone its password.
//!
//! Any other attempt is held to three scores:
//! - per (account, address): one place guessing one account; a success clears it.
//! - per account, across addresses: a distributed guess at one account. When it is over, an
//!   address that has not failed for this account may still try through a narrow lane of its
//!   own (`FRESH`): the officer's new phone is not locked out by guesses from four other
//!   places, and an attacker gains one try per two minutes per account from it.
//! - per address: a spray over many accounts from one place; generous, because an office, a
//!   NAT or a carrier puts many officers behind one address.

use std::collections::HashMap;
use std::net::IpAddr;
use parking_lot::Mutex;
use std::time::{Duration, Instant};

use crate::conn::client_group;

/// How one score is judged: `free` attempts pass, then each extra one costs `leak` of waiting;
/// the score leaks 1 per `leak`.
#[derive(Debug, Clone, Copy)]
struct Rule {
    free: f64,
    leak: Duration,
}

const PAIR: Rule = Rule { free: 5.0, leak: Duration::from_secs(60) };
const ACCOUNT: Rule = Rule { free: 20.0, leak: Duration::from_secs(30) };
const FRESH: Rule = Rule { free: 3.0, leak: Duration::from_secs(120) };
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
    Fresh(String),
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
        Key::Fresh(_) => FRESH,
        Key::Address(_) => ADDRESS,
        Key::Refresh(_) => REFRESH,
    }
}

/// Who a login attempt comes from, as far as the throttle is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Caller<'a> {
    /// A device of the account, not revoked, that presented its device proof.
    ProvenDevice(&'a str),
    /// Anyone else (a new phone, a new browser, a claimed device id without its proof).
    Anyone,
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
    /// The scores charged on admission.
    charged: Vec<Key>,
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

    fn score(scores: &HashMap<Key, Score>, k: &Key, now: Instant) -> f64 {
        scores.get(k).map(|s| s.now(rule(k), now)).unwrap_or(0.0)
    }

    /// How long `k` must wait before one more attempt passes its rule.
    fn wait(scores: &HashMap<Key, Score>, k: &Key, now: Instant) -> Duration {
        let r = rule(k);
        let over = Self::score(scores, k, now) + 1.0 - r.free;
        if over <= 0.0 {
            Duration::ZERO
        } else {
            r.leak.mul_f64(over).min(MAX_WAIT).max(Duration::from_secs(1))
        }
    }

    /// Admits a login attempt for `account` (a valid user name; case is folded here) from `ip`,
    /// or says how long to wait.
    pub fn admit(&self, account: &str, ip: IpAddr, from: Caller<'_>) -> Result<Attempt<'_>, Duration> {
        let account = account.to_lowercase();
        let ip = client_group(ip);
        let now = Instant::now();
        let mut scores = self.scores.lock();
        let charged = match from {
            Caller::ProvenDevice(device) => vec![Key::Device(account, device.to_string())],
            Caller::Anyone => {
                let pair = Key::Pair(account.clone(), ip);
                let mut keys = vec![pair.clone(), Key::Address(ip), Key::Account(account.clone())];
                let over = |k: &Key| Self::wait(&scores, k, now);
                if over(&keys[2]) > Duration::ZERO && Self::score(&scores, &pair, now) == 0.0 {
                    // The account is under a distributed guess; this address has not failed
                    // for it: the narrow lane.
                    keys[2] = Key::Fresh(account);
                }
                keys
            }
        };
        let wait = charged.iter().map(|k| Self::wait(&scores, k, now)).max().unwrap_or_default();
        if wait > Duration::ZERO {
            return Err(wait);
        }
        for k in &charged {
            Self::add(&mut scores, k.clone(), 1.0, now);
        }
        Ok(Attempt { throttle: self, charged })
    }

    /// A refresh from `ip` may go ahead, or must wait this long.
    pub fn admit_refresh(&self, ip: IpAddr) -> Result<(), Duration> {
        let scores = self.scores.lock();
        match Self::wait(&scores, &Key::Refresh(client_group(ip)), Instant::now()) {
            Duration::ZERO => Ok(()),
            wait => Err(wait),
        }
    }

    /// A refresh from `ip` presented a token that is unknown, expired or reused.
    pub fn refresh_failed(&self, ip: IpAddr) {
        let mut scores = self.scores.lock();
        Self::add(&mut scores, Key::Refresh(client_group(ip)), 1.0, Instant::now());
    }
}

impl Attempt<'_> {
    /// The password was right: the (account, address) or device score is cleared and every
    /// other charge taken back.
    pub fn succeeded(self) {
        let now = Instant::now();
        let mut scores = self.throttle.scores.lock();
        for k in self.charged {
            match k {
                Key::Pair(..) | Key::Device(..) => {
                    scores.remove(&k);
                }
                k => Throttle::add(&mut scores, k, -1.0, now),
            }
        }
    }

    /// The password was wrong (or the account unknown or disabled): the charges stay.
    pub fn failed(self) {}

    /// The attempt was never judged (the server was too busy to hash it): every charge is
    /// taken back, so that a busy server does not count its own refusals against anyone.
    pub fn withdrawn(self) {
        let now = Instant::now();
        let mut scores = self.throttle.scores.lock();
        for k in self.charged {
            Throttle::add(&mut scores, k, -1.0, now);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(n: u8) -> IpAddr {
        IpAddr::from([10, 0, 0, n])
    }

    const ANYONE: Caller<'static> = Caller::Anyone;

    #[test]
    fn one_place_guessing_one_account_waits_and_a_burst_is_counted_on_admission() {
        let t = Throttle::default();
        // Admitted but not yet answered (a concurrent burst): each still counts.
        let burst: Vec<_> = (0..5).map(|_| t.admit("officer", ip(1), ANYONE).expect("free attempts")).collect();
        let wait = t.admit("officer", ip(1), ANYONE).err().expect("the sixth waits");
        assert!(wait >= Duration::from_secs(50) && wait <= Duration::from_secs(61), "{wait:?}");
        burst.into_iter().for_each(Attempt::failed);
        // Another account from the same place, and the same account from elsewhere, go on.
        t.admit("other", ip(1), ANYONE).unwrap().succeeded();
        t.admit("officer", ip(2), ANYONE).unwrap().succeeded();
    }

    #[test]
    fn many_failures_from_one_address_do_not_lock_out_its_other_officers() {
        let t = Throttle::default();
        for n in 0..60 {
            t.admit(&format!("guess{n}"), ip(1), ANYONE).unwrap().failed();
        }
        t.admit("officer", ip(1), ANYONE).expect("an officer behind the same NAT").succeeded();
    }

    /// Issue "Security, second review", item 7: the address is charged on admission, so a burst
    /// of names from one place stops at the rule, not after hashing every one of them.
    #[test]
    fn a_spray_from_one_address_is_stopped_on_admission_and_ipv6_counts_by_its_64() {
        let t = Throttle::default();
        let burst: Vec<_> = (0..100).map(|n| t.admit(&format!("name{n}"), ip(1), ANYONE).expect("the free ones")).collect();
        assert!(t.admit("name-x", ip(1), ANYONE).is_err(), "the 101st in flight from one address");
        assert!(t.admit("name-x", ip(2), ANYONE).is_ok(), "another address");
        // Successes take their charge back: an office's logins never add up.
        burst.into_iter().for_each(Attempt::succeeded);
        t.admit("name-y", ip(1), ANYONE).expect("after the successes").succeeded();
        // One IPv6 subscriber is one /64, whatever the interface bits.
        let v6 = |host: u16| IpAddr::from([0x2001, 0xdb8, 1, 2, 0, 0, 0, host]);
        for n in 0..100u16 {
            t.admit(&format!("v6-{n}"), v6(n), ANYONE).unwrap().failed();
        }
        assert!(t.admit("v6-x", v6(999), ANYONE).is_err(), "a new interface id in the same /64");
        assert!(t.admit("v6-x", IpAddr::from([0x2001, 0xdb8, 1, 3, 0, 0, 0, 1]), ANYONE).is_ok(), "the next /64");
    }

    /// Issue "Security, second review", item 4 (a): guesses from four places held the account
    /// shut for the owner's new phone too.
    #[test]
    fn a_distributed_guess_leaves_a_narrow_lane_for_a_new_address() {
        let t = Throttle::default();
        for n in 0..4 {
            for _ in 0..5 {
                t.admit("officer", ip(n), ANYONE).unwrap().failed();
            }
        }
        assert!(t.admit("officer", ip(0), ANYONE).is_err(), "a guessing address goes on waiting");
        t.admit("officer", ip(50), ANYONE).expect("the owner's new phone from a new address").succeeded();
        // The lane is narrow: new addresses get three tries between them, then wait.
        for n in 60..63 {
            t.admit("officer", ip(n), ANYONE).expect("the lane").failed();
        }
        assert!(t.admit("officer", ip(70), ANYONE).is_err(), "the lane is spent");
    }

    /// Issue "Security, second review", item 4 (b): the exemption named a device id, which is no
    /// secret; now it needs the device's proof, and only attempts with the proof charge it.
    #[test]
    fn only_a_proven_device_is_spared_and_nobody_else_can_charge_it() {
        let t = Throttle::default();
        for n in 0..20 {
            t.admit("officer", ip(n), ANYONE).unwrap().failed();
        }
        // Five more guesses naming the phone's device id, without its proof, are anyone's.
        for _ in 0..5 {
            let _ = t.admit("officer", ip(7), ANYONE).map(Attempt::failed);
        }
        assert!(t.admit("officer", ip(7), ANYONE).is_err(), "an unproven device behind the guessers' address waits");
        t.admit("officer", ip(101), Caller::ProvenDevice("phone-1")).expect("the officer's own phone").succeeded();
        t.admit("officer", ip(7), Caller::ProvenDevice("phone-1")).expect("even behind the guessers' address").succeeded();
        // The phone's own wrong passwords are its own to wait for.
        for _ in 0..5 {
            t.admit("officer", ip(101), Caller::ProvenDevice("phone-1")).unwrap().failed();
        }
        assert!(t.admit("officer", ip(101), Caller::ProvenDevice("phone-1")).is_err());
    }

    #[test]
    fn a_withdrawn_attempt_costs_nothing() {
        let t = Throttle::default();
        for _ in 0..50 {
            t.admit("officer", ip(1), ANYONE).unwrap().withdrawn();
        }
        t.admit("officer", ip(1), ANYONE).expect("fifty attempts the server was too busy to judge").succeeded();
    }

    #[test]
    fn scores_leak_away() {
        let t = Throttle::default();
        let old = Instant::now() - Duration::from_secs(10 * 60);
        t.scores.lock().insert(Key::Pair("officer".into(), ip(1)), Score { value: 8.0, at: old });
        t.admit("officer", ip(1), ANYONE).expect("8 failures ten minutes ago have leaked away").succeeded();
        for _ in 0..30 {
            t.refresh_failed(ip(3));
        }
        assert!(t.admit_refresh(ip(3)).is_err());
        assert!(t.admit_refresh(ip(4)).is_ok());
    }
}
