//! Multi-byte characters, pairs of characters and pairs of ASCII bytes that the merge may start
//! from as whole tokens.
//!
//! Why: in Cyrillic, Greek, CJK and most other scripts a character is 2 to 4 bytes, and merging a
//! piece from single bytes first spends one merge step (a min scan and two table lookups) per
//! extra byte just to rebuild its characters. Starting from the characters instead skips those
//! steps, but it is exact only where no merge across the character's edge could come first. In
//! English and code the first merges of a word are mostly pairs of letters (`th`, `in`, `er`),
//! and starting from those pairs where it is exact halves the merge steps.
//!
//! When starting from character `c` gives exactly the byte-level merge. Let `M` be the highest
//! rank among the merges that turn `c`'s bytes alone into the token `c`, and let `p` and `n` be
//! the bytes just before and after `c` in the piece (none at the piece's edges). Suppose
//! - every token that ends with `p` followed by a non-empty prefix of `c` (all of `c` included)
//!   ranks above `M`, and
//! - every token that starts with a non-empty suffix of `c` (all of `c` included) followed by
//!   `n` ranks above `M`.
//!
//! Take the byte-level merge. Until `c` is complete, one of `c`'s own next merges (rank ≤ `M`)
//! is always available. A merge across `c`'s edge would make one of the tokens above, which rank
//! higher, so it never comes first. So `c` completes before anything crosses its edges, and
//! every merge made elsewhere before then ranks ≤ `M`.
//!
//! Now start from `c` already merged. The only new pairs, `(left, c)` and `(c, right)`, make
//! tokens of the same two kinds, which rank above `M`. So the same merges elsewhere are chosen in
//! the same order, leftmost ties included: the candidates at their rank are the byte-level run's
//! candidates minus the pairs inside `c`. After `c` completes, the two runs are in the same state.
//!
//! Nothing in the argument needs `c` to be one character: it holds for any token. The units
//! here are the tokens of two ASCII bytes (`th`, ` t`, `==`), and the tokens of one or two whole
//! characters, at least one of them multi-byte, of at most 7 bytes (` з`, `ра`, `中国`); at each
//! position the merge tries two characters, then one.
//!
//! Applied one unit at a time, this lets any set of disjoint such units start merged. The
//! conditions depend only on the unit and the bytes `p` and `n`, so each unit token keeps two
//! 256-bit masks: the `p` bytes and the `n` bytes for which it may start merged. They are
//! computed from the vocabulary alone: at build time for the bundled ones, else on first use.
//!
//! In `../shared/corpus` about 78-87% (cl100k) and 84-99% (o200k) of the multi-byte characters
//! of Russian, Japanese and Chinese text qualify. Pre-merging every character regardless gave 914
//! to 1587 wrong pieces in 300 KB samples. In a Python prototype on 300 KB of its English prose,
//! ASCII pairs cut cl100k's merge steps from 21,337 to 9,786 (code: 30,391 to 16,951).
use crate::char_masks::{char_len, pack, Unit, Units, MAX_UNIT};
use crate::vocab::{BuildKeyHasher, Rank, Vocab};
use std::collections::HashMap;

#[inline(always)]
fn bit(mask: &[u64], b: u8) -> bool {
    (mask[(b >> 6) as usize] >> (b & 63)) & 1 != 0
}

/// A two-byte ASCII unit: the ASCII halves of its masks, its rank and its index in `info`.
#[derive(Clone, Copy)]
struct AsciiPair {
    left: [u64; 2],
    right: [u64; 2],
    rank: Rank,
    id: u16,
}

/// The unit tokens of a vocabulary, with their masks (see the module docs).
#[derive(Clone, Default)]
pub struct CharTokens {
    /// Two-byte characters by code point: index into `info` plus one (0: none).
    two: Vec<u16>,
    /// Two-byte ASCII tokens by `a << 7 | b`: index into `pairs` plus one (0: none).
    ascii: Vec<u16>,
    /// The two-byte ASCII units with their masks' ASCII halves inline, so that the check is one
    /// load after the index (the pure-ASCII pieces of English and code are most merges).
    pairs: Vec<AsciiPair>,
    /// Two-byte characters that start or end a two-character unit tested below, by code point:
    /// their index in those tables plus one (0: none).
    cidx: Vec<u16>,
    /// How many such characters there are, plus one: the tables' row length.
    width: usize,
    /// Units of two two-byte characters (`ра`, `ου`) by `cidx` of both: index into `info` plus
    /// one (0: none). A direct table, because every position of a Cyrillic or Greek word asks.
    two_two: Vec<u16>,
    /// Units of an ASCII byte and a two-byte character (` п`) by the byte and the character's
    /// `cidx`: index into `info` plus one (0: none).
    ascii_two: Vec<u16>,
    /// The other units by their packed bytes: index into `info`.
    units: HashMap<u64, u16, BuildKeyHasher>,
    info: Vec<Unit>,
    /// The distinct masks that `info` points to.
    masks: Vec<[u64; 4]>,
}

