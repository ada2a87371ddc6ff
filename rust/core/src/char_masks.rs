//! The analysis behind [`crate::chars`], kept free of crate types: `build.rs` includes this file
//! to precompute it for the bundled vocabularies, and `chars` runs it for any other vocabulary.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

/// A hasher for the packed `u64` keys below: one multiply-xorshift mix (std's SipHash made the
/// analysis of o200k take 43 ms).
#[derive(Default, Clone, Copy)]
struct Mix(u64);

impl Hasher for Mix {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.write_u64(self.0.rotate_left(8) ^ b as u64);
        }
    }
    fn write_u64(&mut self, k: u64) {
        let h = (k ^ (k >> 31)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        self.0 = h ^ (h >> 29);
    }
}

type Map<V> = HashMap<u64, V, BuildHasherDefault<Mix>>;

/// A unit token ([`is_unit`]) and the neighbouring bytes with which it may start merged, while the
/// analysis runs (its result stores each distinct mask once: [`Units`]).
struct CharMask {
    /// The unit's UTF-8 bytes, zero-padded.
    bytes: [u8; MAX_UNIT],
    /// How many of `bytes` are the unit's.
    len: u8,
    rank: u32,
    /// Bit `p` set: may start merged after byte `p`.
    left: [u64; 4],
    /// Bit `n` set: may start merged before byte `n`.
    right: [u64; 4],
}

/// The byte length of the UTF-8 character that `lead` starts (0 when it starts none).
#[inline(always)]
pub fn char_len(lead: u8) -> usize {
    match lead {
        0xC2..=0xDF => 2,
        0xE0..=0xEF => 3,
        0xF0..=0xF4 => 4,
        _ => 0,
    }
}

/// Up to 7 bytes and their length in one key: the vocabulary's short-token key too (two
/// overlapping little-endian loads; the overlap ORs a byte with itself).
#[inline(always)]
pub fn pack(b: &[u8]) -> u64 {
    let n = b.len();
    debug_assert!(n <= 7);
    let v = if n >= 4 {
        let lo = u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as u64;
        let hi = u32::from_le_bytes([b[n - 4], b[n - 3], b[n - 2], b[n - 1]]) as u64;
        lo | (hi << (8 * (n - 4)))
    } else if n >= 2 {
        let lo = u16::from_le_bytes([b[0], b[1]]) as u64;
        let hi = u16::from_le_bytes([b[n - 2], b[n - 1]]) as u64;
        lo | (hi << (8 * (n - 2)))
    } else if n == 1 {
        b[0] as u64
    } else {
        0
    };
    v | ((n as u64) << 56)
}

fn clear(mask: &mut [u64; 4], b: u8) {
    mask[(b >> 6) as usize] &= !(1u64 << (b & 63));
}

/// The highest rank among the merges that turn `c`'s bytes into the single token `c` (None when
/// they end elsewhere). `c` has at most [`MAX_UNIT`] bytes; `get` gives a byte string's rank.
fn own_merges(get: &impl Fn(&[u8]) -> Option<u32>, c: &[u8]) -> Option<u32> {
    let mut ends: Vec<usize> = (1..=c.len()).collect();
    let mut highest = 0;
    loop {
        let mut best = (u32::MAX, 0);
        let mut start = 0;
        for i in 0..ends.len().saturating_sub(1) {
            let r = get(&c[start..ends[i + 1]]).unwrap_or(u32::MAX);
            if r < best.0 {
                best = (r, i);
            }
            start = ends[i];
        }
        if best.0 == u32::MAX {
            break;
        }
        highest = highest.max(best.0);
        ends.remove(best.1);
    }
    (ends.len() == 1).then_some(highest)
}

/// The most bytes a unit has (so that it packs into a `u64` key with its length).
pub const MAX_UNIT: usize = 7;

/// Whether `b` is a unit: two ASCII bytes, or one or two whole characters, at least one of them
/// multi-byte, at most [`MAX_UNIT`] bytes.
pub fn is_unit(b: &[u8]) -> bool {
    if b.is_ascii() {
        return b.len() == 2;
    }
    if b.len() > MAX_UNIT {
        return false;
    }
    std::str::from_utf8(b).is_ok_and(|s| matches!(s.chars().count(), 1 | 2))
}

impl CharMask {
    /// The unit's bytes.
    pub fn unit(&self) -> &[u8] {
        &self.bytes[..self.len as usize]
    }
}

