//! The page contexts this server keeps for phones on a slow link
//! (`sync_protocol::wire::FLAG_PAGE_CONTEXT`): the tail of an answer that has more to come, or
//! of a request that pushed, so that the next page can be compressed against it. Held in memory
//! only, at most [`PER_DEVICE`] a device, [`BUDGET`] bytes in all and [`MAX_AGE`], the oldest
//! dropped first. A context this process does not hold (dropped, kept by another replica, or
//! before a restart) costs bytes, never a change: an answer is made cold, and a push made
//! against it is refused (400 `unknown_page_context`) and sent again without.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sync_core::org::Principal;
use sync_protocol::wire::PageContext;

/// Bytes of contexts kept in all: 128 phones mid-way through a first sync over 2G, each
/// holding a page's context of [`sync_protocol::wire::PAGE_CONTEXT_BYTES`].
pub const BUDGET: usize = 64 * 1024 * 1024;
/// Contexts kept per device: its last answer's and its last request's, and the two before
/// them for a phone whose last answer was lost on the way (it names the contexts it holds
/// again).
pub const PER_DEVICE: usize = 4;
/// How long a context is kept: a page over 2G takes seconds, and a phone that waits longer
/// between two (a stalled link, backing off) has most likely ended its sync, which a new one
/// starts without a context.
pub const MAX_AGE: Duration = Duration::from_secs(10 * 60);

#[derive(Default)]
pub struct PageContexts {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    by_id: HashMap<u64, Kept>,
    /// Ids in the order they were kept (some possibly dropped already).
    order: VecDeque<u64>,
    bytes: usize,
}

struct Kept {
    /// The device it was kept for: another device's request cannot use it.
    owner: (String, String),
    context: Arc<PageContext>,
    at: Instant,
}

fn owner(p: &Principal) -> (String, String) {
    (p.username.clone(), p.device_id.clone())
}

impl PageContexts {
    /// The context `id`, if it is kept for `p`'s device.
    pub fn get(&self, id: u64, p: &Principal) -> Option<Arc<PageContext>> {
        self.get_at(id, p, Instant::now())
    }

    fn get_at(&self, id: u64, p: &Principal, now: Instant) -> Option<Arc<PageContext>> {
        let mut inner = self.inner.lock().expect("page contexts");
        inner.drop_older_than(now, MAX_AGE);
        inner.by_id.get(&id).filter(|kept| kept.owner == owner(p)).map(|kept| kept.context.clone())
    }

    /// A new id for a context to keep (random: one replica's ids say nothing of another's).
    pub fn new_id(&self) -> u64 {
        rand::random()
    }

    /// Keeps `context` for `p`'s device, dropping its oldest beyond [`PER_DEVICE`] and then the
    /// oldest of all beyond [`BUDGET`].
    pub fn keep(&self, p: &Principal, context: PageContext) {
        self.keep_at(p, context, Instant::now())
    }

    fn keep_at(&self, p: &Principal, context: PageContext, now: Instant) {
        let mut inner = self.inner.lock().expect("page contexts");
        inner.drop_older_than(now, MAX_AGE);
        let owner = owner(p);
        let mine: Vec<u64> = inner.order.iter().copied().filter(|id| inner.by_id.get(id).is_some_and(|k| k.owner == owner)).collect();
        for id in mine.iter().take((mine.len() + 1).saturating_sub(PER_DEVICE)) {
            inner.drop_id(*id);
        }
        inner.bytes += context.len();
        inner.order.push_back(context.id);
        if let Some(old) = inner.by_id.insert(context.id, Kept { owner, context: Arc::new(context), at: now }) {
            // A repeated id (1 in 2⁶⁴): the newer one stands.
            inner.bytes -= old.context.len();
        }
        while inner.bytes > BUDGET {
            let Some(id) = inner.order.pop_front() else { break };
            inner.drop_id(id);
        }
        // Ids dropped behind the front stay in `order` until it is rewritten, when they are as
        // many as the contexts held.
        if inner.order.len() > 2 * inner.by_id.len() + PER_DEVICE {
            let Inner { order, by_id, .. } = &mut *inner;
            order.retain(|id| by_id.contains_key(id));
        }
    }

