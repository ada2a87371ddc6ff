//! The encoder: pre-tokenization + byte-pair merging + special tokens, and decoding.
use crate::bpe;
use crate::error::{Error, Result};
use crate::pretokenize::Pretokenizer;
use crate::vocab::{Rank, Vocab, NO_ENTRY};
use aho_corasick::{AhoCorasick, AhoCorasickKind, Input, MatchKind};
use rustc_hash::{FxHashMap, FxHashSet};
use std::sync::OnceLock;

/// The most tokens [`CoreBpe::encode_with_unstable`] puts in its completions before it gives up
/// with [`Error::TooLarge`]. Each completion covers the whole unstable tail of the text, and there
/// can be one for nearly every token that starts with its last byte: for a tail of a million
/// spaces, tiktoken would build over 340 million tokens (and take hours).
pub const MAX_COMPLETION_TOKENS: usize = 1 << 26;

fn too_large(tail: usize) -> Error {
    Error::TooLarge(format!(
        "encode_with_unstable: the completions of this text's unstable last {tail} bytes would \
         hold more than {MAX_COMPLETION_TOKENS} tokens"
    ))
}

/// A piece's bytes, its tokens and where each token ends in it.
type MergedPiece = (Box<[u8]>, Vec<Rank>, Vec<usize>);

/// Merges of long pieces remembered within one [`CoreBpe::encode_with_unstable`] call.
struct PieceMemo {
    pieces: FxHashMap<Box<[u8]>, Box<[Rank]>>,
    bytes: usize,
    /// The first piece of [`Self::MIN_SHARED`] bytes or more merged in this call, its tokens and
    /// where each ends: the candidates' texts differ only in their last few bytes, so their last
    /// pieces (a run of a thousand letters, say) mostly start with the same bytes as this one.
    base: Option<MergedPiece>,
    /// [`Self::MIN_SHARED`], or more in tests (`usize::MAX`: never share).
    min_shared: usize,
}

impl PieceMemo {
    /// Shorter pieces are merged again each time (faster than hashing them).
    const MIN_PIECE: usize = 32;
    /// Bytes of pieces remembered at most (a tail of a million spaces recurs in about 80
    /// lengths).
    const MAX_BYTES: usize = 128 << 20;
    /// Pieces from this length on take the tokens of the start they share with [`Self::base`]
    /// instead of merging it again.
    const MIN_SHARED: usize = 1024;

    fn new(min_shared: usize) -> Self {
        PieceMemo {
            pieces: FxHashMap::default(),
            bytes: 0,
            base: None,
            min_shared,
        }
    }

    /// `piece` merged (no whole-piece lookup) onto `out`.
    ///
    /// Why: each candidate of a long unstable tail (a run of 300,000 letters has 2,253) would
    /// otherwise merge the whole run again, and that was nearly all of the call's time. The
    /// base's tokens that end inside the shared start are merge results with compatible
    /// neighbours, so [`bpe::merge_chunked_from`] continues from them exactly as from its own.
    fn merge(&mut self, v: &Vocab, piece: &[u8], out: &mut Vec<Rank>) {
        if piece.len() < self.min_shared {
            return bpe::merge(v, piece, out);
        }
        let at = out.len();
        if let Some((bytes, tokens, ends)) = &self.base {
            let shared = bytes.iter().zip(piece).take_while(|(a, b)| a == b).count();
            let keep = ends.partition_point(|&e| e <= shared);
            if keep > 0 {
                #[cfg(test)]
                tests::SHARED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                out.extend_from_slice(&tokens[..keep]);
                let mut ends = ends[..keep].to_vec();
                return bpe::merge_chunked_from(v, piece, out, at, &mut ends, bpe::CHUNK, None);
            }
        }
        bpe::merge(v, piece, out);
        if self.base.is_none() && !crate::parallel::interrupt::stopped() {
            let tokens = out[at..].to_vec();
            let mut end = 0;
            let ends = tokens
                .iter()
                .map(|&t| {
                    end += v.token(t).map_or(0, <[u8]>::len);
                    end
                })
                .collect();
            self.base = Some((piece.into(), tokens, ends));
        }
    }
}

/// The largest chunk [`CoreBpe::encode_ordinary_parallel`] cuts a text into (a few tens of
/// milliseconds of work).
pub const MAX_PARALLEL_CHUNK: usize = 4 << 20;

/// Which special tokens a call treats as special (by index into [`CoreBpe::specials`]).
#[derive(Clone, Debug, Default)]
pub enum SpecialSet {
    #[default]
    None,
    All,
    Some(Vec<bool>),
}

impl SpecialSet {
    /// Whether special token `id` raises: `All` in `disallowed` means every special token that
    /// is not allowed (tiktoken's "all"); an explicit set is checked even for allowed tokens, as
    /// tiktoken does.
    #[inline]
    pub fn refuses(disallowed: &SpecialSet, allowed: &SpecialSet, id: usize) -> bool {
        match disallowed {
            SpecialSet::All => !allowed.contains(id),
            d => d.contains(id),
        }
    }

    #[inline]
    pub fn contains(&self, i: usize) -> bool {
        match self {
            SpecialSet::None => false,
            SpecialSet::All => true,
            SpecialSet::Some(m) => m[i],
        }
    }
    pub fn is_empty(&self) -> bool {
        match self {
            SpecialSet::None => true,
            SpecialSet::All => false,
            SpecialSet::Some(m) => !m.iter().any(|&b| b),
        }
    }
}

/// A complete encoding: mergeable ranks, split pattern and special tokens.
pub struct CoreBpe {
    vocab: Vocab,
    pre: Pretokenizer,
    pattern: String,
    specials: Vec<(String, Rank)>,
    special_index: FxHashMap<String, usize>,
    special_decoder: FxHashMap<Rank, usize>,
    ac: Option<AhoCorasick>,
    /// An overlapping matcher over the special tokens, and whether any two of them can overlap
    /// in a text (built on first use).
    overlap: OnceLock<Option<Overlap>>,
    sorted_tokens: OnceLock<Vec<Rank>>,
    max_token_len: OnceLock<usize>,
    /// Each token's bytes in a slot of its own, for decoding long lists (built on first use).
    decode_slots: OnceLock<Vec<DecodeSlot>>,
}

/// A token's bytes (up to 15) with their length in the last byte, or [`LONG_SLOT`] there for an
/// id whose bytes do not fit or that has none. Decoding then takes one load and one store per
/// token instead of three dependent loads and a `memcpy` of a variable length: 3-4x faster on
/// long lists (see `decode_bytes`).
type DecodeSlot = [u8; 16];
const LONG_SLOT: u8 = 0xff;
/// Lists shorter than this are decoded without the slots, so that decoding a few tokens never
/// builds them (a millisecond and 3 MB for o200k).
const SLOTS_FROM: usize = 1 << 12;
/// The most ids the slots cover (32 MB); ids above take the general path.
const MAX_SLOTS: usize = 1 << 21;