/// Every unit token of a vocabulary ([`is_unit`]; `tokens`: its bytes and ranks; `get`: the rank
/// of a byte string), with the bytes before and after it for which starting from it merged gives
/// exactly the byte-level merge (the conditions are in `crate::chars`).
pub fn char_masks<'a>(
    tokens: impl Iterator<Item = (&'a [u8], u32)> + Clone,
    get: impl Fn(&[u8]) -> Option<u32>,
) -> Units {
    let mut chars: Vec<CharMask> = Vec::new();
    let mut highest: Vec<u32> = Vec::new();
    for (b, r) in tokens.clone() {
        if !is_unit(b) || chars.len() >= u16::MAX as usize {
            continue;
        }
        if let Some(m) = own_merges(&get, b) {
            let mut bytes = [0u8; MAX_UNIT];
            bytes[..b.len()].copy_from_slice(b);
            chars.push(CharMask {
                bytes,
                len: b.len() as u8,
                rank: r,
                left: [u64::MAX; 4],
                right: [u64::MAX; 4],
            });
            highest.push(m);
        }
    }
    // Unit prefixes and suffixes (the whole unit included) -> the units that have them.
    let mut prefixes: Map<Vec<u16>> = Map::default();
    let mut suffixes: Map<Vec<u16>> = Map::default();
    // Bytes that start some unit prefix, and bytes that start some unit suffix.
    let (mut starts_prefix, mut starts_suffix) = ([false; 256], [false; 256]);
    for (id, c) in chars.iter().enumerate() {
        let c = c.unit();
        starts_prefix[c[0] as usize] = true;
        for &b in c {
            starts_suffix[b as usize] = true;
        }
        for j in 1..=c.len() {
            prefixes.entry(pack(&c[..j])).or_default().push(id as u16);
            suffixes
                .entry(pack(&c[c.len() - j..]))
                .or_default()
                .push(id as u16);
        }
    }
    // Every token that ends with byte `p` + a unit prefix, or starts with a unit suffix + byte
    // `n`, rules `p` (or `n`) out for the units whose own merges go as high as its rank.
    for (tok, r) in tokens {
        let len = tok.len();
        for j in 2..=len.min(MAX_UNIT + 1) {
            let s = &tok[len - j..];
            if starts_prefix[s[1] as usize] {
                if let Some(ids) = prefixes.get(&pack(&s[1..])) {
                    for &id in ids {
                        if r <= highest[id as usize] {
                            clear(&mut chars[id as usize].left, s[0]);
                        }
                    }
                }
            }
            let s = &tok[..j];
            if starts_suffix[s[0] as usize] {
                if let Some(ids) = suffixes.get(&pack(&s[..j - 1])) {
                    for &id in ids {
                        if r <= highest[id as usize] {
                            clear(&mut chars[id as usize].right, s[j - 1]);
                        }
                    }
                }
            }
        }
    }
    compact(&chars)
}

/// A unit in the compact form: its bytes, rank, and the indexes of its two masks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Unit {
    pub bytes: [u8; MAX_UNIT],
    pub len: u8,
    pub rank: u32,
    pub left: u16,
    pub right: u16,
}

impl Unit {
    /// The unit's bytes.
    pub fn unit(&self) -> &[u8] {
        &self.bytes[..self.len as usize]
    }
}

/// The analysis with each distinct mask stored once (o200k: 5,445 distinct among 34,340).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Units {
    pub masks: Vec<[u64; 4]>,
    pub units: Vec<Unit>,
}

/// Stores each distinct mask of `chars` once. Units whose masks would not fit `u16` indexes are
/// left out (they then start from bytes, which is always exact).
fn compact(chars: &[CharMask]) -> Units {
    let mut index: HashMap<[u64; 4], u16> = HashMap::new();
    let mut out = Units::default();
    for c in chars {
        let mut id = |m: [u64; 4]| -> Option<u16> {
            if let Some(&i) = index.get(&m) {
                return Some(i);
            }
            let i = u16::try_from(out.masks.len()).ok()?;
            index.insert(m, i);
            out.masks.push(m);
            Some(i)
        };
        let (Some(left), Some(right)) = (id(c.left), id(c.right)) else {
            continue;
        };
        out.units.push(Unit {
            bytes: c.bytes,
            len: c.len,
            rank: c.rank,
            left,
            right,
        });
    }
    out
}

/// Bytes per serialised unit: length, bytes (zero-padded), rank, left and right mask indexes.
const RECORD: usize = 1 + MAX_UNIT + 4 + 2 + 2;

/// Serialises the compact analysis: the mask count and masks, then the unit count and units.
pub fn to_bytes(u: &Units) -> Vec<u8> {
    let mut out = Vec::with_capacity(8 + u.masks.len() * 32 + u.units.len() * RECORD);
    out.extend_from_slice(&(u.masks.len() as u32).to_le_bytes());
    for w in u.masks.iter().flatten() {
        out.extend_from_slice(&w.to_le_bytes());
    }
    out.extend_from_slice(&(u.units.len() as u32).to_le_bytes());
    for m in &u.units {
        out.push(m.len);
        out.extend_from_slice(&m.bytes);
        out.extend_from_slice(&m.rank.to_le_bytes());
        out.extend_from_slice(&m.left.to_le_bytes());
        out.extend_from_slice(&m.right.to_le_bytes());
    }
    out
}

/// The inverse of [`to_bytes`].
pub fn from_bytes(data: &[u8]) -> Units {
    let rd = |at: usize| u32::from_le_bytes(data[at..at + 4].try_into().unwrap()) as usize;
    let w = |at: usize| u64::from_le_bytes(data[at..at + 8].try_into().unwrap());
    let n_masks = rd(0);
    let masks = (0..n_masks)
        .map(|i| {
            let at = 4 + 32 * i;
            [w(at), w(at + 8), w(at + 16), w(at + 24)]
        })
        .collect();
    let base = 4 + 32 * n_masks;
    let units = (0..rd(base))
        .map(|i| {
            let r = &data[base + 4 + i * RECORD..base + 4 + (i + 1) * RECORD];
            const AT: usize = 1 + MAX_UNIT;
            Unit {
                bytes: r[1..AT].try_into().unwrap(),
                len: r[0],
                rank: u32::from_le_bytes(r[AT..AT + 4].try_into().unwrap()),
                left: u16::from_le_bytes(r[AT + 4..AT + 6].try_into().unwrap()),
                right: u16::from_le_bytes(r[AT + 6..AT + 8].try_into().unwrap()),
            }
        })
        .collect();
    Units { masks, units }
}
