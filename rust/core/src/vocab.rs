//! Ranks: the mergeable-token vocabulary, its rank-file format and the bundled encodings.
//!
//! Why a hand-made table: encoding looks a byte string up for every candidate merge, so the
//! lookup is the hot path after pre-tokenization. Token bytes live in one contiguous buffer (for
//! the bundled vocabularies, a `'static` slice compiled into the library), and an open-addressing
//! table of `u32` entry indices keyed by a fast word-at-a-time hash maps bytes to ranks. Building
//! it for o200k's 200k tokens takes a few milliseconds, which is what makes cold loads instant.
use crate::error::{Error, Result};
use base64::Engine;
use std::borrow::Cow;

/// A token id.
pub type Rank = u32;
const EMPTY: u32 = u32::MAX;
/// Marks a rank with no mergeable token behind it.
pub const NO_ENTRY: u32 = u32::MAX;

#[inline(always)]
fn hash_bytes(b: &[u8]) -> u64 {
    const K: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut h = (b.len() as u64).wrapping_mul(K);
    let mut chunks = b.chunks_exact(8);
    for c in &mut chunks {
        h = (h.rotate_left(23) ^ u64::from_le_bytes(c.try_into().unwrap())).wrapping_mul(K);
    }
    let rem = chunks.remainder();
    if !rem.is_empty() {
        let mut buf = [0u8; 8];
        buf[..rem.len()].copy_from_slice(rem);
        h = (h.rotate_left(23) ^ u64::from_le_bytes(buf)).wrapping_mul(K);
    }
    h ^ (h >> 32)
}

/// The mergeable tokens of an encoding: bytes <-> rank in both directions.
#[derive(Clone)]
pub struct Vocab {
    bytes: Cow<'static, [u8]>,
    offsets: Vec<u32>,
    ranks: Vec<Rank>,
    /// rank -> entry index, `NO_ENTRY` for holes.
    by_rank: Vec<u32>,
    table: Vec<u32>,
    shift: u32,
    byte_ranks: [Rank; 256],
}

impl Vocab {
    /// Builds a vocabulary from entries `(bytes, rank)`. Bytes must be unique (ranks too).
    pub fn from_entries<'a, I: IntoIterator<Item = (&'a [u8], Rank)>>(entries: I) -> Result<Self> {
        let mut bytes = Vec::new();
        let mut offsets = vec![0u32];
        let mut ranks = Vec::new();
        for (b, r) in entries {
            bytes.extend_from_slice(b);
            offsets.push(bytes.len() as u32);
            ranks.push(r);
        }
        Self::from_parts(Cow::Owned(bytes), offsets, ranks)
    }

    /// Builds from the compact form: concatenated bytes, `n + 1` offsets and `n` ranks.
    pub fn from_parts(bytes: Cow<'static, [u8]>, offsets: Vec<u32>, ranks: Vec<Rank>) -> Result<Self> {
        let n = ranks.len();
        assert_eq!(offsets.len(), n + 1);
        let max_rank = ranks.iter().copied().max().unwrap_or(0) as usize;
        if n > 0 && max_rank > 16 * n + (1 << 20) {
            return Err(Error::Value(format!(
                "ranks are too sparse: max rank {max_rank} for {n} tokens"
            )));
        }
        let mut by_rank = vec![NO_ENTRY; if n == 0 { 0 } else { max_rank + 1 }];
        for (i, &r) in ranks.iter().enumerate() {
            if by_rank[r as usize] != NO_ENTRY {
                return Err(Error::Value(format!(
                    "rank {r} is given to two different tokens; ranks must be unique"
                )));
            }
            by_rank[r as usize] = i as u32;
        }
        let cap = (n * 2).next_power_of_two().max(16);
        let shift = 64 - cap.trailing_zeros();
        let mut v = Vocab { bytes, offsets, ranks, by_rank, table: vec![EMPTY; cap], shift, byte_ranks: [NO_ENTRY; 256] };
        let mask = cap - 1;
        for i in 0..n {
            let tok = v.entry_bytes(i);
            let mut slot = (hash_bytes(tok) >> v.shift) as usize;
            loop {
                let e = v.table[slot];
                if e == EMPTY {
                    v.table[slot] = i as u32;
                    break;
                }
                if v.entry_bytes(e as usize) == tok {
                    return Err(Error::Value(format!("token {:?} appears twice", tok)));
                }
                slot = (slot + 1) & mask;
            }
        }
        for b in 0..256usize {
            if let Some(r) = v.get(&[b as u8]) {
                v.byte_ranks[b] = r;
            }
        }
        Ok(v)
    }

    #[inline(always)]
    fn entry_bytes(&self, i: usize) -> &[u8] {
        &self.bytes[self.offsets[i] as usize..self.offsets[i + 1] as usize]
    }

    /// The rank of `b`, if it is a mergeable token.
    #[inline(always)]
    pub fn get(&self, b: &[u8]) -> Option<Rank> {
        let mask = self.table.len() - 1;
        let mut slot = (hash_bytes(b) >> self.shift) as usize;
        loop {
            let e = unsafe { *self.table.get_unchecked(slot) };
            if e == EMPTY {
                return None;
            }
            let i = e as usize;
            let (s, t) = (self.offsets[i] as usize, self.offsets[i + 1] as usize);
            if t - s == b.len() && &self.bytes[s..t] == b {
                return Some(self.ranks[i]);
            }
            slot = (slot + 1) & mask;
        }
    }

    /// The rank of a single byte (`NO_ENTRY` when absent).
    #[inline(always)]
    pub fn byte_rank(&self, b: u8) -> Rank {
        self.byte_ranks[b as usize]
    }

    /// True when every single byte is a token, so any byte string can be encoded.
    pub fn has_all_bytes(&self) -> bool {
        self.byte_ranks.iter().all(|&r| r != NO_ENTRY)
    }

    /// The bytes of the token with rank `r`.
    #[inline(always)]
    pub fn token(&self, r: Rank) -> Option<&[u8]> {
        let i = *self.by_rank.get(r as usize)?;
        if i == NO_ENTRY {
            None
        } else {
            Some(self.entry_bytes(i as usize))
        }
    }

    pub fn len(&self) -> usize {
        self.ranks.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ranks.is_empty()
    }

    pub fn max_rank(&self) -> Option<Rank> {
        self.ranks.iter().copied().max()
    }

    /// `(bytes, rank)` in entry order.
    pub fn iter(&self) -> impl Iterator<Item = (&[u8], Rank)> + '_ {
        (0..self.len()).map(move |i| (self.entry_bytes(i), self.ranks[i]))
    }

    /// Writes the `.tiktoken` format: `base64(bytes) rank\n`, ordered by rank.
    pub fn to_tiktoken(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.bytes.len() * 2 + self.len() * 8);
        let eng = base64::engine::general_purpose::STANDARD;
        for r in 0..self.by_rank.len() {
            let i = self.by_rank[r];
            if i == NO_ENTRY {
                continue;
            }
            out.extend_from_slice(eng.encode(self.entry_bytes(i as usize)).as_bytes());
            out.push(b' ');
            out.extend_from_slice(r.to_string().as_bytes());
            out.push(b'\n');
        }
        out
    }
}

