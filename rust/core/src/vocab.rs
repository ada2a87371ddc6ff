//! Ranks: the mergeable-token vocabulary, its rank-file format and the bundled encodings.
//!
//! Why a hand-made table: encoding looks a byte string up for every candidate merge, so the
//! lookup is the hot path after pre-tokenization. Token bytes live in one contiguous buffer (for
//! the bundled vocabularies, a `'static` slice compiled into the library), and an open-addressing
//! SwissTable keyed by the packed bytes of short tokens (most lookups: a miss is settled by the
//! control bytes, which fit in L2) and by a 64-bit hash for long ones maps bytes to ranks.
//! Building it for o200k's 200k tokens takes a few milliseconds, which keeps cold loads instant.
use crate::char_masks::pack;
use crate::chars::CharTokens;
use crate::error::{Error, Result};
use crate::pages::HugePages;
use base64::Engine;
use std::borrow::Cow;
use std::collections::HashMap;

/// A token id.
pub type Rank = u32;
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
    /// rank -> entry index when the ranks are too sparse for `by_rank` (which is then empty).
    by_rank_sparse: HashMap<Rank, u32, BuildKeyHasher>,
    /// Tokens of up to 7 bytes, keyed by their packed bytes and length, one table per
    /// [`script`] of the key.
    short: Box<[Table<ShortKey>]>,
    /// Tokens of 8 to 15 bytes, keyed by their packed bytes and length, one table per
    /// [`script`] of the key's first 8 bytes.
    mid: Box<[Table<MidKey>]>,
    /// Longer tokens, keyed by a 64-bit hash of their bytes -> entry index (bytes verified).
    long: HashMap<u64, LongEntry, BuildKeyHasher>,
    /// Long tokens whose hash collided with another's (practically never non-empty).
    long_collisions: HashMap<Box<[u8]>, Rank>,
    /// One bit per [`long_key`] slot, set where a long token falls: most long candidates in a
    /// merge (two parts of a Russian or German word together) are not tokens, and this settles
    /// them with one load from a few KB instead of hashing every byte and probing `long`.
    long_filter: Box<[u64]>,
    byte_ranks: [Rank; 256],
    /// Every single byte is a token (so any byte string can be encoded).
    all_bytes: bool,
    /// Rank of every two-byte token, indexed by `(b0 << 8) | b1` (`NO_ENTRY` when absent).
    pair_ranks: Box<[Rank]>,
    /// The units (ASCII pairs, multi-byte characters) that merges may start from, built on first
    /// use.
    chars: std::sync::OnceLock<CharTokens>,
    /// Their analysis, precomputed at build time for the bundled vocabularies.
    char_masks: Option<&'static [u8]>,
    /// The highest rank (0 when empty).
    top_rank: Rank,
}

/// The filter slot of a token of 16 bytes or more, below `bits` (a power of two): a hash of its
/// first and last 8 bytes and its length.
#[inline(always)]
fn long_key(b: &[u8], bits: usize) -> usize {
    debug_assert!(b.len() >= 16 && bits.is_power_of_two());
    let first = u64::from_le_bytes(b[..8].try_into().unwrap());
    let last = u64::from_le_bytes(b[b.len() - 8..].try_into().unwrap());
    let h = (first.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ last.rotate_left(31) ^ b.len() as u64)
        .wrapping_mul(0xD6E8_FEB8_6659_FD93);
    (h >> 32) as usize & (bits - 1)
}

/// The low `k` bytes of `x` (k < 8).
#[inline(always)]
fn low_bytes(x: u64, k: usize) -> u64 {
    x & ((1u64 << (8 * k)) - 1)
}

/// How many tables [`script`] spreads the short and mid tokens over.
const SCRIPTS: usize = 10;

