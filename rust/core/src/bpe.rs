//! Byte-pair merging of one piece.
//!
//! Why two algorithms: almost every piece is short, and for those a linear scan over a stack
//! array of part boundaries (no allocation, no hashing beyond one lookup per new pair) beats any
//! clever structure. Long pieces (runs of letters, CJK, whitespace, emoji) switch to a
//! doubly-linked list of parts and a min-heap keyed on (rank, position) with lazy invalidation,
//! which is O(n log n) however long the run, where the scan would be quadratic. Both choose
//! exactly the pair tiktoken chooses: the lowest rank, leftmost on ties. The scan starts from
//! pairs of ASCII bytes, whole characters and two-character tokens wherever [`crate::chars`]
//! shows that gives the same result as starting from bytes; the heap always starts from bytes,
//! so it is the reference the tests compare against.
use crate::vocab::{Rank, Vocab, NO_ENTRY};
use std::cmp::Reverse;
use std::collections::BinaryHeap;

/// Pieces shorter than this (in bytes) use the linear scan; longer ones the heap.
pub const HEAP_THRESHOLD: usize = 128;

/// Encodes the piece `text[s..e]`: a whole-piece lookup first, then merging. Unencodable bytes
/// (only possible with vocabularies that lack some single bytes) come out as `NO_ENTRY`.
#[inline]
pub fn encode_piece(v: &Vocab, text: &[u8], s: usize, e: usize, out: &mut Vec<Rank>) {
    let piece = &text[s..e];
    if piece.len() == 1 {
        out.push(v.byte_rank(piece[0]));
    } else if let Some(r) = whole(v, text, s, e) {
        out.push(r);
    } else {
        merge(v, piece, out);
    }
}

/// [`encode_piece`] for the pieces of one text in order: a piece of [`Recent::MIN_PIECE`] bytes
/// or more that needs merging and that `recent` holds (it came up earlier in the text) is copied
/// from its earlier tokens instead.
#[inline]
pub fn encode_piece_recent(
    v: &Vocab,
    text: &[u8],
    s: usize,
    e: usize,
    out: &mut Vec<Rank>,
    recent: &mut Recent,
) {
    let n = e - s;
    if n == 1 {
        out.push(v.byte_rank(text[s]));
    } else if let Some(r) = whole(v, text, s, e) {
        out.push(r);
    } else if (Recent::MIN_PIECE..HEAP_THRESHOLD).contains(&n) {
        recent.merge(v, text, s, e, out);
    } else {
        merge(v, &text[s..e], out);
    }
}

/// Counts the tokens of the piece `text[s..e]` without keeping them, with [`Recent`] as in
/// [`encode_piece_recent`].
#[inline]
pub fn count_piece(
    v: &Vocab,
    text: &[u8],
    s: usize,
    e: usize,
    scratch: &mut Vec<Rank>,
    recent: &mut Recent,
) -> usize {
    let n = e - s;
    if n == 1 || whole(v, text, s, e).is_some() {
        1
    } else if (Recent::MIN_PIECE..HEAP_THRESHOLD).contains(&n) {
        recent.count(v, text, s, e, scratch)
    } else {
        merge_count(v, &text[s..e], scratch)
    }
}

/// The number of tokens of [`merge`]`(piece)`, with `scratch` as working space. A long piece is
/// merged chunk by chunk keeping only the last tokens, so a run of millions of characters is
/// counted in working memory bounded by [`COUNT_WINDOW`] tokens (unless it falls back to the
/// heap merge, which holds the whole piece).
pub fn merge_count(v: &Vocab, piece: &[u8], scratch: &mut Vec<Rank>) -> usize {
    scratch.clear();
    if piece.len() < HEAP_THRESHOLD {
        merge_direct(v, piece, scratch);
        return scratch.len();
    }
    let (mut ends, mut counted) = (Vec::new(), 0);
    merge_chunked_from(v, piece, scratch, 0, &mut ends, CHUNK, Some(&mut counted));
    counted + scratch.len()
}

/// How many tokens [`merge_count`] hands over to its count at a time, once twice as many are
/// held: more than a chunk can take back ([`MAX_CARRY`]), so a carry never reaches a token that
/// is gone.
const COUNT_WINDOW: usize = 256;

/// The merges of the last pieces of one text, so that a piece met again in the same text is not
/// merged again: 256 slots, chosen by a hash of the piece, each holding where the piece and its
/// tokens are (in the text and in the output of the same call).
///
/// Why: about one in six of the 8-31-byte pieces of a 4 KB document that need merging occurred
/// earlier in the same document (`multi.txt`, both cl100k and o200k), and a merge costs 150-250 ns
/// where a hit costs a hash, one load from a 4 KB table and a compare of the piece's bytes. It
/// lives for one call, so nothing is remembered from one text to the next: encoding fresh text is
/// measured as such.
#[derive(Default)]
pub struct Recent {
    /// Made on the first piece that needs it, so that short calls do not pay for clearing 4 KB.
    slots: Option<[Slot; Recent::SLOTS]>,
}

#[derive(Clone, Copy, Default)]
struct Slot {
    tag: u32,
    start: u32,
    tokens: u32,
    len: u8,
    count: u8,
}

impl Recent {
    const SLOTS: usize = 256;
    /// Shorter pieces are cheaper to merge than to look up.
    pub const MIN_PIECE: usize = 3;