/// The code point of the two-byte character `a b` (below 0x800 whatever the bytes).
#[inline(always)]
fn code_point(a: u8, b: u8) -> usize {
    ((a as usize & 0x1F) << 6) | (b as usize & 0x3F)
}

/// The code point of the two-byte character at `piece[i..i + 2]` (its lead byte checked by the
/// caller), if the second byte continues it.
#[inline(always)]
fn code_point_at(piece: &[u8], i: usize) -> Option<usize> {
    let b1 = piece[i + 1];
    (b1 & 0xC0 == 0x80).then(|| code_point(piece[i], b1))
}

/// The byte length of the character that `b` starts: 1 for ASCII, 0 for a byte that starts none.
#[inline(always)]
fn len_at(b: u8) -> usize {
    if b < 0x80 {
        1
    } else {
        char_len(b)
    }
}

impl CharTokens {
    /// Finds the unit tokens of `v` and where each may start merged.
    pub fn build(v: &Vocab) -> Self {
        Self::from_units(crate::char_masks::char_masks(v.iter(), |b| v.get(b)))
    }

    /// Indexes an analysis (the bundled vocabularies have theirs computed at build time).
    pub fn from_units(u: Units) -> Self {
        let Units { masks, units: info } = u;
        let mut t = CharTokens {
            two: vec![0; 0x800],
            ascii: vec![0; 1 << 14],
            cidx: vec![0; 0x800],
            ..Default::default()
        };
        // The two-byte characters of the units the direct tables hold, in code point order (so
        // that one script's rows and columns are together).
        let shape = |c: &[u8]| match c.len() {
            4 if char_len(c[0]) == 2 && char_len(c[2]) == 2 => Some(2),
            3 if c[0] < 0x80 && char_len(c[1]) == 2 => Some(1),
            _ => None,
        };
        for m in info.iter() {
            let c = m.unit();
            match shape(c) {
                Some(2) => {
                    t.cidx[code_point(c[0], c[1])] = 1;
                    t.cidx[code_point(c[2], c[3])] = 1;
                }
                Some(_) => t.cidx[code_point(c[1], c[2])] = 1,
                None => {}
            }
        }
        let mut width = 1;
        for x in t.cidx.iter_mut().filter(|x| **x != 0) {
            *x = width as u16;
            width += 1;
        }
        t.width = width;
        t.two_two = vec![0; width * width];
        t.ascii_two = vec![0; 128 * width];
        for (id, m) in info.iter().enumerate() {
            let c = m.unit();
            if let Some(k1) = shape(c) {
                let right = t.cidx[code_point(c[k1], c[k1 + 1])] as usize;
                if k1 == 2 {
                    let left = t.cidx[code_point(c[0], c[1])] as usize;
                    t.two_two[left * width + right] = id as u16 + 1;
                } else {
                    t.ascii_two[c[0] as usize * width + right] = id as u16 + 1;
                }
            } else if c.len() == 2 && c.is_ascii() && t.pairs.len() < u16::MAX as usize {
                let (l, r) = (&masks[m.left as usize], &masks[m.right as usize]);
                t.pairs.push(AsciiPair {
                    left: [l[0], l[1]],
                    right: [r[0], r[1]],
                    rank: m.rank,
                    id: id as u16,
                });
                t.ascii[(c[0] as usize) << 7 | c[1] as usize] = t.pairs.len() as u16;
            } else if c.len() == 2 && char_len(c[0]) == 2 {
                t.two[code_point(c[0], c[1])] = id as u16 + 1;
            } else {
                t.units.insert(pack(c), id as u16);
            }
        }
        t.info = info;
        t.masks = masks;
        t
    }

    /// The number of unit tokens known.
    pub fn len(&self) -> usize {
        self.info.len()
    }

    pub fn is_empty(&self) -> bool {
        self.info.is_empty()
    }

    /// `info` if it may start merged at `piece[i..i + k]`.
    #[inline(always)]
    fn allowed(&self, info: &Unit, piece: &[u8], i: usize, k: usize) -> Option<(usize, Rank)> {
        if i > 0 && !bit(&self.masks[info.left as usize], piece[i - 1]) {
            return None;
        }
        if i + k < piece.len() && !bit(&self.masks[info.right as usize], piece[i + k]) {
            return None;
        }
        Some((k, info.rank))
    }

    /// If the two ASCII bytes at `piece[i..i + 2]` are a unit that may start merged there: its
    /// length (2) and rank.
    #[inline(always)]
    pub fn ascii_pair(&self, piece: &[u8], i: usize) -> Option<(usize, Rank)> {
        let (a, b) = (piece[i], *piece.get(i + 1)?);
        if (a | b) >= 0x80 {
            return None;
        }
        // SAFETY: a, b < 0x80, so the index is below 1 << 14 = ascii.len().
        let id = unsafe { *self.ascii.get_unchecked((a as usize) << 7 | b as usize) };
        let e = self.pairs.get(id.checked_sub(1)? as usize)?;
        // A non-ASCII neighbour is decided by the unit's full masks.
        let full = || self.allowed(&self.info[e.id as usize], piece, i, 2);
        if i > 0 {
            let p = piece[i - 1];
            if p >= 0x80 {
                return full();
            }
            if !bit(&e.left, p) {
                return None;
            }
        }
        if let Some(&n) = piece.get(i + 2) {
            if n >= 0x80 {
                return full();
            }
            if !bit(&e.right, n) {
                return None;
            }
        }
        Some((2, e.rank))
    }