/// The token capacity to reserve for `text`: enough for all but the densest texts (Cyrillic runs
/// at 0.3 tokens a byte, code at about 0.33) so that documents are not copied while they grow;
/// large texts reserve less up front and grow instead.
#[inline]
fn token_capacity(text: &str) -> usize {
    if text.len() <= 1 << 20 {
        text.len() / 2 + 8
    } else {
        text.len() / 4
    }
}

/// A place in `text[from..to]` where the built-in patterns end a piece, for cutting a large text
/// into chunks encoded in parallel: just after a newline that precedes non-whitespace, or else
/// before a space that follows an ASCII letter or digit (no piece holds both: runs of letters,
/// of digits and contractions end there). The chunks are checked to end exactly on their cuts
/// anyway (see `encode_ordinary_parallel`).
fn find_cut(text: &str, from: usize, to: usize) -> Option<usize> {
    let b = text.as_bytes();
    let to = to.min(b.len());
    let mut pos = from;
    while pos < to {
        let Some(off) = memchr::memchr(b'\n', &b[pos..to]) else {
            break;
        };
        let q = pos + off + 1;
        if q < b.len() && !text[q..].starts_with(char::is_whitespace) {
            return Some(q);
        }
        pos = q;
    }
    let mut pos = from.max(1);
    while pos < to {
        let q = pos + memchr::memchr(b' ', &b[pos..to])?;
        if b[q - 1].is_ascii_alphanumeric() {
            return Some(q);
        }
        pos = q + 1;
    }
    None
}

impl CoreBpe {
    pub fn new(vocab: Vocab, pattern: &str, specials: Vec<(String, Rank)>) -> Result<Self> {
        let pre = Pretokenizer::new(pattern)?;
        let mut special_index = FxHashMap::default();
        let mut special_decoder = FxHashMap::default();
        for (i, (s, r)) in specials.iter().enumerate() {
            special_index.insert(s.clone(), i);
            special_decoder.entry(*r).or_insert(i);
        }
        let ac = if specials.is_empty() {
            None
        } else {
            Some(
                special_matcher(&specials, MatchKind::LeftmostLongest).map_err(|e| {
                    Error::Value(format!("cannot build special-token matcher: {e}"))
                })?,
            )
        };
        Ok(CoreBpe {
            vocab,
            pre,
            pattern: pattern.to_owned(),
            specials,
            special_index,
            special_decoder,
            ac,
            sorted_tokens: OnceLock::new(),
            max_token_len: OnceLock::new(),
            overlap: OnceLock::new(),
            decode_slots: OnceLock::new(),
        })
    }

    pub fn vocab(&self) -> &Vocab {
        &self.vocab
    }
    pub fn pattern(&self) -> &str {
        &self.pattern
    }
    pub fn pretokenizer(&self) -> &Pretokenizer {
        &self.pre
    }
    pub fn specials(&self) -> &[(String, Rank)] {
        &self.specials
    }
    pub fn special_index(&self, s: &str) -> Option<usize> {
        self.special_index.get(s).copied()
    }
    /// The largest token id (mergeable or special), if any.
    pub fn max_token(&self) -> Option<Rank> {
        self.vocab
            .max_rank()
            .into_iter()
            .chain(self.specials.iter().map(|s| s.1))
            .max()
    }

    /// Whether `r` is the id of a special token.
    pub fn is_special(&self, r: Rank) -> bool {
        self.special_decoder.contains_key(&r)
    }