    pub fn new() -> Self {
        Self::default()
    }

    #[inline(always)]
    fn slots(&mut self) -> &mut [Slot; Self::SLOTS] {
        self.slots
            .get_or_insert_with(|| [Slot::default(); Self::SLOTS])
    }

    /// The slot and tag of `text[s..e]` (3 to 127 bytes): a hash of its first and last 8 bytes
    /// (its bytes, when shorter) and its length.
    #[inline(always)]
    fn key(text: &[u8], s: usize, e: usize) -> (usize, u32) {
        debug_assert!(e - s >= Self::MIN_PIECE);
        let (first, last) = if e - s >= 8 {
            (
                u64::from_le_bytes(text[s..s + 8].try_into().unwrap()),
                u64::from_le_bytes(text[e - 8..e].try_into().unwrap()),
            )
        } else {
            let mut w = [0u8; 8];
            w[..e - s].copy_from_slice(&text[s..e]);
            (u64::from_le_bytes(w), 0)
        };
        let h = (first.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ last.rotate_left(31) ^ (e - s) as u64)
            .wrapping_mul(0xD6E8_FEB8_6659_FD93);
        ((h >> 56) as usize, (h >> 24) as u32)
    }

    /// The slot holding `text[s..e]`, or the one to put it in (`Err`).
    #[inline(always)]
    fn find(&mut self, text: &[u8], s: usize, e: usize) -> std::result::Result<Slot, (usize, u32)> {
        let (i, tag) = Self::key(text, s, e);
        let sl = self.slots()[i];
        let n = e - s;
        if sl.len as usize == n && sl.tag == tag {
            let at = sl.start as usize;
            if text[at..at + n] == text[s..e] {
                return Ok(sl);
            }
        }
        Err((i, tag))
    }

    /// Remembers that `text[s..e]` merged into `count` tokens, at `tokens` in the output.
    #[inline(always)]
    fn store(&mut self, (i, tag): (usize, u32), s: usize, e: usize, tokens: usize, count: usize) {
        self.slots()[i] = Slot {
            tag,
            start: s as u32,
            tokens: tokens as u32,
            len: (e - s) as u8,
            count: count as u8,
        };
    }

    #[inline]
    fn merge(&mut self, v: &Vocab, text: &[u8], s: usize, e: usize, out: &mut Vec<Rank>) {
        let at = out.len();
        if e > u32::MAX as usize || at > (u32::MAX as usize) {
            return merge(v, &text[s..e], out);
        }
        match self.find(text, s, e) {
            Ok(sl) => {
                let from = sl.tokens as usize;
                out.extend_from_within(from..from + sl.count as usize);
            }
            Err(slot) => {
                merge(v, &text[s..e], out);
                self.store(slot, s, e, at, out.len() - at);
            }
        }
    }

    #[inline]
    fn count(
        &mut self,
        v: &Vocab,
        text: &[u8],
        s: usize,
        e: usize,
        scratch: &mut Vec<Rank>,
    ) -> usize {
        scratch.clear();
        if e > u32::MAX as usize {
            merge(v, &text[s..e], scratch);
            return scratch.len();
        }
        match self.find(text, s, e) {
            Ok(sl) => sl.count as usize,
            Err(slot) => {
                merge(v, &text[s..e], scratch);
                self.store(slot, s, e, 0, scratch.len());
                scratch.len()
            }
        }
    }
}

/// The rank of the whole piece `text[s..e]`, if it is a token.
#[inline(always)]
fn whole(v: &Vocab, text: &[u8], s: usize, e: usize) -> Option<Rank> {
    if s + 16 <= text.len() {
        v.get_at(text, s, e)
    } else {
        v.get(&text[s..e])
    }
}

/// Merges `piece` from single bytes without first looking the whole piece up (tiktoken's
/// `byte_pair_encode`).
#[inline]
pub fn merge(v: &Vocab, piece: &[u8], out: &mut Vec<Rank>) {
    if piece.len() < HEAP_THRESHOLD {
        merge_direct(v, piece, out)
    } else {
        merge_chunked(v, piece, out, CHUNK)
    }
}

/// Bytes per chunk of [`merge_chunked`]: chunks (plus the tokens carried over from the previous
/// one) stay under [`HEAP_THRESHOLD`], so each is a fast scan merge.
pub const CHUNK: usize = 64;

/// How many bytes (or heap steps) a long piece's merge goes between looks for Ctrl-C (the poll
/// installed on the thread, if any; see [`crate::parallel::interrupt`]): one piece can be
/// gigabytes long (a run of one character), and its merge takes seconds. A merge that is told
/// to stop returns early, and every caller that installs a poll drops what it made.
const POLL_STEPS: u32 = 1 << 20;

/// The longest chunk that [`merge_chunked`] grows to.
const MAX_CHUNK: usize = 512;

/// The most bytes a chunk may re-merge (its own and the tokens taken back) before the piece
/// falls back to the heap merge.
const MAX_REMERGE: usize = 4 * MAX_CHUNK;

/// How many tokens a chunk may take back from the output before the piece falls back to the
/// heap merge.
const MAX_CARRY: usize = 8;

