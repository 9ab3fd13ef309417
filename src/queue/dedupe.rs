//! Duplicate detection for intake, in the writer's memory: every payload hash seen within the window
//! (two hours), bounded, compact (about 90 bytes an entry), warmed at start; on PostgreSQL the database's shared window decides.

use std::collections::{HashMap, VecDeque};

use sha2::{Digest, Sha256};

use crate::domain::EventId;

/// At most this many hashes are remembered.
pub const MAX_ENTRIES: usize = 1_000_000;

/// A payload hash as 16 bytes: the hex of [`crate::snapinspect::webhook`]'s hash decoded, or, for a
/// hash of another form (rows of an older version), the first 16 bytes of its SHA-256.
type Key = [u8; 16];

/// What the window keeps of an event: when it arrived, its hash and its id's 26 characters.
struct Entry {
    at: i64,
    key: Key,
    id: [u8; 26],
}

pub struct Deduper {
    window_ms: i64,
    cap: usize,
    /// Each key's entry, by its sequence number (the entry at `order[seq - first]`).
    seqs: HashMap<Key, u64>,
    /// Entries in order of arrival; `first` is the sequence number of the front one.
    order: VecDeque<Entry>,
    first: u64,
    warned: bool,
}

impl Deduper {
    pub fn new(window_ms: i64, cap: usize) -> Self {
        // Sequence numbers start mid-range: the reload counts down from here, intake up.
        Self { window_ms, cap, seqs: HashMap::new(), order: VecDeque::new(), first: u64::MAX / 2, warned: false }
    }

    /// Forget hashes received before the window.
    pub fn expire(&mut self, now: i64) {
        while self.order.front().is_some_and(|e| e.at < now - self.window_ms) {
            self.pop_front();
        }
    }

    /// The event this payload hash duplicates, if it was received within the window.
    pub fn original(&self, hash: &str) -> Option<EventId> {
        let seq = *self.seqs.get(&key(hash))?;
        let entry = &self.order[usize::try_from(seq - self.first).ok()?];
        let body = std::str::from_utf8(&entry.id).ok()?;
        EventId::parse(&format!("evt_{body}")).ok()
    }

    /// Remember a stored event (call in order of arrival). An id that is not an event id's form is
    /// not remembered (every id the writer makes or reads back is).
    pub fn remember(&mut self, hash: &str, id: &EventId, received_at: i64) {
        let Some(id) = id_bytes(id) else { return };
        if self.seqs.len() >= self.cap {
            if !self.warned {
                tracing::warn!(
                    cap = self.cap,
                    "more events than the duplicate window can hold: the oldest are forgotten early"
                );
                self.warned = true;
            }
            self.pop_front();
        }
        let key = key(hash);
        let seq = self.first + self.order.len() as u64;
        self.order.push_back(Entry { at: received_at, key, id });
        // A key seen again (the same payload after its window) points at its newest entry.
        self.seqs.insert(key, seq);
    }

    /// Remember an event older than every one remembered so far (the window's reload, newest
    /// first). A hash already remembered keeps its newer event. Returns false once the window is
    /// full: older ones are not wanted.
    pub fn remember_older(&mut self, hash: &str, id: &EventId, received_at: i64) -> bool {
        if self.seqs.len() >= self.cap {
            return false;
        }
        let Some(id) = id_bytes(id) else { return true };
        let key = key(hash);
        if self.seqs.contains_key(&key) {
            return true;
        }
        self.first -= 1;
        self.order.push_front(Entry { at: received_at, key, id });
        self.seqs.insert(key, self.first);
        true
    }

    fn pop_front(&mut self) {
        let Some(entry) = self.order.pop_front() else { return };
        // Only if the key still points here: a newer entry with the same key keeps it.
        if self.seqs.get(&entry.key) == Some(&self.first) {
            self.seqs.remove(&entry.key);
        }
        self.first += 1;
    }

    pub fn len(&self) -> usize {
        self.seqs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.seqs.is_empty()
    }
}

fn id_bytes(id: &EventId) -> Option<[u8; 26]> {
    id.as_str().strip_prefix("evt_").and_then(|b| <[u8; 26]>::try_from(b.as_bytes()).ok())
}

fn key(hash: &str) -> Key {
    let mut out = [0u8; 16];
    if let Some(decoded) = lower_hex(hash) {
        return decoded;
    }
    out.copy_from_slice(&Sha256::digest(hash.as_bytes())[..16]);
    out
}