    /// The `cidx` of the two-byte character at `piece[i..i + 2]` (its lead byte checked by the
    /// caller), 0 if it has none or the second byte does not continue it.
    #[inline(always)]
    fn cidx_at(&self, piece: &[u8], i: usize) -> usize {
        // SAFETY: code points of two-byte characters are below 0x800 = cidx.len().
        code_point_at(piece, i).map_or(0, |cp| unsafe { *self.cidx.get_unchecked(cp) as usize })
    }

    /// The two-character unit of `k1` + `k2` bytes at `piece[i..]` (`i + k1 + k2 <= len`), as an
    /// index into `info`.
    #[inline(always)]
    fn two_chars(&self, piece: &[u8], i: usize, k1: usize, k2: usize) -> Option<usize> {
        let id = match (k1, k2) {
            (2, 2) => {
                let (a, b) = (self.cidx_at(piece, i), self.cidx_at(piece, i + 2));
                // Index 0 is a row and a column of zeros, so a missing character finds nothing.
                self.two_two[a * self.width + b]
            }
            (1, 2) => {
                let b = self.cidx_at(piece, i + 1);
                self.ascii_two[piece[i] as usize * self.width + b]
            }
            _ => {
                return self
                    .units
                    .get(&pack(&piece[i..i + k1 + k2]))
                    .map(|&id| id as usize)
            }
        };
        (id as usize).checked_sub(1)
    }

    /// If a unit that may start merged here begins at `piece[i]`: its length and rank. Two
    /// characters are tried before one.
    #[inline(always)]
    pub fn at(&self, piece: &[u8], i: usize) -> Option<(usize, Rank)> {
        let n = piece.len();
        let k1 = len_at(piece[i]);
        if k1 == 0 || i + k1 > n {
            return None;
        }
        if i + k1 < n {
            let k2 = len_at(piece[i + k1]);
            let k = k1 + k2;
            if k2 > 0 && k > 2 && k <= MAX_UNIT && i + k <= n {
                if let Some(id) = self.two_chars(piece, i, k1, k2) {
                    if let Some(u) = self.allowed(&self.info[id], piece, i, k) {
                        return Some(u);
                    }
                }
            }
        }
        let info = match k1 {
            1 => return self.ascii_pair(piece, i),
            2 => {
                // SAFETY: code points of two-byte characters are below 0x800 = two.len().
                let id = unsafe { *self.two.get_unchecked(code_point_at(piece, i)?) };
                self.info.get(id.checked_sub(1)? as usize)?
            }
            _ => &self.info[*self.units.get(&pack(&piece[i..i + k1]))? as usize],
        };
        self.allowed(info, piece, i, k1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_char_at_the_edges_and_broken_utf8() {
        let v = crate::vocab::bundled("cl100k_base").unwrap();
        let c = "я".as_bytes();
        let r = v.get(c).unwrap();
        let chars = CharTokens::build(&v);
        assert!(chars.len() > 1000, "{}", chars.len());
        // A char at the piece's edges has no neighbour to rule it out.
        assert_eq!(chars.at(c, 0), Some((2, r)));
        // Broken UTF-8 is never a char.
        assert_eq!(chars.at(&c[..1], 0), None);
        assert_eq!(chars.at(&[0xD1, 0x41], 0), None);
    }

    #[test]
    fn two_character_units_from_the_direct_tables() {
        // Every unit of an ASCII byte or a two-byte character followed by a two-byte character
        // is found where nothing rules it out (alone), and never once a continuation byte is
        // broken (which would alias another character in the tables).
        for name in ["cl100k_base", "o200k_base"] {
            let v = crate::vocab::bundled(name).unwrap();
            let chars = CharTokens::build(&v);
            let mut n = 0;
            for (tok, r) in v.iter() {
                let two_two = tok.len() == 4 && char_len(tok[0]) == 2 && char_len(tok[2]) == 2;
                let ascii_two = tok.len() == 3 && tok[0] < 0x80 && char_len(tok[1]) == 2;
                if !(two_two || ascii_two) || std::str::from_utf8(tok).is_err() {
                    continue;
                }
                let expected = crate::char_masks::is_unit(tok).then_some((tok.len(), r));
                if expected.is_none() {
                    continue;
                }
                n += 1;
                assert_eq!(chars.at(tok, 0), expected, "{name} {tok:?}");
                for j in (1..tok.len()).filter(|&j| tok[j] & 0xC0 == 0x80) {
                    let mut bad = tok.to_vec();
                    bad[j] ^= 0xC0;
                    assert!(
                        chars.at(&bad, 0).is_none_or(|(k, _)| k < tok.len()),
                        "{bad:?}"
                    );
                }
            }
            assert!(n > 300, "{name}: {n}");
        }
    }
}