/// Whether `a b` is how the merge itself encodes the bytes of `a` followed by those of `b`.
fn compatible(v: &Vocab, a: Rank, b: Rank, buf: &mut Vec<u8>, tmp: &mut Vec<Rank>) -> bool {
    let (Some(x), Some(y)) = (v.token(a), v.token(b)) else {
        return false;
    };
    buf.clear();
    buf.extend_from_slice(x);
    buf.extend_from_slice(y);
    tmp.clear();
    merge_direct(v, buf, tmp);
    tmp[..] == [a, b]
}

/// The scan or heap merge by length, never chunked (so never recursive).
fn merge_direct(v: &Vocab, piece: &[u8], out: &mut Vec<Rank>) {
    match piece.len() {
        0 => {}
        1 => out.push(v.byte_rank(piece[0])),
        n if n < HEAP_THRESHOLD => merge_scan(v, piece, out),
        _ => merge_heap(v, piece, out),
    }
}

/// Linear-time merge of a long piece, with exactly the result of [`merge_heap`].
///
/// Why it is exact: when every token of a sequence is a merge result and every adjacent pair
/// `a b` is [`compatible`], the sequence is the merge of its bytes. (Run the merge on the whole:
/// before any merge could cross a token boundary, the merges inside the two tokens around it
/// happen in the same order as when merging just those two tokens, so the first crossing merge
/// would also happen there, which compatibility rules out.) So the piece is merged chunk by
/// chunk, and each chunk's first token is checked against the last token so far; when the check
/// fails, that last token is taken back and merged again together with the chunk. After
/// [`MAX_CARRY`] failures in a row the whole piece goes to the heap merge, so the cost is linear
/// on the inputs this is for (runs, long words) and O(n log n) at worst.
#[doc(hidden)]
pub fn merge_chunked(v: &Vocab, piece: &[u8], out: &mut Vec<Rank>, chunk: usize) {
    let base = out.len();
    let mut ends = Vec::with_capacity(piece.len() / 2);
    merge_chunked_from(v, piece, out, base, &mut ends, chunk, None);
}

/// [`merge_chunked`] of `piece` from where a merge of its start left off: `out[base..]` holds
/// the merge of `piece[..ends.last()]` (or nothing), `ends[i]` being where token `out[base + i]`
/// ends. Any tokens will do that are merge results with every adjacent pair [`compatible`], such
/// as the first tokens of the merge of another piece that starts with the same bytes: the chunks
/// after them are checked against them as against the chunks' own tokens. Appends the merge of
/// the rest; `ends` is left in an unspecified state.
///
/// With `counted`, the tokens before the last [`COUNT_WINDOW`] or so are removed from `out` (and
/// `ends`) as the merge goes, and their number added to `counted`: counting a long piece in
/// bounded memory. A fallback to the heap merge starts the count again.
#[doc(hidden)]
pub fn merge_chunked_from(
    v: &Vocab,
    piece: &[u8],
    out: &mut Vec<Rank>,
    base: usize,
    ends: &mut Vec<usize>,
    chunk: usize,
    mut counted: Option<&mut usize>,
) {
    const _: () = assert!(COUNT_WINDOW > MAX_CARRY);
    // Drops everything merged so far, to merge the piece again from its start.
    fn restart(out: &mut Vec<Rank>, base: usize, counted: &mut Option<&mut usize>) {
        out.truncate(base);
        if let Some(c) = counted.as_deref_mut() {
            *c = 0;
        }
    }
    let n = piece.len();
    debug_assert_eq!(out.len() - base, ends.len());
    if n < 2 || !v.has_all_bytes() {
        restart(out, base, &mut counted);
        return merge_direct(v, piece, out);
    }
    let (mut buf, mut tmp, mut part) = (Vec::new(), Vec::new(), Vec::new());
    let mut seen = [((NO_ENTRY, NO_ENTRY), false); 16];
    let (mut pos, mut chunk) = (ends.last().copied().unwrap_or(0), chunk);
    let mut poll_at = POLL_STEPS as usize;
    while pos < n {
        if pos >= poll_at {
            poll_at = pos + POLL_STEPS as usize;
            if crate::parallel::interrupt::poll() {
                return; // Ctrl-C: the caller drops the incomplete output
            }
        }
        // End chunks on a UTF-8 char boundary where one is near (tokens rarely cross chars).
        let mut end = (pos + chunk).min(n);
        let mut e = end;
        while e < n && e > pos + chunk / 2 && (piece[e] & 0xC0) == 0x80 {
            e -= 1;
        }
        if e > pos + chunk / 2 {
            end = e;
        }
        let mut from = pos;
        let mut carried = 0;
        loop {
            part.clear();
            merge_direct(v, &piece[from..end], &mut part);
            let ok = match out.len() > base {
                true => {
                    let (a, b) = (out[out.len() - 1], part[0]);
                    // Compatibility depends on the two tokens only; runs ask about the same
                    // pairs again and again, so remember the last few answers of this piece.
                    let slot = &mut seen[(a.wrapping_mul(31).wrapping_add(b) % 16) as usize];
                    if slot.0 == (a, b) {
                        slot.1
                    } else {
                        let ok = compatible(v, a, b, &mut buf, &mut tmp);
                        *slot = ((a, b), ok);
                        ok
                    }
                }
                false => true,
            };
            if ok {
                break;
            }
            if carried == MAX_CARRY {
                restart(out, base, &mut counted);
                return merge_heap(v, piece, out);
            }
            out.pop();
            ends.pop();
            from = ends.last().copied().unwrap_or(0);
            carried += 1;
            if end - from > MAX_REMERGE {
                // Long tokens (a vocabulary with runs of thousands of bytes): re-merging back to
                // their starts chunk after chunk would be quadratic.
                restart(out, base, &mut counted);
                return merge_heap(v, piece, out);
            }
        }
        if carried > 0 {
            // Tokens span chunk edges here (long whitespace tokens do): use longer chunks.
            chunk = (chunk * 2).min(MAX_CHUNK);
        }
        let mut at = from;
        for &t in &part {
            at += v.token(t).map_or(1, <[u8]>::len);
            out.push(t);
            ends.push(at);
        }
        debug_assert_eq!(at, end);
        pos = end;
        if out.len() - base >= 2 * COUNT_WINDOW {
            if let Some(c) = counted.as_deref_mut() {
                out.drain(base..base + COUNT_WINDOW);
                ends.drain(..COUNT_WINDOW);
                *c += COUNT_WINDOW;
            }
        }
    }
}