    /// Bytes and contexts held (`/metrics`: `gesync_sync_page_context_bytes`).
    pub fn held(&self) -> (usize, usize) {
        let inner = self.inner.lock().expect("page contexts");
        (inner.bytes, inner.by_id.len())
    }
}

impl Inner {
    /// Drops the contexts kept more than `age` before `now`: the oldest are at the front.
    fn drop_older_than(&mut self, now: Instant, age: Duration) {
        while let Some(&id) = self.order.front() {
            match self.by_id.get(&id) {
                Some(kept) if now.saturating_duration_since(kept.at) <= age => break,
                _ => {
                    self.order.pop_front();
                    self.drop_id(id);
                }
            }
        }
    }

    fn drop_id(&mut self, id: u64) {
        if let Some(kept) = self.by_id.remove(&id) {
            self.bytes -= kept.context.len();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sync_core::org::Role;

    fn officer(name: &str, device: &str) -> Principal {
        Principal { username: name.into(), role: Role::CommuneOfficer, org_unit: "04701".into(), device_id: device.into() }
    }

    #[test]
    fn a_context_is_its_devices_only_and_two_are_kept_a_device() {
        let kept = PageContexts::default();
        let (a, b) = (officer("officer", "phone-1"), officer("officer2", "phone-1"));
        let n = PER_DEVICE as u64 + 1;
        for id in 1..=n {
            kept.keep(&a, PageContext::of(id, &[id as u8; 100]));
        }
        assert!(kept.get(1, &a).is_none(), "one past PER_DEVICE drops the oldest");
        assert_eq!(kept.get(n, &a).unwrap().id, n);
        assert!(kept.get(2, &a).is_some(), "the others stay");
        assert!(kept.get(n, &b).is_none(), "another account's");
        assert!(kept.get(n, &officer("officer", "phone-2")).is_none(), "another device's");
        assert_eq!(kept.held(), (100 * PER_DEVICE, PER_DEVICE));
    }

    #[test]
    fn the_oldest_go_first_past_the_budget() {
        let kept = PageContexts::default();
        let size = sync_protocol::wire::PAGE_CONTEXT_BYTES;
        let devices = BUDGET / size + 3;
        for d in 0..devices {
            kept.keep(&officer("officer", &format!("phone-{d}")), PageContext::of(d as u64, &vec![0; size]));
        }
        let (bytes, n) = kept.held();
        assert!(bytes <= BUDGET && n == BUDGET / size, "{bytes} B in {n} contexts");
        assert!(kept.get(0, &officer("officer", "phone-0")).is_none(), "the oldest went");
        let last = devices - 1;
        assert!(kept.get(last as u64, &officer("officer", &format!("phone-{last}"))).is_some());
    }

    #[test]
    fn a_context_is_dropped_once_older_than_max_age() {
        let kept = PageContexts::default();
        let (a, b) = (officer("officer", "phone-1"), officer("officer2", "phone-2"));
        let start = Instant::now();
        kept.keep_at(&a, PageContext::of(1, &[1; 100]), start);
        kept.keep_at(&b, PageContext::of(2, &[2; 100]), start + MAX_AGE / 2);
        assert!(kept.get_at(1, &a, start + MAX_AGE).is_some(), "not older than MAX_AGE yet");
        assert!(kept.get_at(1, &a, start + MAX_AGE + Duration::from_secs(1)).is_none(), "older: dropped");
        assert_eq!(kept.held(), (100, 1), "its bytes are given back");
        assert!(kept.get_at(2, &b, start + MAX_AGE + Duration::from_secs(1)).is_some(), "the younger one stays");
    }

    #[test]
    fn ids_dropped_behind_the_front_do_not_pile_up() {
        // One device that never finishes behind another that kept one context long ago.
        let kept = PageContexts::default();
        kept.keep(&officer("officer", "idle"), PageContext::of(0, &[0; 10]));
        let busy = officer("officer", "busy");
        for id in 1..10_000 {
            kept.keep(&busy, PageContext::of(id, &[0; 10]));
        }
        assert_eq!(kept.held(), (10 * (PER_DEVICE + 1), PER_DEVICE + 1));
        assert!(kept.inner.lock().unwrap().order.len() <= 2 * (PER_DEVICE + 1) + PER_DEVICE);
    }
}