/// Parses the `.tiktoken` format (`base64 rank` per line; blank lines ignored). Errors name the
/// 1-based line.
pub fn parse_tiktoken(data: &[u8], source_name: Option<&str>) -> Result<Vocab> {
    let eng = base64::engine::general_purpose::STANDARD;
    let err = |line: usize, msg: String| Error::RankFile { source_name: source_name.map(str::to_owned), line, msg };
    let mut bytes = Vec::with_capacity(data.len() / 2);
    let mut offsets = vec![0u32];
    let mut ranks = Vec::new();
    let mut buf = Vec::new();
    for (i, line) in data.split(|&b| b == b'\n').enumerate() {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.iter().all(|b| b.is_ascii_whitespace()) {
            continue;
        }
        let mut parts = line.split(|&b| b == b' ').filter(|p| !p.is_empty());
        let (tok, rank) = match (parts.next(), parts.next(), parts.next()) {
            (Some(t), Some(r), None) => (t, r),
            _ => return Err(err(i + 1, "expected `<base64 token> <rank>`".into())),
        };
        buf.clear();
        eng.decode_vec(tok, &mut buf)
            .map_err(|e| err(i + 1, format!("invalid base64 {:?}: {e}", String::from_utf8_lossy(tok))))?;
        let rank: Rank = std::str::from_utf8(rank)
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| err(i + 1, format!("invalid rank {:?}", String::from_utf8_lossy(rank))))?;
        bytes.extend_from_slice(&buf);
        offsets.push(bytes.len() as u32);
        ranks.push(rank);
    }
    Vocab::from_parts(Cow::Owned(bytes), offsets, ranks).map_err(|e| match e {
        Error::Value(m) => err(0, m),
        e => e,
    })
}

macro_rules! bundled {
    ($($name:literal),*) => {
        /// Names of the rank files compiled into the library.
        pub const BUNDLED_RANK_FILES: &[&str] = &[$($name),*];
        fn bundled_blob(name: &str) -> Option<&'static [u8]> {
            match name {
                $($name => Some(include_bytes!(concat!(env!("OUT_DIR"), "/", $name, ".bin"))),)*
                _ => None,
            }
        }
    };
}
bundled!("r50k_base", "p50k_base", "cl100k_base", "o200k_base");

/// Loads one of the rank files compiled into the library (`r50k_base`, `p50k_base`,
/// `cl100k_base`, `o200k_base`) without parsing any text.
pub fn bundled(name: &str) -> Option<Vocab> {
    let blob = bundled_blob(name)?;
    let rd = |i: usize| u32::from_le_bytes(blob[4 * i..4 * i + 4].try_into().unwrap());
    let n = rd(0) as usize;
    let ranks: Vec<u32> = (0..n).map(|i| rd(1 + i)).collect();
    let offsets: Vec<u32> = (0..=n).map(|i| rd(1 + n + i)).collect();
    let bytes = &blob[4 * (2 * n + 2)..];
    Some(Vocab::from_parts(Cow::Borrowed(bytes), offsets, ranks).expect("bundled vocab is valid"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bundled_roundtrip_and_lookup() {
        let v = bundled("r50k_base").unwrap();
        assert_eq!(v.len(), 50256);
        assert_eq!(v.get(b"hello"), Some(31373));
        assert_eq!(v.token(31373), Some(&b"hello"[..]));
        assert!(v.has_all_bytes());
        let again = parse_tiktoken(&v.to_tiktoken(), None).unwrap();
        assert_eq!(again.get(b" world"), v.get(b" world"));
    }

    #[test]
    fn bad_rank_file_names_line() {
        let e = parse_tiktoken(b"YQ== 0\nYg== x\n", Some("f")).err().unwrap().to_string();
        assert!(e.contains("line 2"), "{e}");
        let e = parse_tiktoken(b"YQ== 0\n!!! 1\n", None).err().unwrap().to_string();
        assert!(e.contains("line 2") && e.contains("base64"), "{e}");
    }

    #[test]
    fn duplicates_rejected() {
        assert!(Vocab::from_entries([(&b"a"[..], 0), (&b"b"[..], 0)]).is_err());
        assert!(Vocab::from_entries([(&b"a"[..], 0), (&b"a"[..], 1)]).is_err());
    }
}