/// The smallest value of `p[..len]` and the first position holding it. `p` is the whole
/// scratch array: entries past `len` hold `NO_ENTRY`, so the AVX2 path scans whole 8-lane
/// vectors with no tail loop.
#[inline(always)]
fn min_pos<const AVX2: bool, const CAP: usize>(p: &[u32; CAP], len: usize) -> (u32, usize) {
    #[cfg(target_arch = "x86_64")]
    {
        if AVX2 {
            // SAFETY: only instantiated with AVX2 = true inside `merge_scan_avx2`, which runs
            // only when the CPU supports AVX2.
            return unsafe { min_pos_avx2(p, len) };
        }
    }
    let best = p[..len].iter().copied().fold(NO_ENTRY, u32::min);
    (best, p[..len].iter().position(|&r| r == best).unwrap_or(0))
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
#[inline]
unsafe fn min_pos_avx2<const CAP: usize>(p: &[u32; CAP], len: usize) -> (u32, usize) {
    use std::arch::x86_64::*;
    debug_assert!(CAP.is_multiple_of(8) && len <= CAP);
    if CAP <= 32 {
        return min_pos_avx2_fixed(p);
    }
    let lanes = len.div_ceil(8) * 8;
    let ptr = p.as_ptr() as *const __m256i;
    let mut vmin = _mm256_set1_epi32(-1);
    for c in 0..lanes / 8 {
        vmin = _mm256_min_epu32(vmin, _mm256_loadu_si256(ptr.add(c)));
    }
    let best = hmin_epu32(vmin);
    if best == NO_ENTRY {
        return (best, 0);
    }
    let b = _mm256_set1_epi32(best as i32);
    for c in 0..lanes / 8 {
        let eq = _mm256_cmpeq_epi32(_mm256_loadu_si256(ptr.add(c)), b);
        let mask = _mm256_movemask_ps(_mm256_castsi256_ps(eq));
        if mask != 0 {
            return (best, c * 8 + mask.trailing_zeros() as usize);
        }
    }
    (best, 0)
}

/// The smallest of the eight lanes of `v`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
#[inline]
unsafe fn hmin_epu32(v: std::arch::x86_64::__m256i) -> u32 {
    use std::arch::x86_64::*;
    let mut m = _mm_min_epu32(_mm256_castsi256_si128(v), _mm256_extracti128_si256::<1>(v));
    m = _mm_min_epu32(m, _mm_shuffle_epi32::<0b01_00_11_10>(m));
    m = _mm_min_epu32(m, _mm_shuffle_epi32::<0b10_11_00_01>(m));
    _mm_cvtsi128_si32(m) as u32
}

/// [`min_pos_avx2`] for arrays of at most 32 entries: every vector is scanned (the unused
/// entries hold `NO_ENTRY`), with no loop or data-dependent branch.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
#[inline]
unsafe fn min_pos_avx2_fixed<const CAP: usize>(p: &[u32; CAP]) -> (u32, usize) {
    use std::arch::x86_64::*;
    let ptr = p.as_ptr() as *const __m256i;
    let mut vmin = _mm256_loadu_si256(ptr);
    for c in 1..CAP / 8 {
        vmin = _mm256_min_epu32(vmin, _mm256_loadu_si256(ptr.add(c)));
    }
    let best = hmin_epu32(vmin);
    let b = _mm256_set1_epi32(best as i32);
    let mut mask = 0u32;
    for c in 0..CAP / 8 {
        let eq = _mm256_cmpeq_epi32(_mm256_loadu_si256(ptr.add(c)), b);
        mask |= (_mm256_movemask_ps(_mm256_castsi256_ps(eq)) as u32) << (8 * c);
    }
    // `mask` is never 0: `best` is one of the entries.
    (best, mask.trailing_zeros() as usize)
}

/// The short-piece merge, compiled twice: for AVX2 (chosen at run time, so the wheel still runs
/// on any x86-64) and portable.
#[doc(hidden)]
#[inline]
pub fn merge_scan(v: &Vocab, piece: &[u8], out: &mut Vec<Rank>) {
    #[cfg(target_arch = "x86_64")]
    {
        if std::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU supports AVX2.
            return unsafe { merge_scan_avx2(v, piece, out) };
        }
    }
    merge_scan_sized::<false>(v, piece, out)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn merge_scan_avx2(v: &Vocab, piece: &[u8], out: &mut Vec<Rank>) {
    merge_scan_sized::<true>(v, piece, out)
}

/// Pieces below 16 or 32 bytes (nearly all that need merging) use arrays an eighth or a quarter
/// the size, scanned with fixed code.
#[inline(always)]
fn merge_scan_sized<const AVX2: bool>(v: &Vocab, piece: &[u8], out: &mut Vec<Rank>) {
    if piece.len() < 16 {
        merge_scan_impl::<AVX2, 16>(v, piece, out)
    } else if piece.len() < 32 {
        merge_scan_impl::<AVX2, 32>(v, piece, out)
    } else {
        merge_scan_impl::<AVX2, HEAP_THRESHOLD>(v, piece, out)
    }
}

#[inline(always)]
fn merge_scan_impl<const AVX2: bool, const CAP: usize>(
    v: &Vocab,
    piece: &[u8],
    out: &mut Vec<Rank>,
) {
    let n = piece.len();
    debug_assert!(n >= 2 && n < CAP && CAP <= HEAP_THRESHOLD);
    // The piece, padded so that every lookup can read 16 bytes from any part start.
    let mut buf = [0u8; HEAP_THRESHOLD + 16];
    buf[..n].copy_from_slice(piece);
    let buf = &buf[..CAP + 16];
    // Parts are identified by their start byte. `pair[i]` is the rank of part i merged with the
    // part after it (NO_ENTRY when that is not a token, or when i is no longer a part start), so
    // the choice of the next merge is a flat min-scan over one small array.
    let mut pair = [NO_ENTRY; CAP];
    let mut tok = [0u32; CAP];
    let mut nxt = [0u8; CAP];
    let mut prv = [0u8; CAP];
    // Units that may start merged do (see `crate::chars`): two ASCII bytes, or one or two
    // characters of which one is multi-byte. The other bytes start alone. Positions inside a
    // unit keep `pair` at NO_ENTRY.
    let chars = v.chars();
    let ascii = piece.iter().fold(0, |a, &b| a | b) < 0x80;
    let (mut i, mut last) = (0, usize::MAX);
    while i < n {
        let unit = if ascii {
            chars.ascii_pair(piece, i)
        } else {
            chars.at(piece, i)
        };
        let (len, r) = unit.unwrap_or((1, v.byte_rank(piece[i])));
        tok[i] = r;
        nxt[i] = (i + len) as u8;
        prv[i] = last as u8;
        if last != usize::MAX {
            pair[last] = if i - last == 1 && len == 1 {
                v.pair_rank(piece[last], piece[i])
            } else {
                v.get_at(buf, last, i + len).unwrap_or(NO_ENTRY)
            };
        }
        last = i;
        i += len;
    }
    // The end points to itself, so `nxt[nxt[i]]` needs no test.
    nxt[n] = n as u8;
    if !merged_in_registers::<AVX2, CAP>(v, buf, n, &pair, &mut tok, &mut nxt, &mut prv) {
        merge_loop::<AVX2, CAP>(v, buf, n, &mut pair, &mut tok, &mut nxt, &mut prv);
    }
    let mut i = 0;
    while i < n {
        out.push(tok[i]);
        i = nxt[i] as usize;
    }
}

/// Runs [`merge_loop_avx2`] where it applies (AVX2, pieces under 32 bytes, ranks below
/// [`PACKED_RANKS`]); `false` elsewhere.
#[inline(always)]
fn merged_in_registers<const AVX2: bool, const CAP: usize>(
    v: &Vocab,
    buf: &[u8],
    n: usize,
    pair: &[u32; CAP],
    tok: &mut [u32; CAP],
    nxt: &mut [u8; CAP],
    prv: &mut [u8; CAP],
) -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        if AVX2 && CAP <= 32 && v.max_rank().is_some_and(|r| r < PACKED_RANKS) {
            // SAFETY: only instantiated with AVX2 = true inside `merge_scan_avx2`, which runs
            // only when the CPU supports AVX2; n < CAP <= 32; every rank is below PACKED_RANKS.
            unsafe { merge_loop_avx2(v, buf, n, pair, tok, nxt, prv) };
            return true;
        }
    }
    let _ = (v, buf, n, pair, tok, nxt, prv);
    false
}