    /// A mask over the special tokens from a set of names; names that are not special tokens are
    /// ignored (as tiktoken ignores them).
    pub fn special_set<'s>(&self, names: impl IntoIterator<Item = &'s str>) -> SpecialSet {
        let mut m = vec![false; self.specials.len()];
        let mut any = false;
        for n in names {
            if let Some(&i) = self.special_index.get(n) {
                m[i] = true;
                any = true;
            }
        }
        if any {
            SpecialSet::Some(m)
        } else {
            SpecialSet::None
        }
    }

    fn check_encodable(&self, out: &[Rank], from: usize) -> Result<()> {
        self.check_encodable_at(&out[from..], 0)
    }

    /// [`check_encodable`](Self::check_encodable) for `tokens`, the output from its token
    /// `offset` on (as in the parts of a parallel encode), reporting positions in the output.
    fn check_encodable_at(&self, tokens: &[Rank], offset: usize) -> Result<()> {
        if !self.vocab.has_all_bytes() {
            if let Some(p) = tokens.iter().position(|&r| r == NO_ENTRY) {
                return Err(Error::Value(format!(
                    "cannot encode: token {} of the output is a byte that is not in the vocabulary",
                    offset + p
                )));
            }
        }
        Ok(())
    }

    /// Encodes `text` ignoring special tokens, appending to `out`. Returns the number of tokens
    /// the last piece produced.
    #[inline]
    pub fn encode_ordinary_into(&self, text: &str, out: &mut Vec<Rank>) -> Result<usize> {
        let from = out.len();
        let v = &self.vocab;
        let mut last = 0;
        let mut recent = bpe::Recent::new();
        self.pre.split(text, |s, e| {
            let before = out.len();
            bpe::encode_piece_recent(v, text.as_bytes(), s, e, out, &mut recent);
            last = out.len() - before;
        })?;
        self.check_encodable(out, from)?;
        Ok(last)
    }

    /// [`encode_ordinary`](Self::encode_ordinary) for one large text on several threads, with
    /// identical output. The calling thread works too, and runs the Ctrl-C poll installed on it
    /// (if any) between chunks ([`Error::Interrupted`]).
    ///
    /// The text is cut just after a newline that precedes non-whitespace, or (in a long line)
    /// before a space after an ASCII letter or digit: where the built-in patterns always end a
    /// piece. A text with no such place is encoded in one pass.
    /// Each cut is looked for between its target position and the next, so finding them reads
    /// the text at most once. Each chunk is lexed over the whole text from its start and
    /// stops at the first piece starting at or past its end, so a chunk whose last piece does not
    /// end exactly on the cut proves the cut was not a boundary; then the text is encoded in one
    /// pass instead. Texts under `min_chunk` bytes per thread, and regex patterns, run in one pass.
    pub fn encode_ordinary_parallel(
        &self,
        text: &str,
        pool: &rayon::ThreadPool,
        min_chunk: usize,
    ) -> Result<Vec<Rank>> {
        let mut parts = self.encode_ordinary_parallel_parts(text, pool, min_chunk)?;
        if parts.len() == 1 {
            return Ok(parts.pop().unwrap_or_default());
        }
        let mut out = Vec::with_capacity(parts.iter().map(Vec::len).sum());
        for p in parts {
            out.extend_from_slice(&p);
        }
        Ok(out)
    }

    /// [`encode_ordinary_parallel`](Self::encode_ordinary_parallel) as consecutive parts (one
    /// per chunk; their concatenation is the encoding), for callers that build something else
    /// from the tokens (a Python list) and need not copy them into one vector first.
    pub fn encode_ordinary_parallel_parts(
        &self,
        text: &str,
        pool: &rayon::ThreadPool,
        min_chunk: usize,
    ) -> Result<Vec<Vec<Rank>>> {
        let threads = pool.current_num_threads();
        if threads <= 1 || !self.pre.is_native() || text.len() < 2 * min_chunk.max(1) {
            return Ok(vec![self.encode_ordinary(text)?]);
        }
        let b = text.as_bytes();
        // Four chunks a thread at least, so that a late thread still gets a share, and none over
        // MAX_PARALLEL_CHUNK, so that Ctrl-C (polled between chunks) stops the work soon.
        let n_chunks = (threads * 4)
            .max(text.len().div_ceil(MAX_PARALLEL_CHUNK))
            .min(text.len() / min_chunk.max(1))
            .max(2);
        let mut cuts = vec![0usize];
        for c in 1..n_chunks {
            // Each cut is looked for between its target and the next one, so the search reads
            // the text once however few cut points it has (one long line, say).
            let target = (text.len() * c / n_chunks).max(cuts[cuts.len() - 1] + 1);
            let limit = text.len() * (c + 1) / n_chunks;
            if let Some(q) = find_cut(text, target, limit) {
                cuts.push(q);
            }
        }
        cuts.push(text.len());
        cuts.dedup();
        if cuts.len() <= 2 {
            return Ok(vec![self.encode_ordinary(text)?]); // nowhere to cut
        }
        let v = &self.vocab;
        // Chunk i: its tokens, and where its last piece ended.
        let mut parts: Vec<(Vec<Rank>, Option<usize>)> =
            (1..cuts.len()).map(|_| (Vec::new(), None)).collect();
        let done = crate::parallel::for_each_mut(pool, &mut parts, 1, |i, (out, end)| {
            let (from, to) = (cuts[i], cuts[i + 1]);
            // Tokens go to a vector of this thread's own: pushing onto `out` in place would write
            // its length next to the neighbouring chunk's, which another thread is pushing onto
            // (one cache line bouncing between the cores on every token: 1.7x slower each).
            let mut tokens = Vec::with_capacity((to - from) / 4 + 4);
            let mut recent = bpe::Recent::new();
            *end = self.pre.split_range(text, from, to, |s, e| {
                bpe::encode_piece_recent(v, b, s, e, &mut tokens, &mut recent)
            });
            *out = tokens;
        });
        if !done {
            return Err(Error::Interrupted);
        }
        if parts
            .iter()
            .zip(cuts.windows(2))
            .any(|((_, end), w)| *end != Some(w[1]))
        {
            return Ok(vec![self.encode_ordinary(text)?]);
        }
        let parts: Vec<Vec<Rank>> = parts.into_iter().map(|(p, _)| p).collect();
        let mut before = 0;
        for p in &parts {
            self.check_encodable_at(p, before)?;
            before += p.len();
        }
        Ok(parts)
    }

    /// [`encode_ordinary`](Self::encode_ordinary), taking the merges of long pieces from (and
    /// adding them to) `memo`.
    fn encode_ordinary_memo(&self, text: &str, memo: &mut PieceMemo) -> Result<Vec<Rank>> {
        let mut out = Vec::with_capacity(token_capacity(text));
        let (b, v) = (text.as_bytes(), &self.vocab);
        self.pre.split(text, |s, e| {
            if e - s < PieceMemo::MIN_PIECE {
                return bpe::encode_piece(v, b, s, e, &mut out);
            }
            if let Some(t) = memo.pieces.get(&b[s..e]) {
                return out.extend_from_slice(t);
            }
            let at = out.len();
            match v.get(&b[s..e]) {
                Some(r) => out.push(r),
                None => memo.merge(v, &b[s..e], &mut out),
            }
            if memo.bytes + (e - s) <= PieceMemo::MAX_BYTES {
                memo.bytes += e - s;
                memo.pieces.insert(b[s..e].into(), out[at..].into());
            }
        })?;
        self.check_encodable(&out, 0)?;
        Ok(out)
    }

    pub fn encode_ordinary(&self, text: &str) -> Result<Vec<Rank>> {
        let mut out = Vec::with_capacity(token_capacity(text));
        self.encode_ordinary_into(text, &mut out)?;
        Ok(out)
    }

    /// An overlapping matcher when two special tokens can overlap in some text (one inside
    /// another, or a suffix of one starting another); `None` when they cannot, which holds for
    /// every built-in encoding.
    fn overlapping_matcher(&self) -> Option<&Overlap> {
        self.overlap
            .get_or_init(|| {
                if self.specials.len() < 2 {
                    return None;
                }
                let ac = special_matcher(&self.specials, MatchKind::Standard).ok()?;
                let tokens: Vec<&[u8]> = self.specials.iter().map(|(s, _)| s.as_bytes()).collect();
                let hashes: Vec<Vec<u64>> = tokens.iter().map(|t| prefix_hashes(t)).collect();
                let overlaps = tokens.iter().enumerate().any(|(i, t)| {
                    ac.find_overlapping_iter(*t)
                        .any(|m| m.pattern().as_usize() != i)
                }) || suffix_starts_another(&tokens, &hashes);
                overlaps.then(|| Overlap {
                    ac,
                    prefixes: special_prefixes(&tokens, &hashes),
                    longest: tokens.iter().map(|t| t.len()).max().unwrap_or(0),
                })
            })
            .as_ref()
    }

    /// tiktoken looks for disallowed special tokens over the whole text before encoding; when
    /// special tokens can overlap, a disallowed one may hide inside or across an allowed one, so
    /// look for it the same way (the usual single scan finds everything otherwise).
    fn check_overlapping_disallowed(
        &self,
        text: &str,
        allowed: &SpecialSet,
        disallowed: &SpecialSet,
    ) -> Result<()> {
        if disallowed.is_empty() {
            return Ok(());
        }
        let Some(Overlap { ac, longest, .. }) = self.overlapping_matcher() else {
            return Ok(());
        };
        // Matches come by end position: once one ends a longest special token past the start
        // of the first refused one found, no later match starts before it.
        let mut first: Option<(usize, usize)> = None;
        for m in ac.find_overlapping_iter(text) {
            if first.is_some_and(|(start, _)| m.end() >= start + *longest) {
                break;
            }
            let id = m.pattern().as_usize();
            let refused = SpecialSet::refuses(disallowed, allowed, id);
            if refused && first.is_none_or(|(start, _)| m.start() < start) {
                first = Some((m.start(), id));
            }
        }
        match first {
            Some((_, id)) => Err(Error::DisallowedSpecial(self.specials[id].0.clone())),
            None => Ok(()),
        }
    }

    /// The next special token at or after `pos` that is `allowed`; errors on the first one that is
    /// `disallowed`. Matches of specials in neither set are skipped (they encode as text).
    #[inline]
    fn next_special(
        &self,
        text: &str,
        mut pos: usize,
        allowed: &SpecialSet,
        disallowed: &SpecialSet,
    ) -> Result<Option<(usize, usize, usize)>> {
        let Some(ac) = &self.ac else { return Ok(None) };
        while pos < text.len() {
            let Some(m) = ac.find(Input::new(text).range(pos..)) else {
                return Ok(None);
            };
            let id = m.pattern().as_usize();
            let refused = SpecialSet::refuses(disallowed, allowed, id);
            if refused {
                return Err(Error::DisallowedSpecial(self.specials[id].0.clone()));
            }
            if allowed.contains(id) {
                return Ok(Some((m.start(), m.end(), id)));
            }
            if let Some(shorter) = self.allowed_prefix_special(m.start(), id, allowed) {
                return Ok(Some(shorter));
            }
            pos = m.start() + 1;
        }
        Ok(None)
    }

    /// The longest `allowed` special token that starts at `start` where the longer special token
    /// `id`, not allowed, matched: a token the caller allowed is not passed over because a
    /// longer one starts with it. Only for special tokens that overlap.
    fn allowed_prefix_special(
        &self,
        start: usize,
        id: usize,
        allowed: &SpecialSet,
    ) -> Option<(usize, usize, usize)> {
        let ov = self.overlapping_matcher()?;
        let p = ov.prefixes[id].iter().find(|&&p| allowed.contains(p))?;
        Some((start, start + self.specials[*p].0.len(), *p))
    }

    /// Encodes `text`, treating `allowed` special tokens as special and raising on `disallowed`
    /// ones. Appends to `out` and returns the token count of the last ordinary piece (0 when the
    /// text ends with a special token).
    pub fn encode_into(
        &self,
        text: &str,
        allowed: &SpecialSet,
        disallowed: &SpecialSet,
        out: &mut Vec<Rank>,
    ) -> Result<usize> {
        if allowed.is_empty() && disallowed.is_empty() {
            return self.encode_ordinary_into(text, out);
        }
        self.check_overlapping_disallowed(text, allowed, disallowed)?;
        let mut start = 0;
        loop {
            let next = self.next_special(text, start, allowed, disallowed)?;
            let end = next.map_or(text.len(), |(s, _, _)| s);
            // Empty text between specials too: a custom pattern may match the empty string
            // there, and tiktoken encodes that match.
            let last = self.encode_ordinary_into(&text[start..end], out)?;
            match next {
                Some((_, e, id)) => {
                    out.push(self.specials[id].1);
                    start = e;
                }
                None => return Ok(last),
            }
        }
    }

    pub fn encode(
        &self,
        text: &str,
        allowed: &SpecialSet,
        disallowed: &SpecialSet,
    ) -> Result<Vec<Rank>> {
        let mut out = Vec::with_capacity(token_capacity(text));
        self.encode_into(text, allowed, disallowed, &mut out)?;
        Ok(out)
    }

    /// The number of tokens `encode` would return, without keeping them.
    pub fn count(
        &self,
        text: &str,
        allowed: &SpecialSet,
        disallowed: &SpecialSet,
    ) -> Result<usize> {
        if allowed.is_empty() && disallowed.is_empty() {
            return self.count_ordinary(text);
        }
        self.check_overlapping_disallowed(text, allowed, disallowed)?;
        let mut n = 0;
        let mut start = 0;
        loop {
            let next = self.next_special(text, start, allowed, disallowed)?;
            let end = next.map_or(text.len(), |(s, _, _)| s);
            n += self.count_ordinary(&text[start..end])?; // empty text too, as in encode_into
            match next {
                Some((_, e, _)) => {
                    n += 1;
                    start = e;
                }
                None => return Ok(n),
            }
        }
    }

    /// The number of tokens `encode_ordinary` would return. A vocabulary that lacks some single
    /// bytes is counted by encoding, so that an unencodable byte fails as it does there.
    fn count_ordinary(&self, text: &str) -> Result<usize> {
        let v = &self.vocab;
        if !v.has_all_bytes() {
            let mut out = Vec::new();
            self.encode_ordinary_into(text, &mut out)?;
            return Ok(out.len());
        }
        let mut scratch = Vec::new();
        let mut n = 0;
        let mut recent = bpe::Recent::new();
        self.pre.split(text, |s, e| {
            n += bpe::count_piece(v, text.as_bytes(), s, e, &mut scratch, &mut recent)
        })?;
        Ok(n)
    }

    /// Byte-pair merges `bytes` as one piece, without splitting (tiktoken's
    /// `encode_single_piece`).
    pub fn encode_single_piece(&self, bytes: &[u8]) -> Result<Vec<Rank>> {
        if let Some(r) = self.vocab.get(bytes) {
            return Ok(vec![r]);
        }
        let mut out = Vec::new();
        bpe::merge(&self.vocab, bytes, &mut out);
        self.check_encodable(&out, 0)?;
        Ok(out)
    }

    /// The id of `bytes` as a single mergeable or special token.
    pub fn encode_single_token(&self, bytes: &[u8]) -> Option<Rank> {
        self.vocab.get(bytes).or_else(|| {
            let s = std::str::from_utf8(bytes).ok()?;
            self.special_index.get(s).map(|&i| self.specials[i].1)
        })
    }

    /// The bytes of one token (mergeable or special).
    #[inline]
    pub fn token_bytes(&self, r: Rank) -> Option<&[u8]> {
        self.vocab.token(r).or_else(|| {
            self.special_decoder
                .get(&r)
                .map(|&i| self.specials[i].0.as_bytes())
        })
    }

    /// Concatenated bytes of `tokens`; `KeyError` names the first unknown id.
    pub fn decode_bytes(&self, tokens: &[Rank]) -> Result<Vec<u8>> {
        let mut out: Vec<u8> = Vec::with_capacity(tokens.len() * 4);
        let slots: &[DecodeSlot] = if tokens.len() >= SLOTS_FROM {
            self.decode_slots()
        } else {
            &[]
        };
        for (i, &t) in tokens.iter().enumerate() {
            // Ctrl-C: the poll installed by the caller, if any (about every 0.2 ms of work).
            if i % (1 << 16) == 0xffff && crate::parallel::interrupt::poll() {
                return Err(Error::Interrupted);
            }
            if let Some(slot) = slots.get(t as usize) {
                let n = slot[15];
                if n != LONG_SLOT {
                    out.reserve(16);
                    // SAFETY: `reserve` left at least 16 bytes of capacity after `len`; the
                    // slot's first `n` (< 16) bytes are the token's, so they are initialised.
                    unsafe {
                        let end = out.len();
                        std::ptr::copy_nonoverlapping(slot.as_ptr(), out.as_mut_ptr().add(end), 16);
                        out.set_len(end + n as usize);
                    }
                    continue;
                }
            }
            match self.token_bytes(t) {
                Some(b) => out.extend_from_slice(b),
                None => return Err(Error::Key(format!("Invalid token for decoding: {t}"))),
            }
        }
        Ok(out)
    }

    fn decode_slots(&self) -> &[DecodeSlot] {
        self.decode_slots.get_or_init(|| {
            let top = self.max_token().map_or(0, |r| r as usize + 1);
            let mut slots = vec![[0u8; 16]; top.min(MAX_SLOTS)];
            for (r, slot) in slots.iter_mut().enumerate() {
                match self.token_bytes(r as Rank) {
                    Some(b) if b.len() < 16 => {
                        slot[..b.len()].copy_from_slice(b);
                        slot[15] = b.len() as u8;
                    }
                    _ => slot[15] = LONG_SLOT,
                }
            }
            slots
        })
    }

    /// The length in bytes of the longest mergeable token (found on first use).
    pub fn max_token_len(&self) -> usize {
        *self
            .max_token_len
            .get_or_init(|| self.vocab.max_token_len())
    }

    /// All mergeable tokens' ids, sorted by their bytes.
    pub fn sorted_tokens(&self) -> &[Rank] {
        self.sorted_tokens.get_or_init(|| {
            let mut ids: Vec<Rank> = self.vocab.iter().map(|(_, r)| r).collect();
            ids.sort_unstable_by(|&a, &b| self.vocab.token(a).cmp(&self.vocab.token(b)));
            ids
        })
    }

    fn is_all_space(&self, r: Rank) -> bool {
        self.vocab
            .token(r)
            .is_some_and(|b| b.iter().all(|c| matches!(c, b' ' | b'\n' | b'\t')))
    }

    /// Widens the last piece over preceding all-whitespace tokens, since whitespace runs can
    /// re-split when more text follows.
    fn widen_last_piece(&self, tokens: &[Rank], mut last: usize) -> usize {
        if last > 0 && self.is_all_space(tokens[tokens.len() - last]) {
            while last < tokens.len() && self.is_all_space(tokens[tokens.len() - last - 1]) {
                last += 1;
            }
        }
        last
    }

    /// Encodes bytes that may not be valid UTF-8 (tiktoken's `_encode_bytes`): the valid prefix
    /// is encoded as text, and its unstable tail plus the invalid rest are merged as raw bytes.
    pub fn encode_bytes(&self, bytes: &[u8]) -> Result<Vec<Rank>> {
        match std::str::from_utf8(bytes) {
            Ok(s) => self.encode_ordinary(s),
            Err(e) => {
                let valid = e.valid_up_to();
                let text = std::str::from_utf8(&bytes[..valid]).expect("valid prefix");
                let mut tokens = Vec::new();
                let last = self.encode_ordinary_into(text, &mut tokens)?;
                let last = self.widen_last_piece(&tokens, last);
                let mut unstable = Vec::new();
                if !tokens.is_empty() && last > 0 {
                    unstable = self.decode_bytes(&tokens[tokens.len() - last..])?;
                    tokens.truncate(tokens.len() - last);
                }
                unstable.extend_from_slice(&bytes[valid..]);
                let from = tokens.len();
                bpe::merge(&self.vocab, &unstable, &mut tokens);
                self.check_encodable(&tokens, from)?;
                Ok(tokens)
            }
        }
    }

    /// tiktoken's `encode_with_unstable`: the stable tokens, and every token sequence that could
    /// continue the unstable tail (sorted, without duplicates).
    pub fn encode_with_unstable(
        &self,
        text: &str,
        allowed: &SpecialSet,
        disallowed: &SpecialSet,
    ) -> Result<(Vec<Rank>, Vec<Vec<Rank>>)> {
        self.encode_with_unstable_sharing(text, allowed, disallowed, PieceMemo::MIN_SHARED)
    }

    /// [`Self::encode_with_unstable`] where the candidates' pieces of `min_shared` bytes or more
    /// start from the tokens of the first such piece (see [`PieceMemo::merge`]); tests compare
    /// it with `usize::MAX` (no sharing).
    #[doc(hidden)]
    pub fn encode_with_unstable_sharing(
        &self,
        text: &str,
        allowed: &SpecialSet,
        disallowed: &SpecialSet,
        min_shared: usize,
    ) -> Result<(Vec<Rank>, Vec<Vec<Rank>>)> {
        let mut tokens = Vec::new();
        let last = self.encode_into(text, allowed, disallowed, &mut tokens)?;
        if last == 0 {
            return Ok((tokens, Vec::new()));
        }
        let last = self.widen_last_piece(&tokens, last);
        let unstable = self.decode_bytes(&tokens[tokens.len() - last..])?;
        tokens.truncate(tokens.len() - last);
        let mut completions: FxHashSet<Vec<Rank>> = FxHashSet::default();
        if unstable.is_empty() {
            return Ok((tokens, Vec::new()));
        }
        let sorted = self.sorted_tokens();
        let tb = |r: Rank| self.vocab.token(r).unwrap();
        // Tokens in the completions so far (each counted once); see MAX_COMPLETION_TOKENS.
        let mut total = 0usize;
        // The texts re-encoded below differ only near their ends: long pieces (a long run of
        // spaces, say) recur, so their merges are remembered for this call.
        let mut memo = PieceMemo::new(min_shared);
        let lower = |prefix: &[u8]| sorted.partition_point(|&r| tb(r) < prefix);
        // Single tokens that extend the unstable bytes.
        let mut i = lower(&unstable);
        while i < sorted.len() && tb(sorted[i]).starts_with(&unstable) {
            completions.insert(vec![sorted[i]]);
            i += 1;
        }
        // A prefix of the unstable bytes followed by a token that starts with the rest (which
        // no token does where the rest is longer than the longest token).
        let first_split = unstable.len().saturating_sub(self.max_token_len()).max(1);
        // Refuse at once what is sure to be too large: every completion holds the whole
        // unstable tail, so at least `min_len` tokens; allow for three in four coinciding.
        // For each split, the tokens (in `sorted`) that start with the rest.
        let ranges: Vec<(usize, std::ops::Range<usize>)> = (first_split..unstable.len())
            .map(|split| {
                let suffix = &unstable[split..];
                let from = lower(suffix);
                let count = sorted[from..].partition_point(|&r| tb(r).starts_with(suffix));
                (split, from..from + count)
            })
            .collect();
        let candidates: usize = ranges.iter().map(|(_, r)| r.len()).sum();
        let min_len = unstable.len().div_ceil(self.max_token_len().max(1));
        if candidates.saturating_mul(min_len) / 4 > MAX_COMPLETION_TOKENS {
            return Err(too_large(unstable.len()));
        }
        for (split, range) in ranges {
            let prefix = &unstable[..split];
            for &token in &sorted[range] {
                if crate::parallel::interrupt::poll() {
                    return Err(Error::Interrupted);
                }
                let possibility = [prefix, tb(token)].concat();
                let encoded = match std::str::from_utf8(&possibility) {
                    Ok(s) => self.encode_ordinary_memo(s, &mut memo)?,
                    Err(_) => {
                        let mut v = Vec::new();
                        memo.merge(&self.vocab, &possibility, &mut v);
                        v
                    }
                };
                let mut seq = Vec::new();
                let mut seq_len = 0;
                for t in encoded {
                    seq.push(t);
                    seq_len += self.token_bytes(t).map_or(0, <[u8]>::len);
                    if seq_len >= unstable.len() {
                        break;
                    }
                }
                let n = seq.len();
                if completions.insert(seq) {
                    total += n;
                    if total > MAX_COMPLETION_TOKENS {
                        return Err(too_large(unstable.len()));
                    }
                }
            }
        }
        // Trailing whitespace may be split off the rest.
        if unstable.len() > 1 {
            let (ch, clen) = last_char(&unstable);
            if unstable.len() - clen > 0 && ch.is_some_and(char::is_whitespace) {
                let cut = unstable.len() - clen;
                let mut re = Vec::new();
                bpe::merge(&self.vocab, &unstable[..cut], &mut re);
                bpe::merge(&self.vocab, &unstable[cut..], &mut re);
                completions.insert(re);
            }
        }
        let mut completions: Vec<Vec<Rank>> = completions.into_iter().collect();
        completions.sort();
        Ok((tokens, completions))
    }
}