/// The script table of each byte value, for the first byte of 0x80 or more of a key.
const SCRIPT_OF: [u8; 256] = {
    let mut t = [1u8; 256];
    let mut b = 0xC2;
    while b < 0xF5 {
        t[b] = match b {
            0xC2..=0xCF => 2, // Latin-1, Latin extended, IPA, combining marks, Greek
            0xD0..=0xD4 => 3, // Cyrillic
            0xD5..=0xDF => 4, // Armenian, Hebrew, Arabic, Syriac, Thaana, NKo
            0xE0 => 5,        // Indic scripts, Thai, Lao, Tibetan
            0xE1..=0xE2 => 6, // Georgian, Vietnamese Latin, Greek extended, punctuation, symbols
            0xE3..=0xE9 => 7, // CJK symbols, kana, CJK ideographs
            0xEA..=0xEF => 8, // Hangul, compatibility and fullwidth forms
            _ => 9,           // four-byte characters (emoji, rare ideographs)
        };
        b += 1;
    }
    t
};

/// Which table holds a short or mid key, from its first 8 bytes `lo`: 0 when they are ASCII,
/// else a group of scripts from the first byte of 0x80 or more (a lead byte, or 1 for a stray
/// continuation byte).
///
/// Why: a text in one language looks up tokens of its script (and ASCII), and in one big table
/// those are spread over every cache line of it; in their own table they are packed, so a
/// Russian text's merges find their tokens in L2 instead of L3.
#[inline(always)]
fn script(lo: u64) -> usize {
    let high = lo & 0x8080_8080_8080_8080;
    if high == 0 {
        return 0;
    }
    SCRIPT_OF[(lo >> (high.trailing_zeros() & !7)) as u8 as usize] as usize
}

/// Where a long token's bytes are, and its rank.
#[derive(Clone, Copy)]
struct LongEntry {
    offset: u32,
    len: u32,
    rank: Rank,
}

/// A hasher for keys that are already `u64`: one multiply-xorshift mix.
#[derive(Default, Clone, Copy)]
pub struct KeyHasher(u64);