/// The merge loop of [`merge_scan_impl`]: merges the lowest-ranked pair until none is left.
#[inline(always)]
fn merge_loop<const AVX2: bool, const CAP: usize>(
    v: &Vocab,
    buf: &[u8],
    n: usize,
    pair: &mut [u32; CAP],
    tok: &mut [u32; CAP],
    nxt: &mut [u8; CAP],
    prv: &mut [u8; CAP],
) {
    // Every index below is a part start or `n`, so below CAP: unchecked access is sound.
    let at = |a: &[u8; CAP], i: usize| -> usize {
        debug_assert!(i < CAP);
        // SAFETY: i < CAP (see above).
        unsafe { *a.get_unchecked(i) as usize }
    };
    loop {
        let (best, bi) = min_pos::<AVX2, CAP>(pair, n - 1);
        if best == NO_ENTRY {
            break;
        }
        debug_assert!(bi < n - 1);
        let j = at(nxt, bi);
        let k = at(nxt, j);
        // SAFETY: bi, j and k are at most n < CAP.
        unsafe {
            *tok.get_unchecked_mut(bi) = best;
            *pair.get_unchecked_mut(j) = NO_ENTRY;
            *nxt.get_unchecked_mut(bi) = k as u8;
        }
        let right = if k < n {
            // SAFETY: k < n < CAP.
            unsafe { *prv.get_unchecked_mut(k) = bi as u8 };
            v.get_at(buf, bi, at(nxt, k)).unwrap_or(NO_ENTRY)
        } else {
            NO_ENTRY
        };
        // SAFETY: bi < CAP.
        unsafe { *pair.get_unchecked_mut(bi) = right };
        if bi > 0 {
            let p = at(prv, bi);
            let left = v.get_at(buf, p, k).unwrap_or(NO_ENTRY);
            // SAFETY: p < bi < CAP.
            unsafe { *pair.get_unchecked_mut(p) = left };
        }
    }
}

