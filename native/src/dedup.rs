//! De-duplication and placement: the 64-bit uid hash, digests of long distinct values,
//! and the Java client's murmur2 partitioner (what faust and aiokafka use).

use blake2::digest::{Update, VariableOutput};
use blake2::Blake2bVar;

pub const UID_SEPARATOR: u8 = 0x1f;

/// A light hasher (FxHash's mixing) for the engine's maps: uid hashes are blake2b output
/// already, and account and field codes come from authenticated producers and the catalog,
/// so SipHash's protection against chosen keys would cost more than the lookups.
#[derive(Default, Clone, Copy)]
pub struct UidHasher(u64);

impl std::hash::Hasher for UidHasher {
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for chunk in &mut chunks {
            self.write_u64(u64::from_le_bytes(chunk.try_into().expect("8 bytes")));
        }
        for byte in chunks.remainder() {
            self.write_u64(*byte as u64);
        }
    }

    fn write_u8(&mut self, value: u8) {
        self.write_u64(value as u64);
    }

    fn write_u64(&mut self, value: u64) {
        self.0 = (self.0.rotate_left(5) ^ value).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

pub type Fast = std::hash::BuildHasherDefault<UidHasher>;
/// The uid hashes of one account-hour, 16 bytes inline: most hold one (no allocation),
/// some a few (a sorted vector), a busy one many (a hash set, past `FEW`). Removing
/// uids shrinks it back.
#[derive(Clone, Debug, Default)]
#[allow(clippy::box_collection)] // a thin pointer keeps the set at 16 bytes
pub enum UidSet {
    #[default]
    Empty,
    One(u64),
    Few(Box<Vec<u64>>),
    Many(Box<std::collections::HashSet<u64, Fast>>),
}

const FEW: usize = 32;

impl UidSet {
    pub fn contains(&self, uid: &u64) -> bool {
        match self {
            UidSet::Empty => false,
            UidSet::One(one) => one == uid,
            UidSet::Few(few) => few.binary_search(uid).is_ok(),
            UidSet::Many(many) => many.contains(uid),
        }
    }

    pub fn insert(&mut self, uid: u64) {
        match self {
            UidSet::Empty => *self = UidSet::One(uid),
            UidSet::One(one) => {
                if *one != uid {
                    let (low, high) = if *one < uid { (*one, uid) } else { (uid, *one) };
                    *self = UidSet::Few(Box::new(vec![low, high]));
                }
            }
            UidSet::Few(few) => {
                if let Err(at) = few.binary_search(&uid) {
                    if few.len() < FEW {
                        few.insert(at, uid);
                    } else {
                        let mut many: std::collections::HashSet<u64, Fast> =
                            few.drain(..).collect();
                        many.insert(uid);
                        *self = UidSet::Many(Box::new(many));
                    }
                }
            }
            UidSet::Many(many) => {
                many.insert(uid);
            }
        }
    }

    pub fn remove(&mut self, uid: &u64) {
        match self {
            UidSet::Empty => {}
            UidSet::One(one) => {
                if one == uid {
                    *self = UidSet::Empty;
                }
            }
            UidSet::Few(few) => {
                if let Ok(at) = few.binary_search(uid) {
                    few.remove(at);
                }
                if few.len() == 1 {
                    *self = UidSet::One(few[0]);
                }
            }
            UidSet::Many(many) => {
                many.remove(uid);
                if many.len() <= FEW / 2 {
                    let mut few: Vec<u64> = many.iter().copied().collect();
                    few.sort_unstable();
                    *self = match few.len() {
                        0 => UidSet::Empty,
                        1 => UidSet::One(few[0]),
                        _ => UidSet::Few(Box::new(few)),
                    };
                }
            }
        }
    }

    pub fn extend(&mut self, uids: impl Iterator<Item = u64>) {
        for uid in uids {
            self.insert(uid);
        }
    }

    pub fn len(&self) -> usize {
        match self {
            UidSet::Empty => 0,
            UidSet::One(_) => 1,
            UidSet::Few(few) => few.len(),
            UidSet::Many(many) => many.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn to_vec(&self) -> Vec<u64> {
        match self {
            UidSet::Empty => Vec::new(),
            UidSet::One(one) => vec![*one],
            UidSet::Few(few) => few.to_vec(),
            UidSet::Many(many) => many.iter().copied().collect(),
        }
    }
}
pub type FastMap<K, V> = std::collections::HashMap<K, V, Fast>;
pub type FastSet<K> = std::collections::HashSet<K, Fast>;

fn blake2b(parts: &[&[u8]], size: usize) -> Vec<u8> {
    let mut hasher = Blake2bVar::new(size).expect("a valid blake2b size");
    for part in parts {
        hasher.update(part);
    }
    let mut out = vec![0u8; size];
    hasher
        .finalize_variable(&mut out)
        .expect("the size asked for");
    out
}

/// blake2b-64 of `meter \x1f uid`, big-endian (`wire.uid_hash`).
pub fn uid_hash(meter: &str, uid: &str) -> u64 {
    let digest = blake2b(&[meter.as_bytes(), &[UID_SEPARATOR], uid.as_bytes()], 8);
    u64::from_be_bytes(digest.try_into().expect("8 bytes"))
}

const MAX_DISTINCT_CHARS: usize = 64;
const DIGEST_MARK: char = '\0';

/// `distinct_key` of a string: itself when short, else a marked 128-bit digest.
pub fn distinct_text(value: &str) -> String {
    if !value.starts_with(DIGEST_MARK) && value.chars().nth(MAX_DISTINCT_CHARS).is_none() {
        return value.to_string();
    }
    let digest = blake2b(&[value.as_bytes()], 16);
    let mut out = String::with_capacity(33);
    out.push(DIGEST_MARK);
    for byte in digest {
        out.push_str(&format!("{:02x}", byte));
    }
    out
}

/// Kafka's murmur2 of `data`.
pub fn murmur2(data: &[u8]) -> u32 {
    const SEED: u32 = 0x9747_b28c;
    const M: u32 = 0x5bd1_e995;
    const R: u32 = 24;
    let length = data.len();
    let mut h: u32 = SEED ^ (length as u32);
    let chunks = length / 4;
    for i in 0..chunks {
        let at = i * 4;
        let mut k = u32::from_le_bytes([data[at], data[at + 1], data[at + 2], data[at + 3]]);
        k = k.wrapping_mul(M);
        k ^= k >> R;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M);
        h ^= k;
    }
    let tail = chunks * 4;
    let rest = length % 4;
    if rest == 3 {
        h ^= (data[tail + 2] as u32) << 16;
    }
    if rest >= 2 {
        h ^= (data[tail + 1] as u32) << 8;
    }
    if rest >= 1 {
        h ^= data[tail] as u32;
        h = h.wrapping_mul(M);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^= h >> 15;
    h
}

/// `streams.partitioning.partition_for`.
pub fn partition_for(account: &str, partitions: u32) -> u32 {
    (murmur2(account.as_bytes()) & 0x7fff_ffff) % partitions
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn murmur2_is_kafkas() {
        // values from Kafka's own tests (Utils.murmur2)
        assert_eq!(murmur2(b"21") as i32, -973932308);
        assert_eq!(murmur2(b"foobar") as i32, -790332482);
        assert_eq!(murmur2(b"a-little-bit-long-string") as i32, -985981536);
        assert_eq!(murmur2(b"a-little-bit-longer-string") as i32, -1486304829);
        assert_eq!(
            murmur2(b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8") as i32,
            -58897971
        );
        assert_eq!(murmur2(b"abc") as i32, 479470107);
    }

    #[test]
    fn a_uid_set_grows_from_one_inline_uid_to_a_hash_set_and_shrinks_back() {
        assert_eq!(std::mem::size_of::<UidSet>(), 16);
        let mut set = UidSet::default();
        assert!(set.is_empty() && !set.contains(&7));
        set.insert(7);
        set.insert(7);
        assert!(matches!(set, UidSet::One(7)) && set.len() == 1);
        set.insert(3);
        assert!(matches!(set, UidSet::Few(_)));
        assert_eq!(set.to_vec(), vec![3, 7]);
        for uid in 100..140 {
            set.insert(uid);
        }
        assert!(matches!(set, UidSet::Many(_)) && set.len() == 42);
        assert!(set.contains(&3) && set.contains(&139) && !set.contains(&140));
        for uid in 100..140 {
            set.remove(&uid);
        }
        assert!(matches!(set, UidSet::Few(_)));
        let mut left = set.to_vec();
        left.sort_unstable();
        assert_eq!(left, vec![3, 7]);
        set.remove(&3);
        assert!(matches!(set, UidSet::One(7)));
        set.remove(&8);
        assert_eq!(set.len(), 1);
        set.remove(&7);
        assert!(matches!(set, UidSet::Empty) && set.is_empty());
    }

    #[test]
    fn long_distinct_values_become_digests() {
        assert_eq!(distinct_text("ann"), "ann");
        let long = "x".repeat(65);
        let digest = distinct_text(&long);
        assert!(digest.starts_with('\0') && digest.len() == 33);
        assert_eq!(distinct_text(&"é".repeat(64)), "é".repeat(64));
    }
}