/// What encoding with special tokens that can overlap needs.
struct Overlap {
    /// Every match of every special token (overlapping ones too).
    ac: AhoCorasick,
    /// For each special token, the others that are proper prefixes of it, longest first.
    prefixes: Vec<Vec<usize>>,
    /// The length of the longest special token.
    longest: usize,
}

/// The base of the polynomial hashes below.
const HASH_BASE: u64 = 0x100_0000_01B3;

/// Special tokens up to this many bytes in all get a DFA matcher (the fastest to search); longer
/// ones an NFA. The DFA's construction follows failure links for every state and byte class, so
/// a long repetitive token (`"a" * 10_000`) takes time quadratic in its length (0.4 s at 10 kB,
/// over a minute at 100 kB); the NFA's is linear.
const DFA_SPECIAL_BYTES: usize = 1 << 12;

/// An Aho-Corasick matcher over the special tokens' bytes.
fn special_matcher(
    specials: &[(String, Rank)],
    kind: MatchKind,
) -> std::result::Result<AhoCorasick, aho_corasick::BuildError> {
    let total: usize = specials.iter().map(|(s, _)| s.len()).sum();
    let patterns = || specials.iter().map(|(s, _)| s.as_bytes());
    let mut b = AhoCorasick::builder();
    b.match_kind(kind);
    if total <= DFA_SPECIAL_BYTES {
        return b.build(patterns());
    }
    // A contiguous NFA unless it has too many states for one (then the noncontiguous kind),
    // as the automatic choice does when there are too many patterns for a DFA.
    b.kind(Some(AhoCorasickKind::ContiguousNFA))
        .build(patterns())
        .or_else(|_| {
            b.kind(Some(AhoCorasickKind::NoncontiguousNFA))
                .build(patterns())
        })
}

