//! The analysis behind [`crate::chars`], kept free of crate types: `build.rs` includes this file
//! to precompute it for the bundled vocabularies, and `chars` runs it for any other vocabulary.

use std::collections::HashMap;

/// A unit token (a multi-byte character, or a space and one) and the neighbouring bytes with
/// which it may start merged.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CharMask {
    /// The unit's UTF-8 bytes: a character of 2 to 4 bytes, or a space and one.
    pub bytes: Vec<u8>,
    pub rank: u32,
    /// Bit `p` set: may start merged after byte `p`.
    pub left: [u64; 4],
    /// Bit `n` set: may start merged before byte `n`.
    pub right: [u64; 4],
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

/// Up to 7 bytes and their length in one key.
#[inline(always)]
pub fn pack(b: &[u8]) -> u64 {
    debug_assert!(b.len() <= 7);
    let mut k = (b.len() as u64) << 56;
    for (i, &x) in b.iter().enumerate() {
        k |= (x as u64) << (8 * i);
    }
    k
}

fn clear(mask: &mut [u64; 4], b: u8) {
    mask[(b >> 6) as usize] &= !(1u64 << (b & 63));
}

/// The highest rank among the merges that turn `c`'s bytes into the single token `c` (None when
/// they end elsewhere). `c` has at most 5 bytes; `get` gives a byte string's rank.
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

/// The character of 2 to 4 bytes that `b` is exactly, after an optional leading space: its
/// offset in `b` (0 or 1), or None.
pub fn unit_start(b: &[u8]) -> Option<usize> {
    let at = usize::from(b.first() == Some(&b' '));
    let k = b.get(at).map_or(0, |&x| char_len(x));
    (k >= 2 && b.len() == at + k && std::str::from_utf8(&b[at..]).is_ok()).then_some(at)
}

/// Every unit token of a vocabulary (a multi-byte character, or a space and one; `tokens`: its
/// bytes and ranks; `get`: the rank of a byte string), with the bytes before and after it for
/// which starting from it merged gives exactly the byte-level merge (the conditions are in
/// `crate::chars`).
pub fn char_masks<'a>(
    tokens: impl Iterator<Item = (&'a [u8], u32)> + Clone,
    get: impl Fn(&[u8]) -> Option<u32>,
) -> Vec<CharMask> {
    let mut chars: Vec<CharMask> = Vec::new();
    let mut highest: Vec<u32> = Vec::new();
    for (b, r) in tokens.clone() {
        if unit_start(b).is_none() || chars.len() >= u16::MAX as usize {
            continue;
        }
        if let Some(m) = own_merges(&get, b) {
            chars.push(CharMask {
                bytes: b.to_vec(),
                rank: r,
                left: [u64::MAX; 4],
                right: [u64::MAX; 4],
            });
            highest.push(m);
        }
    }
    // Unit prefixes and suffixes (the whole unit included) -> the units that have them.
    let mut prefixes: HashMap<u64, Vec<u16>> = HashMap::new();
    let mut suffixes: HashMap<u64, Vec<u16>> = HashMap::new();
    for (id, c) in chars.iter().enumerate() {
        let c = &c.bytes;
        for j in 1..=c.len() {
            prefixes.entry(pack(&c[..j])).or_default().push(id as u16);
            suffixes
                .entry(pack(&c[c.len() - j..]))
                .or_default()
                .push(id as u16);
        }
    }
    // Every token that ends with byte `p` + a unit prefix, or starts with a unit suffix + byte
    // `n`, rules `p` (or `n`) out for the units whose own merges go as high as its rank. (Unit
    // prefixes start with a space or a lead byte; suffixes with one of those or a continuation
    // byte.)
    for (tok, r) in tokens {
        let len = tok.len();
        for j in 2..=len.min(6) {
            let s = &tok[len - j..];
            if s[1] >= 0xC0 || s[1] == b' ' {
                if let Some(ids) = prefixes.get(&pack(&s[1..])) {
                    for &id in ids {
                        if r <= highest[id as usize] {
                            clear(&mut chars[id as usize].left, s[0]);
                        }
                    }
                }
            }
            let s = &tok[..j];
            if s[0] >= 0x80 || s[0] == b' ' {
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
    chars
}

/// Serialises masks: per unit, its byte count, 5 bytes (zero-padded), rank, left and right.
pub fn to_bytes(masks: &[CharMask]) -> Vec<u8> {
    let mut out = Vec::with_capacity(4 + masks.len() * RECORD);
    out.extend_from_slice(&(masks.len() as u32).to_le_bytes());
    for m in masks {
        out.push(m.bytes.len() as u8);
        let mut b = [0u8; 5];
        b[..m.bytes.len()].copy_from_slice(&m.bytes);
        out.extend_from_slice(&b);
        out.extend_from_slice(&m.rank.to_le_bytes());
        for w in m.left.iter().chain(&m.right) {
            out.extend_from_slice(&w.to_le_bytes());
        }
    }
    out
}

/// Bytes per serialised unit.
pub const RECORD: usize = 1 + 5 + 4 + 64;

/// The inverse of [`to_bytes`].
pub fn from_bytes(data: &[u8]) -> Vec<CharMask> {
    let n = u32::from_le_bytes(data[..4].try_into().unwrap()) as usize;
    (0..n)
        .map(|i| {
            let r = &data[4 + i * RECORD..4 + (i + 1) * RECORD];
            let w = |k: usize| u64::from_le_bytes(r[10 + 8 * k..18 + 8 * k].try_into().unwrap());
            CharMask {
                bytes: r[1..1 + r[0] as usize].to_vec(),
                rank: u32::from_le_bytes(r[6..10].try_into().unwrap()),
                left: [w(0), w(1), w(2), w(3)],
                right: [w(4), w(5), w(6), w(7)],
            }
        })
        .collect()
}