/// Ranks below this fit in a lane of [`merge_loop_avx2`] with a position below 32 beside them.
const PACKED_RANKS: Rank = 1 << 27;

/// [`merge_loop`] for pieces of at most 31 bytes, with the `pair`
/// ranks held in (up to four) AVX2 registers instead of a stack array.
///
/// Why: each merge step writes two or three `pair` entries and the next step's min-scan reads
/// the whole array back as vectors. A vector load over fresh scalar stores cannot be forwarded
/// from the store buffer and waits for the stores to reach the cache: the largest single cost of
/// the scan on English text. In registers, an entry is replaced by a compare and a blend.
///
/// Each lane holds `rank << 5 | position`, so one horizontal minimum gives both the lowest rank
/// and, on ties, the leftmost position: tiktoken's choice. Finding the position by comparing the
/// minimum with every lane again, as before, put a compare, a mask extraction and a bit scan on
/// every step's critical path (old and new builds in one process, `benches/ab_encode.py`, new/old
/// for o200k: `multi.txt` 1.023-1.057 in four runs, `code.txt` 1.011 and 1.021, `en.txt`
/// 0.950-1.060 in six, four of them above 1; cl100k: `multi.txt` 1.019, `en.txt` 1.057). Every rank
/// of the vocabulary must be below [`PACKED_RANKS`].
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
#[inline]
unsafe fn merge_loop_avx2<const CAP: usize>(
    v: &Vocab,
    buf: &[u8],
    n: usize,
    pair: &[u32; CAP],
    tok: &mut [u32; CAP],
    nxt: &mut [u8; CAP],
    prv: &mut [u8; CAP],
) {
    use std::arch::x86_64::*;
    debug_assert!(CAP <= 32 && CAP.is_multiple_of(8) && n < CAP && buf.len() >= CAP + 16);
    debug_assert!(v.max_rank().is_some_and(|r| r < PACKED_RANKS));
    let w = CAP / 8;
    let idx = [
        _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7),
        _mm256_setr_epi32(8, 9, 10, 11, 12, 13, 14, 15),
        _mm256_setr_epi32(16, 17, 18, 19, 20, 21, 22, 23),
        _mm256_setr_epi32(24, 25, 26, 27, 28, 29, 30, 31),
    ];
    // Each lane holds `rank << 5 | position` (NO_ENTRY stays all ones), so the minimum gives the
    // lowest rank, leftmost on ties, and its position in one value.
    let mut lanes = [_mm256_set1_epi32(-1); 4];
    let none = _mm256_set1_epi32(-1);
    for (c, l) in lanes.iter_mut().enumerate().take(w) {
        let r = _mm256_loadu_si256(pair.as_ptr().add(8 * c) as *const __m256i);
        let packed = _mm256_or_si256(_mm256_slli_epi32::<5>(r), idx[c]);
        *l = _mm256_blendv_epi8(packed, none, _mm256_cmpeq_epi32(r, none));
    }
    // Entry `i` of the lanes becomes rank `r`.
    let set = |lanes: &mut [__m256i; 4], i: usize, r: u32| {
        let p = if r == NO_ENTRY {
            NO_ENTRY
        } else {
            r << 5 | i as u32
        };
        let (iv, rv) = (_mm256_set1_epi32(i as i32), _mm256_set1_epi32(p as i32));
        for c in 0..w {
            let m = _mm256_cmpeq_epi32(idx[c], iv);
            lanes[c] = _mm256_blendv_epi8(lanes[c], rv, m);
        }
    };
    // SAFETY (indexing below): every index is a part start or `n`, so below CAP.
    let at = |a: &[u8; CAP], i: usize| -> usize {
        debug_assert!(i < CAP);
        *a.get_unchecked(i) as usize
    };
    loop {
        let mut m = lanes[0];
        for l in lanes.iter().take(w).skip(1) {
            m = _mm256_min_epu32(m, *l);
        }
        let packed = hmin_epu32(m);
        if packed == NO_ENTRY {
            break;
        }
        let (best, bi) = (packed >> 5, (packed & 31) as usize);
        debug_assert!(bi < n - 1);
        let j = at(nxt, bi);
        let k = at(nxt, j);
        *tok.get_unchecked_mut(bi) = best;
        *nxt.get_unchecked_mut(bi) = k as u8;
        set(&mut lanes, j, NO_ENTRY);
        let right = if k < n {
            *prv.get_unchecked_mut(k) = bi as u8;
            v.get_at(buf, bi, at(nxt, k)).unwrap_or(NO_ENTRY)
        } else {
            NO_ENTRY
        };
        set(&mut lanes, bi, right);
        if bi > 0 {
            let p = at(prv, bi);
            set(&mut lanes, p, v.get_at(buf, p, k).unwrap_or(NO_ENTRY));
        }
    }
}