/// Polynomial hashes of the prefixes of `t`: element `k` is the hash of `t[..k]`. Any other
/// substring's hash follows from two of them, so comparing prefixes and suffixes of tokens costs
/// time linear in their length.
fn prefix_hashes(t: &[u8]) -> Vec<u64> {
    let mut h = Vec::with_capacity(t.len() + 1);
    h.push(0u64);
    for (k, &b) in t.iter().enumerate() {
        h.push(h[k].wrapping_mul(HASH_BASE).wrapping_add(b as u64 + 1));
    }
    h
}

/// For each of `tokens`, the others that are its proper prefixes, longest first: whole tokens
/// are looked up by the hashes of each token's prefixes (`hashes`, from [`prefix_hashes`]), and a
/// hit is confirmed on the bytes.
fn special_prefixes(tokens: &[&[u8]], hashes: &[Vec<u64>]) -> Vec<Vec<usize>> {
    let mut whole: FxHashMap<(usize, u64), Vec<usize>> = FxHashMap::default();
    for (i, (t, h)) in tokens.iter().zip(hashes).enumerate() {
        whole.entry((t.len(), h[t.len()])).or_default().push(i);
    }
    tokens
        .iter()
        .zip(hashes)
        .map(|(t, h)| {
            let mut found = Vec::new();
            for k in 1..t.len() {
                if let Some(ids) = whole.get(&(k, h[k])) {
                    found.extend(ids.iter().copied().filter(|&j| tokens[j] == &t[..k]));
                }
            }
            found.reverse();
            found
        })
        .collect()
}