impl std::hash::Hasher for KeyHasher {
    #[inline(always)]
    fn finish(&self) -> u64 {
        self.0
    }
    #[inline(always)]
    fn write(&mut self, bytes: &[u8]) {
        self.0 = hash_bytes(bytes);
    }
    #[inline(always)]
    fn write_u64(&mut self, k: u64) {
        let h = (k ^ (k >> 31)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        self.0 = h ^ (h >> 29);
    }
    #[inline(always)]
    fn write_u128(&mut self, k: u128) {
        let (lo, hi) = (k as u64, (k >> 64) as u64);
        let h = (lo ^ hi.rotate_left(29)).wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ hi;
        let h = (h ^ (h >> 31)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        self.0 = h ^ (h >> 29);
    }
}

/// Packs 8 to 15 bytes and the length into one `u128` key (the second load overlaps the first
/// and is shifted so that only bytes 8.. remain).
#[inline(always)]
fn pack_mid(b: &[u8]) -> u128 {
    let n = b.len();
    debug_assert!((8..=15).contains(&n));
    let lo = u64::from_le_bytes(b[..8].try_into().unwrap());
    let hi = if n == 8 {
        0
    } else {
        u64::from_le_bytes(b[n - 8..].try_into().unwrap()) >> (8 * (16 - n))
    };
    (lo as u128) | ((hi as u128) << 64) | ((n as u128) << 120)
}

pub type BuildKeyHasher = std::hash::BuildHasherDefault<KeyHasher>;

/// A short token's packed key ([`pack`]) in two 4-byte halves, so that a table entry with its
/// rank takes 12 bytes instead of the 16 a `u64` key (8-byte aligned) takes.
///
/// Why: the ASCII table of o200k holds 93,000 short tokens; with the control bytes it shrinks
/// from 2.2 MB to 1.7 MB, and more of the lines a text's lookups touch stay in L2.
#[derive(Clone, Copy, PartialEq, Eq)]
struct ShortKey([u32; 2]);

impl ShortKey {
    #[inline(always)]
    fn new(k: u64) -> Self {
        ShortKey([k as u32, (k >> 32) as u32])
    }
}

impl std::hash::Hash for ShortKey {
    #[inline(always)]
    fn hash<H: std::hash::Hasher>(&self, h: &mut H) {
        h.write_u64(self.0[0] as u64 | (self.0[1] as u64) << 32);
    }
}

/// A mid token's packed key ([`pack_mid`]) in four 4-byte parts: an entry takes 20 bytes
/// instead of the 32 of a `u128` key (16-byte aligned).
#[derive(Clone, Copy, PartialEq, Eq)]
struct MidKey([u32; 4]);

impl MidKey {
    #[inline(always)]
    fn new(k: u128) -> Self {
        MidKey([
            k as u32,
            (k >> 32) as u32,
            (k >> 64) as u32,
            (k >> 96) as u32,
        ])
    }
}

impl std::hash::Hash for MidKey {
    #[inline(always)]
    fn hash<H: std::hash::Hasher>(&self, h: &mut H) {
        let [a, b, c, d] = self.0.map(u128::from);
        h.write_u128(a | b << 32 | c << 64 | d << 96);
    }
}

/// A lookup table of packed short tokens. Its memory is on huge pages where the system has them
/// ([`HugePages`]): the side-by-side bench measured 4-11% more throughput with them, because a
/// lookup after another library has run no longer misses the TLB as well as the cache.
type Table<K> = hashbrown::HashMap<K, Rank, BuildKeyHasher, HugePages>;

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
    pub fn from_parts(
        bytes: Cow<'static, [u8]>,
        offsets: Vec<u32>,
        ranks: Vec<Rank>,
    ) -> Result<Self> {
        let n = ranks.len();
        assert_eq!(offsets.len(), n + 1);
        let max_rank = ranks.iter().copied().max().unwrap_or(0) as usize;
        if max_rank == NO_ENTRY as usize {
            // The byte table marks a byte the vocabulary lacks with it, so a one-byte token of
            // that rank would read as missing. (Longer tokens of that rank work as in tiktoken,
            // whose merge also takes it for "no merge": only whole pieces find them.)
            let i = ranks.iter().position(|&r| r == NO_ENTRY).unwrap_or(0);
            if offsets[i + 1] - offsets[i] == 1 {
                return Err(Error::Value(format!(
                    "the one-byte token {:?} has rank {NO_ENTRY} (2**32 - 1), which bytepair \
                     reserves for a byte the vocabulary lacks",
                    String::from_utf8_lossy(&bytes[offsets[i] as usize..offsets[i + 1] as usize])
                )));
            }
        }
        let dense = n > 0 && max_rank <= 16 * n + (1 << 20);
        let mut by_rank = vec![NO_ENTRY; if dense { max_rank + 1 } else { 0 }];
        let mut by_rank_sparse: HashMap<Rank, u32, BuildKeyHasher> = HashMap::default();
        if !dense {
            for (i, &r) in ranks.iter().enumerate() {
                if by_rank_sparse.insert(r, i as u32).is_some() {
                    return Err(Error::Value(format!(
                        "rank {r} is given to two different tokens; ranks must be unique"
                    )));
                }
            }
        }
        for (i, &r) in ranks.iter().enumerate().filter(|_| dense) {
            if by_rank[r as usize] != NO_ENTRY {
                return Err(Error::Value(format!(
                    "rank {r} is given to two different tokens; ranks must be unique"
                )));
            }
            by_rank[r as usize] = i as u32;
        }
        let entry = |i: usize| &bytes[offsets[i] as usize..offsets[i + 1] as usize];
        let (mut n_short, mut n_mid) = ([0usize; SCRIPTS], [0usize; SCRIPTS]);
        for i in 0..n {
            let tok = entry(i);
            match tok.len() {
                0..=7 => n_short[script(pack(tok))] += 1,
                8..=15 => n_mid[script(pack_mid(tok) as u64)] += 1,
                _ => {}
            }
        }
        fn new_tables<K>(sizes: &[usize]) -> Box<[Table<K>]> {
            let t =
                |&n: &usize| Table::with_capacity_and_hasher_in(n, Default::default(), HugePages);
            sizes.iter().map(t).collect()
        }
        let (mut short, mut mid) = (
            new_tables::<ShortKey>(&n_short),
            new_tables::<MidKey>(&n_mid),
        );
        let mut long: HashMap<u64, LongEntry, BuildKeyHasher> =
            HashMap::with_capacity_and_hasher(n / 2, Default::default());
        let mut long_collisions = HashMap::new();
        let n_long = (0..n).filter(|&i| entry(i).len() > 15).count();
        // About 16 bits per long token (a 1/16 false-positive rate), at least 4 Kbit.
        let filter_bits = (n_long * 16).next_power_of_two().max(4096);
        let mut long_filter = vec![0u64; filter_bits / 64].into_boxed_slice();
        let dup = |tok: &[u8]| Error::Value(format!("token {:?} appears twice", tok));
        for i in 0..n {
            let tok = entry(i);
            let r = ranks[i];
            if tok.len() <= 7 {
                let k = pack(tok);
                if short[script(k)].insert(ShortKey::new(k), r).is_some() {
                    return Err(dup(tok));
                }
            } else if tok.len() <= 15 {
                let k = pack_mid(tok);
                if mid[script(k as u64)].insert(MidKey::new(k), r).is_some() {
                    return Err(dup(tok));
                }
            } else {
                let k = long_key(tok, filter_bits);
                long_filter[k / 64] |= 1 << (k % 64);
                match long.entry(hash_bytes(tok)) {
                    std::collections::hash_map::Entry::Vacant(e) => {
                        e.insert(LongEntry {
                            offset: offsets[i],
                            len: tok.len() as u32,
                            rank: r,
                        });
                    }
                    std::collections::hash_map::Entry::Occupied(e) => {
                        let owned: Box<[u8]> = tok.into();
                        let o = e.get();
                        if &bytes[o.offset as usize..(o.offset + o.len) as usize] == tok
                            || long_collisions.insert(owned, r).is_some()
                        {
                            return Err(dup(tok));
                        }
                    }
                }
            }
        }
        let mut v = Vocab {
            bytes,
            offsets,
            ranks,
            by_rank,
            by_rank_sparse,
            short,
            mid,
            long,
            long_collisions,
            long_filter,
            byte_ranks: [NO_ENTRY; 256],
            all_bytes: false,
            pair_ranks: vec![NO_ENTRY; 65536].into_boxed_slice(),
            chars: std::sync::OnceLock::new(),
            char_masks: None,
            top_rank: max_rank as Rank,
        };
        for (i, &r) in v.ranks.iter().enumerate() {
            let (s, e) = (v.offsets[i] as usize, v.offsets[i + 1] as usize);
            if e - s == 2 {
                v.pair_ranks[((v.bytes[s] as usize) << 8) | v.bytes[s + 1] as usize] = r;
            }
        }
        for b in 0..256usize {
            if let Some(r) = v.get(&[b as u8]) {
                v.byte_ranks[b] = r;
            }
        }
        v.all_bytes = v.byte_ranks.iter().all(|&r| r != NO_ENTRY);
        Ok(v)
    }

    #[inline(always)]
    fn entry_bytes(&self, i: usize) -> &[u8] {
        &self.bytes[self.offsets[i] as usize..self.offsets[i + 1] as usize]
    }

    /// The rank of `b`, if it is a mergeable token.
    #[inline(always)]
    pub fn get(&self, b: &[u8]) -> Option<Rank> {
        if b.len() <= 7 {
            let k = pack(b);
            return self.short[script(k)].get(&ShortKey::new(k)).copied();
        }
        if b.len() <= 15 {
            let k = pack_mid(b);
            return self.mid[script(k as u64)].get(&MidKey::new(k)).copied();
        }
        self.get_long(b)
    }

    /// The rank of `buf[s..e]`, reading whole words: `buf` must have at least 16 bytes from `s`
    /// (the bytes past `e` are ignored), which spares the packing branches of [`get`](Self::get).
    #[inline(always)]
    pub fn get_at(&self, buf: &[u8], s: usize, e: usize) -> Option<Rank> {
        let n = e - s;
        debug_assert!(s + 16 <= buf.len() && e >= s);
        if n <= 15 {
            let w = &buf[s..s + 16];
            let lo = u64::from_le_bytes(w[..8].try_into().unwrap());
            if n <= 7 {
                let k = low_bytes(lo, n) | ((n as u64) << 56);
                // SAFETY: script() < SCRIPTS = short.len().
                return unsafe { self.short.get_unchecked(script(k)) }
                    .get(&ShortKey::new(k))
                    .copied();
            }
            let hi = low_bytes(u64::from_le_bytes(w[8..].try_into().unwrap()), n - 8);
            let key = (lo as u128) | ((hi as u128) << 64) | ((n as u128) << 120);
            // SAFETY: script() < SCRIPTS = mid.len().
            return unsafe { self.mid.get_unchecked(script(lo)) }
                .get(&MidKey::new(key))
                .copied();
        }
        self.get_long(&buf[s..e])
    }

    #[inline(always)]
    fn get_long(&self, b: &[u8]) -> Option<Rank> {
        let k = long_key(b, self.long_filter.len() * 64);
        // SAFETY: k < long_filter.len() * 64.
        if unsafe { *self.long_filter.get_unchecked(k / 64) } >> (k % 64) & 1 == 0 {
            return None;
        }
        self.get_long_slow(b)
    }

    #[inline(never)]
    fn get_long_slow(&self, b: &[u8]) -> Option<Rank> {
        if let Some(e) = self.long.get(&hash_bytes(b)) {
            if e.len as usize == b.len()
                && &self.bytes[e.offset as usize..(e.offset + e.len) as usize] == b
            {
                return Some(e.rank);
            }
        }
        if self.long_collisions.is_empty() {
            None
        } else {
            self.long_collisions.get(b).copied()
        }
    }

    /// The rank of a single byte (`NO_ENTRY` when absent).
    #[inline(always)]
    pub fn byte_rank(&self, b: u8) -> Rank {
        self.byte_ranks[b as usize]
    }

    /// The rank of the two-byte token `a b` (`NO_ENTRY` when absent).
    #[inline(always)]
    pub fn pair_rank(&self, a: u8, b: u8) -> Rank {
        // SAFETY: the table has 65536 entries.
        unsafe {
            *self
                .pair_ranks
                .get_unchecked(((a as usize) << 8) | b as usize)
        }
    }

    /// The unit tokens that merges may start from (see [`crate::chars`]), made on first use:
    /// from the build-time analysis for the bundled vocabularies and for any vocabulary equal to
    /// one (as when an encoding is built from `cl100k_base._mergeable_ranks` plus its own special
    /// tokens; 0.2-1.5 ms), else analysed then (14 ms for a cl100k-sized vocabulary, 37 ms for
    /// an o200k-sized one).
    #[inline]
    pub fn chars(&self) -> &CharTokens {
        self.chars.get_or_init(|| {
            match self
                .char_masks
                .or_else(|| self.same_as_bundled().map(|(_, m)| m))
            {
                Some(b) => CharTokens::from_units(crate::char_masks::from_bytes(b)),
                None => CharTokens::build(self),
            }
        })
    }

    /// The bundled rank file with exactly this vocabulary's tokens and ranks, if any: its name
    /// and its build-time unit analysis. A token-by-token comparison, about a millisecond.
    fn same_as_bundled(&self) -> Option<(&'static str, &'static [u8])> {
        BUNDLED_RANK_FILES.iter().find_map(|&name| {
            let (blob, masks) = bundled_blob(name)?;
            let b = RankBlob(blob);
            let same = b.len() == self.len()
                && (0..b.len()).all(|i| self.token(b.rank(i)) == Some(b.token(i)));
            same.then_some((name, masks))
        })
    }

    /// True when every single byte is a token, so any byte string can be encoded.
    pub fn has_all_bytes(&self) -> bool {
        self.all_bytes
    }

    /// The length in bytes of the longest token.
    pub fn max_token_len(&self) -> usize {
        self.offsets
            .windows(2)
            .map(|w| (w[1] - w[0]) as usize)
            .max()
            .unwrap_or(0)
    }

    /// The bytes of the token with rank `r`.
    #[inline(always)]
    pub fn token(&self, r: Rank) -> Option<&[u8]> {
        let i = match self.by_rank.get(r as usize) {
            Some(&i) => i,
            None => *self.by_rank_sparse.get(&r)?,
        };
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

    #[inline]
    pub fn max_rank(&self) -> Option<Rank> {
        (!self.ranks.is_empty()).then_some(self.top_rank)
    }

    /// `(bytes, rank)` in entry order.
    pub fn iter(&self) -> impl Iterator<Item = (&[u8], Rank)> + Clone + '_ {
        (0..self.len()).map(move |i| (self.entry_bytes(i), self.ranks[i]))
    }

    /// Writes the `.tiktoken` format: `base64(bytes) rank\n`, ordered by rank.
    pub fn to_tiktoken(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.bytes.len() * 2 + self.len() * 8);
        let eng = base64::engine::general_purpose::STANDARD;
        let order: Vec<(Rank, u32)> = if self.by_rank_sparse.is_empty() {
            (0..self.by_rank.len() as Rank)
                .zip(self.by_rank.iter().copied())
                .filter(|p| p.1 != NO_ENTRY)
                .collect()
        } else {
            let mut v: Vec<(Rank, u32)> =
                self.by_rank_sparse.iter().map(|(&r, &i)| (r, i)).collect();
            v.sort_unstable();
            v
        };
        for (r, i) in order {
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
    let err = |line: usize, msg: String| Error::RankFile {
        source_name: source_name.map(str::to_owned),
        line,
        msg,
    };
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
        eng.decode_vec(tok, &mut buf).map_err(|e| {
            err(
                i + 1,
                format!("invalid base64 {:?}: {e}", String::from_utf8_lossy(tok)),
            )
        })?;
        let rank: Rank = std::str::from_utf8(rank)
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| {
                err(
                    i + 1,
                    format!("invalid rank {:?}", String::from_utf8_lossy(rank)),
                )
            })?;
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
        fn bundled_blob(name: &str) -> Option<(&'static [u8], &'static [u8])> {
            match name {
                $($name => Some((
                    include_bytes!(concat!(env!("OUT_DIR"), "/", $name, ".bin")),
                    include_bytes!(concat!(env!("OUT_DIR"), "/", $name, ".chars.bin")),
                )),)*
                _ => None,
            }
        }
    };
}
bundled!("r50k_base", "p50k_base", "cl100k_base", "o200k_base");