#[doc(hidden)]
pub fn merge_heap(v: &Vocab, piece: &[u8], out: &mut Vec<Rank>) {
    let n = piece.len();
    // Part starts form a linked list; `cur[i]` is the rank of part i merged with its successor
    // (NO_ENTRY if none). Heap entries are `rank << 32 | start`, so the min is the lowest rank,
    // leftmost on ties; an entry is stale when `cur[start]` no longer holds its rank (a start
    // can only ever pair into one token of a given rank, so the check is exact).
    let mut next: Vec<u32> = (1..=n as u32).collect();
    let mut prev: Vec<u32> = (0..n as u32).map(|i| i.wrapping_sub(1)).collect();
    let mut tok: Vec<u32> = piece.iter().map(|&b| v.byte_rank(b)).collect();
    let mut cur: Vec<u32> = vec![NO_ENTRY; n];
    let mut keys: Vec<Reverse<u64>> = Vec::with_capacity(n);
    for i in 0..n - 1 {
        let r = v.pair_rank(piece[i], piece[i + 1]);
        cur[i] = r;
        if r != NO_ENTRY {
            keys.push(Reverse(((r as u64) << 32) | i as u64));
        }
    }
    let mut heap = BinaryHeap::from(keys);
    let mut pops = 0u32;
    while let Some(Reverse(key)) = heap.pop() {
        pops = pops.wrapping_add(1);
        if pops.is_multiple_of(POLL_STEPS) && crate::parallel::interrupt::poll() {
            return; // Ctrl-C: the caller drops the incomplete output
        }
        let (r, i) = ((key >> 32) as u32, (key & 0xFFFF_FFFF) as usize);
        if cur[i] != r {
            continue; // stale
        }
        // Merge part i with its successor j.
        let j = next[i] as usize;
        let k = next[j] as usize;
        tok[i] = r;
        cur[j] = NO_ENTRY;
        next[i] = k as u32;
        cur[i] = NO_ENTRY;
        if k < n {
            prev[k] = i as u32;
            let e = next[k] as usize;
            if let Some(r2) = v.get(&piece[i..e]) {
                cur[i] = r2;
                heap.push(Reverse(((r2 as u64) << 32) | i as u64));
            }
        }
        if i > 0 {
            let p = prev[i] as usize;
            let r2 = v.get(&piece[p..k]).unwrap_or(NO_ENTRY);
            cur[p] = r2;
            if r2 != NO_ENTRY {
                heap.push(Reverse(((r2 as u64) << 32) | p as u64));
            }
        }
    }
    let mut i = 0usize;
    while i < n {
        out.push(tok[i]);
        i = next[i] as usize;
    }
}