/// Whether a proper suffix of one of `tokens` is a prefix of one of them (so that two can
/// overlap in a text), in time linear in their total length: suffixes and prefixes are compared
/// by their hashes (`hashes`, from [`prefix_hashes`]), and a hit is confirmed on the bytes (a
/// hash collision that fails the check falls back to comparing bytes, which is quadratic but
/// never happens in practice).
fn suffix_starts_another(tokens: &[&[u8]], hashes: &[Vec<u64>]) -> bool {
    let longest = tokens.iter().map(|t| t.len()).max().unwrap_or(0);
    let mut pow = Vec::with_capacity(longest + 1);
    pow.push(1u64);
    for i in 0..longest {
        pow.push(pow[i].wrapping_mul(HASH_BASE));
    }
    // (length, hash) of every prefix -> a token with that prefix
    let mut prefixes: FxHashMap<(usize, u64), usize> = FxHashMap::default();
    for (i, h) in hashes.iter().enumerate() {
        for (k, &x) in h.iter().enumerate().skip(1) {
            prefixes.entry((k, x)).or_insert(i);
        }
    }
    for (t, h) in tokens.iter().zip(hashes) {
        let n = t.len();
        for k in 1..n {
            let suffix = h[n].wrapping_sub(h[k].wrapping_mul(pow[n - k]));
            if let Some(&j) = prefixes.get(&(n - k, suffix)) {
                if tokens[j][..n - k] == t[k..] {
                    return true;
                }
                // A collision: decide by the bytes.
                let set: FxHashSet<&[u8]> = tokens
                    .iter()
                    .flat_map(|s| (1..=s.len()).map(move |k| &s[..k]))
                    .collect();
                return tokens
                    .iter()
                    .any(|t| (1..t.len()).any(|k| set.contains(&t[k..])));
            }
        }
    }
    false
}