/// 32 lower-case hex digits as 16 bytes.
fn lower_hex(hash: &str) -> Option<Key> {
    let digit = |b: u8| match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        _ => None,
    };
    let bytes = hash.as_bytes();
    if bytes.len() != 32 {
        return None;
    }
    let mut out = [0u8; 16];
    for (i, pair) in bytes.chunks_exact(2).enumerate() {
        out[i] = digit(pair[0])? << 4 | digit(pair[1])?;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const H: [&str; 5] = [
        "00000000000000000000000000000000",
        "0123456789abcdef0123456789abcdef",
        "ffffffffffffffffffffffffffffffff",
        "a hash of another form",
        "a hash of yet another form",
    ];

    #[test]
    fn remembers_within_the_window_and_forgets_after() {
        let mut d = Deduper::new(1000, 10);
        let id = EventId::generate();
        assert!(d.is_empty());
        d.remember(H[1], &id, 100);
        assert!(!d.is_empty());
        assert_eq!(d.original(H[1]), Some(id.clone()));
        assert_eq!(d.original(H[0]), None);
        d.expire(1100);
        assert!(d.original(H[1]).is_some(), "exactly at the edge it is still a duplicate");
        d.expire(1101);
        assert!(d.original(H[1]).is_none());
        assert!(d.is_empty());
    }

    #[test]
    fn is_bounded() {
        let mut d = Deduper::new(i64::MAX / 2, 3);
        let ids: Vec<EventId> = (0..5).map(|_| EventId::generate()).collect();
        for (i, id) in ids.iter().enumerate() {
            d.remember(H[i], id, i as i64);
        }
        assert_eq!(d.len(), 3);
        assert!(d.original(H[0]).is_none() && d.original(H[1]).is_none());
        assert_eq!(d.original(H[2]), Some(ids[2].clone()));
        assert_eq!(d.original(H[4]), Some(ids[4].clone()));
    }

    #[test]
    fn hashes_of_any_form_are_told_apart() {
        let mut d = Deduper::new(1000, 10);
        let ids: Vec<EventId> = (0..5).map(|_| EventId::generate()).collect();
        for (i, id) in ids.iter().enumerate() {
            d.remember(H[i], id, 0);
        }
        for (i, id) in ids.iter().enumerate() {
            assert_eq!(d.original(H[i]).as_ref(), Some(id), "{}", H[i]);
        }
        assert_eq!(d.original("0123456789ABCDEF0123456789abcdef"), None, "upper-case hex is another hash");
    }

    #[test]
    fn the_reload_fills_in_older_events_behind_the_newer_ones() {
        let mut d = Deduper::new(1000, 3);
        let ids: Vec<EventId> = (0..5).map(|_| EventId::generate()).collect();
        d.remember(H[0], &ids[0], 900);
        assert!(d.remember_older(H[0], &ids[1], 300), "a hash already remembered keeps its newer event");
        assert!(d.remember_older(H[2], &ids[2], 200));
        assert!(d.remember_older(H[3], &ids[3], 100));
        assert!(!d.remember_older(H[4], &ids[4], 50), "the window is full");
        assert_eq!(d.original(H[0]), Some(ids[0].clone()));
        assert_eq!(d.original(H[2]), Some(ids[2].clone()));
        assert_eq!(d.original(H[3]), Some(ids[3].clone()));
        assert_eq!(d.original(H[4]), None);
        d.expire(1150);
        assert_eq!(d.original(H[3]), None, "the oldest expires first");
        assert_eq!(d.original(H[2]), Some(ids[2].clone()));
        d.expire(1201);
        assert_eq!(d.original(H[2]), None);
        assert_eq!(d.original(H[0]), Some(ids[0].clone()));
    }

    #[test]
    fn lower_case_hex_is_read_as_its_bytes() {
        assert_eq!(
            key(H[1]),
            [0x01, 0x23, 0x45, 0x67, 0x89, 0xab, 0xcd, 0xef, 0x01, 0x23, 0x45, 0x67, 0x89, 0xab, 0xcd, 0xef]
        );
        assert_eq!(key(H[2]), [0xff; 16]);
        // Not 32 lower-case hex digits: the first 16 bytes of the text's SHA-256.
        for other in ["0123456789abcdef0123456789abcdeg", "0123456789ABCDEF0123456789ABCDEF", "bench1"] {
            assert_eq!(key(other)[..], Sha256::digest(other.as_bytes())[..16], "{other}");
        }
    }

    #[test]
    fn a_hash_seen_again_points_at_its_newest_event_until_that_one_expires() {
        let mut d = Deduper::new(1000, 10);
        let (old, new) = (EventId::generate(), EventId::generate());
        d.remember(H[1], &old, 0);
        d.remember(H[1], &new, 500);
        assert_eq!(d.original(H[1]), Some(new.clone()));
        d.expire(1001);
        assert_eq!(d.original(H[1]), Some(new), "the old entry's expiry keeps the newer one");
        assert_eq!(d.len(), 1);
        d.expire(1501);
        assert!(d.is_empty());
    }
}