/// The textbook algorithm: repeatedly merge the leftmost lowest-ranked adjacent pair. Slow; it
/// is the reference the fast merges are tested against.
#[doc(hidden)]
pub fn reference_merge(v: &Vocab, piece: &[u8]) -> Vec<Rank> {
    let mut parts: Vec<Vec<u8>> = piece.iter().map(|&b| vec![b]).collect();
    loop {
        let mut best: Option<(Rank, usize)> = None;
        for i in 0..parts.len().saturating_sub(1) {
            let cat = [parts[i].as_slice(), parts[i + 1].as_slice()].concat();
            if let Some(r) = v.get(&cat) {
                if best.is_none_or(|(b, _)| r < b) {
                    best = Some((r, i));
                }
            }
        }
        let Some((_, i)) = best else { break };
        let right = parts.remove(i + 1);
        parts[i].extend(right);
    }
    parts.iter().map(|p| v.get(p).unwrap_or(NO_ENTRY)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The single bytes, then runs of 2, 4, ... 2^`max_log` a's.
    fn runs_of_a(max_log: u32) -> Vocab {
        let mut entries: Vec<(Vec<u8>, Rank)> = (0..=255u8).map(|b| (vec![b], b as Rank)).collect();
        for k in 1..=max_log {
            let r = entries.len() as Rank;
            entries.push((vec![b'a'; 1 << k], r));
        }
        Vocab::from_entries(entries.iter().map(|(b, r)| (&b[..], *r))).unwrap()
    }

    #[test]
    fn long_tokens_do_not_make_the_chunked_merge_quadratic() {
        // A vocabulary of runs of 2, 4, ... 2^17 a's: chunks took back tokens of up to 128 KB
        // and re-merged them, chunk after chunk (25 times the heap merge's time).
        let v = runs_of_a(17);
        let piece = vec![b'a'; (1 << 18) - 1];
        let (mut heap, mut chunked) = (Vec::new(), Vec::new());
        let t = std::time::Instant::now();
        merge_heap(&v, &piece, &mut heap);
        let heap_time = t.elapsed();
        let t = std::time::Instant::now();
        merge(&v, &piece, &mut chunked);
        let chunked_time = t.elapsed();
        assert_eq!(chunked, heap);
        assert_eq!(heap.len(), 18);
        assert!(
            chunked_time < heap_time * 5 + std::time::Duration::from_millis(50),
            "{chunked_time:?} against the heap's {heap_time:?}"
        );
    }

    #[test]
    fn counting_a_long_piece_keeps_only_a_window_of_tokens() {
        // Runs of 2, 4, ... 4096 a's and the single bytes: a run of b's is one token a byte,
        // and a run of a's makes the chunks take back more than MAX_REMERGE bytes, so the merge
        // falls back to the heap after the b's tokens were handed to the count.
        let v = runs_of_a(12);
        let bs = vec![b'b'; 3000];
        let fallback = [&bs[..], &[b'a'; 8191][..]].concat();
        let mut scratch = Vec::new();
        for piece in [&bs[..], &fallback[..], &fallback[2000..], &bs[..200]] {
            let mut heap = Vec::new();
            merge_heap(&v, piece, &mut heap);
            assert_eq!(merge_count(&v, piece, &mut scratch), heap.len());
        }
        assert_eq!(merge_count(&v, &fallback, &mut scratch), 3000 + 13);
        // Without the fallback, the window is all that is held.
        let cl = crate::vocab::bundled("cl100k_base").unwrap();
        for unit in ["\u{1F600}", "\u{e9}", "ab", " \u{4e2d}"] {
            let piece = unit.repeat(100_000).into_bytes();
            let (mut all, mut scratch) = (Vec::new(), Vec::new());
            merge(&cl, &piece, &mut all);
            assert_eq!(
                merge_count(&cl, &piece, &mut scratch),
                all.len(),
                "{unit:?}"
            );
            assert!(
                scratch.capacity() < 4 * COUNT_WINDOW,
                "{}",
                scratch.capacity()
            );
        }
    }

    /// cl100k's tokens with every rank moved up by `offset`: the same merges, other ids.
    fn cl100k_shifted(offset: Rank) -> Vocab {
        let cl = crate::vocab::bundled("cl100k_base").unwrap();
        let entries: Vec<(Vec<u8>, Rank)> =
            cl.iter().map(|(b, r)| (b.to_vec(), r + offset)).collect();
        Vocab::from_entries(entries.iter().map(|(b, r)| (&b[..], *r))).unwrap()
    }

    #[test]
    fn short_merges_are_right_with_ranks_at_and_past_the_packing_limit() {
        // The register merge keeps `rank << 5 | position` in each lane, which holds only ranks
        // below PACKED_RANKS; a vocabulary with higher ranks takes the array merge instead.
        let cl = crate::vocab::bundled("cl100k_base").unwrap();
        let top = cl.max_rank().unwrap();
        let words = "unbelievably Internationalisation xylophonists Здравствуйте 日本語のテキスト \
                     naïveté_über ____init____ 0123456789abcdef \u{1F600}\u{1F600}x \t\t\t\n\n";
        // The highest-ranked token too, alone and inside longer pieces, so that its rank is in
        // a lane when the vocabulary's top rank sits exactly at the limit.
        let last = cl.token(top).unwrap();
        let around = [b"ab", last, b"cd"].concat();
        let pieces: Vec<&[u8]> = words
            .split_inclusive(' ')
            .map(str::as_bytes)
            .chain((2..=31).map(|n| &words.as_bytes()[..n]))
            .chain([last, &around[..], &around[2..], &around[..around.len() - 2]])
            .filter(|p| (2..32).contains(&p.len()))
            .collect();
        for offset in [0, PACKED_RANKS - 1 - top, PACKED_RANKS - top, 1 << 31] {
            let v = cl100k_shifted(offset);
            assert_eq!(v.max_rank(), Some(top + offset));
            for p in &pieces {
                let (mut want, mut got) = (Vec::new(), Vec::new());
                merge_scan(&cl, p, &mut want);
                merge_scan(&v, p, &mut got);
                let want: Vec<Rank> = want.iter().map(|r| r + offset).collect();
                assert_eq!(
                    got,
                    want,
                    "offset {offset}, piece {:?}",
                    String::from_utf8_lossy(p)
                );
                assert_eq!(got, reference_merge(&v, p), "offset {offset}");
            }
        }
    }

    #[test]
    fn scan_and_heap_agree_with_reference_across_threshold() {
        let v = crate::vocab::bundled("cl100k_base").unwrap();
        let texts = [
            "a",
            "ab",
            "aaaa",
            "abab",
            "hello",
            "日本語",
            "😀",
            " \t\n",
            "xyzzy",
        ];
        for t in texts {
            for reps in [1, 2, 3, 7, 31, 32, 33, 47, 48, 49, 95, 96, 97, 200] {
                let piece = t.repeat(reps);
                let piece = &piece.as_bytes()[..piece.len().min(400)];
                for len in [piece.len(), piece.len().saturating_sub(1).max(1)] {
                    let p = &piece[..len];
                    let mut a = Vec::new();
                    merge(&v, p, &mut a);
                    let mut b = Vec::new();
                    if p.len() >= 2 {
                        merge_heap(&v, p, &mut b);
                        assert_eq!(a, b, "heap {p:?}");
                    }
                    assert_eq!(a, reference_merge(&v, p), "{p:?}");
                }
            }
        }
    }
}