/// A `<name>.bin` rank blob made by `build.rs` (little endian): `n: u32`, `ranks: [u32; n]`,
/// `offsets: [u32; n + 1]`, then the concatenated token bytes.
struct RankBlob(&'static [u8]);

impl RankBlob {
    fn word(&self, i: usize) -> u32 {
        u32::from_le_bytes(self.0[4 * i..4 * i + 4].try_into().unwrap())
    }
    fn len(&self) -> usize {
        self.word(0) as usize
    }
    fn rank(&self, i: usize) -> Rank {
        self.word(1 + i)
    }
    fn offset(&self, i: usize) -> usize {
        self.word(1 + self.len() + i) as usize
    }
    fn bytes(&self) -> &'static [u8] {
        &self.0[4 * (2 * self.len() + 2)..]
    }
    fn token(&self, i: usize) -> &'static [u8] {
        &self.bytes()[self.offset(i)..self.offset(i + 1)]
    }
}

/// Loads one of the rank files compiled into the library (`r50k_base`, `p50k_base`,
/// `cl100k_base`, `o200k_base`) without parsing any text.
pub fn bundled(name: &str) -> Option<Vocab> {
    let (blob, chars) = bundled_blob(name)?;
    let b = RankBlob(blob);
    let n = b.len();
    let ranks: Vec<u32> = (0..n).map(|i| b.rank(i)).collect();
    let offsets: Vec<u32> = (0..=n).map(|i| b.offset(i) as u32).collect();
    let mut v = Vocab::from_parts(Cow::Borrowed(b.bytes()), offsets, ranks)
        .expect("bundled vocab is valid");
    v.char_masks = Some(chars);
    Some(v)
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
    fn every_long_token_is_found_past_the_filter() {
        // The long-token filter must never turn a token away; near misses stay misses.
        for name in ["cl100k_base", "o200k_base", "p50k_base"] {
            let v = bundled(name).unwrap();
            let all: HashMap<&[u8], Rank> = v.iter().collect();
            let mut n = 0;
            for (tok, r) in v.iter().filter(|(t, _)| t.len() >= 16) {
                n += 1;
                assert_eq!(v.get(tok), Some(r), "{name} {tok:?}");
                let mut buf = tok.to_vec();
                buf.extend_from_slice(&[0u8; 16]);
                assert_eq!(v.get_at(&buf, 0, tok.len()), Some(r), "{name} {tok:?}");
                for cut in [1, 2] {
                    let shorter = &tok[..tok.len() - cut];
                    assert_eq!(v.get(shorter), all.get(shorter).copied());
                }
                let mut changed = tok.to_vec();
                *changed.last_mut().unwrap() ^= 0x20;
                assert_eq!(v.get(&changed), all.get(&changed[..]).copied());
            }
            assert!(n > 100, "{name}: {n} long tokens");
        }
    }

    #[test]
    fn word_loads_agree_with_packed_lookup() {
        // `get_at` reads whole words around the key and masks; it must agree with `get` for
        // every token, every token with a byte cut off or changed, and any trailing garbage.
        for name in ["cl100k_base", "o200k_base"] {
            let v = bundled(name).unwrap();
            word_loads_agree(&v);
        }
    }

    fn word_loads_agree(v: &Vocab) {
        let mut buf = vec![0xAAu8; 64];
        for (tok, r) in v.iter().filter(|(t, _)| t.len() <= 20) {
            assert_eq!(v.get(tok), Some(r), "{tok:?}");
            for off in [0usize, 3] {
                buf.fill(0xAA);
                buf[off..off + tok.len()].copy_from_slice(tok);
                assert_eq!(v.get_at(&buf, off, off + tok.len()), Some(r), "{tok:?}");
                let cut = off + tok.len() - 1;
                assert_eq!(v.get_at(&buf, off, cut), v.get(&buf[off..cut]), "{tok:?}");
                buf[cut] ^= 0x55;
                assert_eq!(
                    v.get_at(&buf, off, off + tok.len()),
                    v.get(&buf[off..off + tok.len()])
                );
            }
        }
    }

    #[test]
    fn tokens_of_every_script_table_are_found() {
        // Short and mid tokens are spread over tables by the first byte of 0x80 or more in
        // their first 8 bytes: put every such byte value at every position, in tokens of 2 to
        // 15 bytes, and check that each is found and that a one-byte change is not.
        let mut toks: Vec<Vec<u8>> = (0..=255u8).map(|b| vec![b]).collect();
        for b in 0x80..=0xFFu8 {
            for at in 0..8 {
                for len in [at + 1, 7, 8, 12, 15] {
                    if len < 2 || len <= at {
                        continue;
                    }
                    let mut t: Vec<u8> = (0..len).map(|i| b'a' + (i % 26) as u8).collect();
                    t[at] = b;
                    if len > at + 1 {
                        t[at + 1] = 0xB0 ^ (at as u8); // a later high byte must not matter
                    }
                    toks.push(t);
                }
            }
        }
        toks.sort();
        toks.dedup();
        let v =
            Vocab::from_entries(toks.iter().enumerate().map(|(i, t)| (&t[..], i as Rank))).unwrap();
        assert!(v.short.iter().filter(|t| !t.is_empty()).count() == SCRIPTS);
        word_loads_agree(&v);
        for (i, t) in toks.iter().enumerate().filter(|(_, t)| t.len() >= 2) {
            let mut changed = t.clone();
            changed[0] = b'#';
            assert_eq!(
                v.get(&changed),
                toks.binary_search(&changed).ok().map(|j| j as Rank)
            );
            assert_eq!(v.get(t), Some(i as Rank));
        }
    }

    #[test]
    fn build_time_char_analysis_equals_a_fresh_one() {
        for name in BUNDLED_RANK_FILES {
            let v = bundled(name).unwrap();
            let (_, blob) = bundled_blob(name).unwrap();
            let fresh = crate::char_masks::char_masks(v.iter(), |b| v.get(b));
            assert_eq!(crate::char_masks::from_bytes(blob), fresh, "{name}");
            assert!(!fresh.units.is_empty(), "{name}");
        }
    }

    #[test]
    fn a_copy_of_a_bundled_vocabulary_uses_its_build_time_analysis() {
        let v = bundled("cl100k_base").unwrap();
        let copy = Vocab::from_entries(v.iter()).unwrap();
        assert_eq!(copy.same_as_bundled().map(|(n, _)| n), Some("cl100k_base"));
        assert_eq!(copy.chars().len(), v.chars().len());
        // One token changed: no longer the bundled vocabulary, so analysed afresh.
        let changed = Vocab::from_entries(v.iter().map(|(b, r)| match r {
            1000 => (&b"\xff\xfe\xfd"[..], r),
            _ => (b, r),
        }))
        .unwrap();
        assert_eq!(changed.same_as_bundled(), None);
        assert!(!changed.chars().is_empty());
    }

    #[test]
    fn bad_rank_file_names_line() {
        let e = parse_tiktoken(b"YQ== 0\nYg== x\n", Some("f"))
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("line 2"), "{e}");
        let e = parse_tiktoken(b"YQ== 0\n!!! 1\n", None)
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("line 2") && e.contains("base64"), "{e}");
    }

    #[test]
    fn sparse_ranks() {
        let bytes: Vec<[u8; 1]> = (0..=255u8).map(|b| [b]).collect();
        let mut entries: Vec<(&[u8], Rank)> =
            bytes.iter().map(|b| (&b[..], b[0] as Rank)).collect();
        entries.push((b"ab", 1_000_000_000));
        let v = Vocab::from_entries(entries).unwrap();
        assert_eq!(v.get(b"ab"), Some(1_000_000_000));
        assert_eq!(v.token(1_000_000_000), Some(&b"ab"[..]));
        assert_eq!(v.token(999), None);
        assert!(String::from_utf8(v.to_tiktoken())
            .unwrap()
            .ends_with("YWI= 1000000000\n"));
    }

    #[test]
    fn duplicates_rejected() {
        assert!(Vocab::from_entries([(&b"a"[..], 0), (&b"b"[..], 0)]).is_err());
        assert!(Vocab::from_entries([(&b"a"[..], 0), (&b"a"[..], 1)]).is_err());
    }
}