/// The last UTF-8 char of `b` and its byte length; an invalid tail counts as one byte, `None`.
fn last_char(b: &[u8]) -> (Option<char>, usize) {
    for len in 1..=4.min(b.len()) {
        if let Ok(s) = std::str::from_utf8(&b[b.len() - len..]) {
            return (s.chars().next(), len);
        }
    }
    (None, 1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pretokenize::CL100K_PATTERN;

    /// How many pieces [`PieceMemo::merge`] continued from its base's tokens.
    pub static SHARED: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

    #[test]
    fn unstable_candidates_that_share_a_long_start_get_the_same_completions() {
        let o200k = CoreBpe::new(
            crate::vocab::bundled("o200k_base").unwrap(),
            crate::pretokenize::builtin_pattern("o200k_base").unwrap(),
            vec![],
        )
        .unwrap();
        let mut x = 0x2545_F491_4F6C_DD1Du64;
        let mut letters = |alphabet: &[char], n: usize| -> String {
            (0..n)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    alphabet[(x % alphabet.len() as u64) as usize]
                })
                .collect()
        };
        let texts = [
            "a".repeat(1500),
            format!("{}b", "a".repeat(1200)),
            format!("x {}", "e".repeat(1100)),
            "ab".repeat(700),
            "п".repeat(800), // 1600 bytes: split candidates are not UTF-8
            format!("{}z", "Привет".repeat(120)), // one long Cyrillic word
            format!("hi{}", " ".repeat(1300)), // whitespace runs split off their last space
            "1".repeat(1200),
            letters(&['a', 'b', 'c', 'e', 'r'], 1500), // one long word of varied merges
            letters(&['д', 'а', 'н', 'о'], 900),
        ];
        let none = SpecialSet::None;
        let before = SHARED.load(std::sync::atomic::Ordering::Relaxed);
        for e in [cl100k(), o200k] {
            for t in &texts {
                let exact = e
                    .encode_with_unstable_sharing(t, &none, &none, usize::MAX)
                    .unwrap();
                assert!(!exact.1.is_empty(), "{:?}", &t[..8]);
                for min_shared in [40, 300, PieceMemo::MIN_SHARED] {
                    let got = e
                        .encode_with_unstable_sharing(t, &none, &none, min_shared)
                        .unwrap();
                    assert!(got == exact, "{:?}... with {min_shared}", &t[..8]);
                }
            }
        }
        // The sharing did happen (the counter is shared with other tests, which only add).
        assert!(SHARED.load(std::sync::atomic::Ordering::Relaxed) > before + 1000);
    }

    fn cl100k() -> CoreBpe {
        let v = crate::vocab::bundled("cl100k_base").unwrap();
        CoreBpe::new(
            v,
            CL100K_PATTERN,
            vec![
                ("<|endoftext|>".into(), 100257),
                ("<|fim_prefix|>".into(), 100258),
            ],
        )
        .unwrap()
    }

    #[test]
    fn known_ids() {
        let e = cl100k();
        assert_eq!(e.encode_ordinary("hello world").unwrap(), vec![15339, 1917]);
        let all = SpecialSet::All;
        assert_eq!(
            e.encode("hi<|endoftext|>", &all, &SpecialSet::None)
                .unwrap(),
            vec![6151, 100257]
        );
        assert!(matches!(
            e.encode("hi<|endoftext|>", &SpecialSet::None, &SpecialSet::All),
            Err(Error::DisallowedSpecial(_))
        ));
        assert_eq!(
            e.count("hello world<|endoftext|>", &all, &SpecialSet::None)
                .unwrap(),
            3
        );
        assert_eq!(
            e.decode_bytes(&[15339, 1917, 100257]).unwrap(),
            b"hello world<|endoftext|>"
        );
        assert!(matches!(e.decode_bytes(&[100256]), Err(Error::Key(_))));
    }

    #[test]
    fn a_poll_that_fires_stops_long_encodes() {
        use crate::parallel::interrupt::with_poll;
        let native = cl100k();
        let regex = CoreBpe::new(
            crate::vocab::bundled("cl100k_base").unwrap(),
            r"\S+|\s+",
            vec![],
        )
        .unwrap();
        // Enough pieces that the poll runs (after INTERVAL) before the text is done.
        let text = "interrupt me, please. ".repeat(1 << 20);
        let none = SpecialSet::None;
        let slow_poll = || {
            std::thread::sleep(std::time::Duration::from_millis(1));
            true
        };
        for e in [&native, &regex] {
            let t = std::time::Instant::now();
            let (r, hit) = with_poll(&slow_poll, || e.encode_ordinary(&text));
            assert!(hit && matches!(r, Err(Error::Interrupted)));
            // Stopped long before the end (the poll is due after INTERVAL).
            assert!(t.elapsed() < std::time::Duration::from_secs(2));
            let (r, _) = with_poll(&slow_poll, || e.count(&text, &none, &none));
            assert!(matches!(r, Err(Error::Interrupted)));
            let (r, _) = with_poll(&slow_poll, || e.encode(&text, &SpecialSet::All, &none));
            assert!(matches!(r, Err(Error::Interrupted)));
        }
        let pool = crate::parallel::pool(2);
        let big = "interrupt me, please.\n".repeat(1 << 20);
        let (r, hit) = with_poll(&slow_poll, || {
            native.encode_ordinary_parallel(&big, &pool, 1 << 16)
        });
        assert!(hit && matches!(r, Err(Error::Interrupted)));
        // One long piece (a run of letters: chunked merge; of spaces and of a CJK character
        // with a vocabulary lacking its pairs: the same) stops inside its merge.
        for run in ["a".repeat(64 << 20), " ".repeat(64 << 20) + "x"] {
            let t = std::time::Instant::now();
            native.encode_ordinary(&run).unwrap();
            let whole = t.elapsed();
            let t = std::time::Instant::now();
            let (r, hit) = with_poll(&slow_poll, || native.encode_ordinary(&run));
            assert!(hit && matches!(r, Err(Error::Interrupted)));
            let (r, _) = with_poll(&slow_poll, || native.count(&run, &none, &none));
            assert!(matches!(r, Err(Error::Interrupted)));
            assert!(t.elapsed() < whole / 2, "{:?} of {whole:?}", t.elapsed());
        }
        // The heap merge returns at once, with nothing made.
        let heap_piece = vec![b'a'; 8 << 20];
        let mut out = Vec::new();
        let (_, hit) = with_poll(&slow_poll, || {
            crate::bpe::merge_heap(native.vocab(), &heap_piece, &mut out)
        });
        assert!(hit && out.is_empty());
        // A poll that never fires changes nothing.
        let (r, hit) = with_poll(&|| false, || native.encode_ordinary(&text));
        assert!(!hit && r.unwrap() == native.encode_ordinary(&text).unwrap());
        let (r, _) = with_poll(&|| false, || {
            native.encode_ordinary_parallel(&big, &pool, 1 << 16)
        });
        assert_eq!(r.unwrap(), native.encode_ordinary(&big).unwrap());
    }

    #[test]
    fn parallel_encoding_is_identical() {
        let e = cl100k();
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(3)
            .build()
            .unwrap();
        let mut text = String::new();
        for i in 0..3000 {
            text.push_str(&format!(
                "line {i} of text, with words\n  indented {i}\n\n\n   \n日本語{i}\n"
            ));
        }
        for t in [
            text.as_str(),
            "no newline at all ".repeat(500).as_str(),
            "\n\n\n\n".repeat(900).as_str(),
        ] {
            let want = e.encode_ordinary(t).unwrap();
            assert_eq!(e.encode_ordinary_parallel(t, &pool, 64).unwrap(), want);
        }
        // One long line, cut between words: every built-in pattern, and words next to
        // contractions, capitals, digits, punctuation, runs of spaces and other scripts.
        let line =
            "It's a Test of words don't BREAK 42 x  y ab\tcd A B c'S dé çà 中 文 ok! ".repeat(400);
        for (name, rank_file) in [
            ("cl100k_base", "cl100k_base"),
            ("o200k_base", "o200k_base"),
            ("r50k_base", "r50k_base"),
        ] {
            let e = CoreBpe::new(
                crate::vocab::bundled(rank_file).unwrap(),
                crate::pretokenize::builtin_pattern(name).unwrap(),
                vec![],
            )
            .unwrap();
            let want = e.encode_ordinary(&line).unwrap();
            assert_eq!(
                e.encode_ordinary_parallel(&line, &pool, 64).unwrap(),
                want,
                "{name}"
            );
            // The cuts are piece boundaries (so the parallel path did not fall back).
            let mut prev = 0;
            for k in 1..64 {
                let (from, to) = (line.len() * k / 64, line.len() * (k + 1) / 64);
                let cut = find_cut(&line, from.max(prev + 1), to).unwrap();
                assert_eq!(
                    e.pre.split_range(&line, prev, cut, |_, _| {}),
                    Some(cut),
                    "{name} {cut}"
                );
                prev = cut;
            }
        }
    }

    #[test]
    fn cuts_are_found_in_one_pass_and_between_words() {
        let t = "alpha beta\n gamma\ndelta epsilon";
        // After a newline before non-whitespace first; else before a space between letters.
        assert_eq!(find_cut(t, 0, t.len()), Some(t.find("delta").unwrap()));
        assert_eq!(find_cut(t, 0, 8), Some(5));
        assert_eq!(find_cut("a1 2b  c", 0, 8), Some(2));
        assert_eq!(find_cut("!! .. 中 文", 0, 14), None);
        // A window is searched only up to its end.
        let long = "word ".repeat(1000);
        assert_eq!(find_cut(&long, 100, 103), None);
        assert_eq!(find_cut(&long, 100, 110), Some(104));
    }

    #[test]
    fn suffix_overlap_agrees_with_comparing_bytes() {
        let overlap = |tokens: &[&[u8]]| {
            let hashes: Vec<Vec<u64>> = tokens.iter().map(|t| prefix_hashes(t)).collect();
            suffix_starts_another(tokens, &hashes)
        };
        let brute = |tokens: &[&[u8]]| {
            tokens
                .iter()
                .any(|t| (1..t.len()).any(|k| tokens.iter().any(|u| u.starts_with(&t[k..]))))
        };
        let mut seed = 7u64;
        let mut next = || {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (seed >> 33) as usize
        };
        for _ in 0..3000 {
            let n = 1 + next() % 4;
            let owned: Vec<Vec<u8>> = (0..n)
                .map(|_| (0..1 + next() % 6).map(|_| b"abc"[next() % 3]).collect())
                .collect();
            let tokens: Vec<&[u8]> = owned.iter().map(|t| &t[..]).collect();
            assert_eq!(overlap(&tokens), brute(&tokens), "{owned:?}");
        }
        // Linear in the tokens' length: a long token with no overlap is settled at once.
        let long = vec![b'a'; 1 << 20];
        assert!(!overlap(&[b"<|x|>", &[&b"<"[..], &long, b">"].concat()]));
        assert!(overlap(&[b"<|x|>", b"x|>yz"]));
    }

    #[test]
    fn nested_special_tokens_are_found_without_rescanning() {
        let bytes: Vec<[u8; 1]> = (0..=255u8).map(|b| [b]).collect();
        let v = Vocab::from_entries(bytes.iter().map(|b| (&b[..], b[0] as Rank))).unwrap();
        let specials: Vec<(String, Rank)> = (1..=200)
            .map(|i| ("x".repeat(i), 300 + i as Rank))
            .collect();
        let e = CoreBpe::new(v, r"\S+|\s+", specials).unwrap();
        let text = "x".repeat(20_000);
        // Only "x" allowed, nothing refused: each x is that special token.
        let x = e.special_set(["x"]);
        let t = std::time::Instant::now();
        assert_eq!(
            e.encode(&text, &x, &SpecialSet::None).unwrap(),
            vec![301; 20_000]
        );
        // Everything refused: the first match is the error, found at once.
        assert!(matches!(
            e.encode(&"x".repeat(2_000_000), &SpecialSet::None, &SpecialSet::All),
            Err(Error::DisallowedSpecial(t)) if t == "x"
        ));
        // "xx" allowed: the longest allowed one at each place (two x's, then the last alone as
        // text when the length is odd).
        let xx = e.special_set(["xx"]);
        assert_eq!(
            e.encode("xxxxx", &xx, &SpecialSet::None).unwrap(),
            vec![302, 302, b'x' as Rank]
        );
        // Quadratic rescans took minutes here; linear ones well under a second (debug builds
        // included).
        assert!(t.elapsed().as_secs() < 20, "{:?}", t.elapsed());
    }

    #[test]
    fn overlapping_disallowed_specials_are_found() {
        let bytes: Vec<[u8; 1]> = (0..=255u8).map(|b| [b]).collect();
        let v = Vocab::from_entries(bytes.iter().map(|b| (&b[..], b[0] as Rank))).unwrap();
        let e = CoreBpe::new(v, r"\S+|\s+", vec![("ab".into(), 300), ("bc".into(), 301)]).unwrap();
        let ab = e.special_set(["ab"]);
        assert!(
            matches!(e.encode("abc", &ab, &SpecialSet::All), Err(Error::DisallowedSpecial(t)) if t == "bc")
        );
        assert!(matches!(
            e.count("abc", &ab, &SpecialSet::All),
            Err(Error::DisallowedSpecial(_))
        ));
        assert_eq!(
            e.encode("abc", &ab, &SpecialSet::None).unwrap(),
            vec![300, 99]
        );
        // The built-in encodings' special tokens never overlap: no extra scan for them.
        assert!(cl100k().overlapping_matcher().is_none());
    }

    #[test]
    fn encode_bytes_handles_invalid_utf8() {
        let e = cl100k();
        let toks = e.encode_bytes(b"hello \xff\xfe world").unwrap();
        assert_eq!(e.decode_bytes(&toks).unwrap(), b"hello \xff\xfe world");
    }

    #[test]
    fn counts_with_a_vocabulary_that_lacks_bytes() {
        // Every byte but `z`, plus "ab": counting once recursed forever on such vocabularies.
        let bytes: Vec<[u8; 1]> = (0..=255u8).filter(|&b| b != b'z').map(|b| [b]).collect();
        let mut entries: Vec<(&[u8], Rank)> = bytes
            .iter()
            .enumerate()
            .map(|(i, b)| (&b[..], i as Rank))
            .collect();
        entries.push((b"ab", 300));
        let vocab = crate::vocab::Vocab::from_entries(entries).unwrap();
        let e = CoreBpe::new(vocab, CL100K_PATTERN, vec![("<|x|>".into(), 301)]).unwrap();
        let (none, all) = (SpecialSet::None, SpecialSet::All);
        for text in ["", "ab cab", "ab<|x|>ab ab"] {
            let want = e.encode(text, &all, &none).unwrap().len();
            assert_eq!(e.count(text, &all, &none).unwrap(), want, "{text:?}");
        }
        assert_eq!(e.count("ab ab", &none, &none).unwrap(), 3);
        assert_eq!(e.count("ab ab", &none, &all).unwrap(), 3);
        // A text whose bytes are missing fails as encoding it does.
        let bad = "a z";
        assert!(matches!(e.encode_ordinary(bad), Err(Error::Value(_))));
        assert!(matches!(e.count(bad, &none, &none), Err(Error::Value(_))));
        assert!(matches!(e.count(bad, &all, &none), Err(Error::Value(_))));
    }
}
