//! Phase 1 of training: counting the distinct pieces ("words") of a corpus.
//!
//! Why it is built this way: splitting and counting is most of the work of training on a large
//! corpus. Each worker thread counts its share of a batch in a private hash table whose keys
//! borrow from the batch (no allocation per piece); after the batch the private tables are
//! partitioned by hash and merged, one shard per task in parallel, into [`WordTable`], whose
//! shards own their keys in one byte arena each (16 bytes of slot per word, no per-word
//! allocation). Memory grows with the number of distinct words, never with the corpus. With a
//! memory limit the table is written out as a sorted run and emptied, and the runs are merged
//! exactly at the end. The result, [`Sorted`], is ordered by the word bytes, so it is the same
//! whatever the order of the input, the thread count, the batch size or the spilling.
use std::cmp::Ordering as CmpOrdering;
use std::collections::BinaryHeap;
use std::fs::File;
use std::hash::BuildHasher;
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use aho_corasick::{AhoCorasick, MatchKind};
use allocator_api2::vec::Vec as BigVec;
use hashbrown::HashTable;
use rayon::prelude::*;
use rustc_hash::FxBuildHasher;

use super::alloc::Big;
use crate::error::{Error, Result};
use crate::input::is_safe_boundary;
use crate::pretokenize::Pretokenizer;

#[inline]
fn hash_word(w: &[u8]) -> u64 {
    FxBuildHasher.hash_one(w)
}

const SHARD_BITS: u32 = 6;
const SHARDS: usize = 1 << SHARD_BITS;

#[inline]
fn shard_of(h: u64) -> usize {
    ((h >> 40) as usize) & (SHARDS - 1)
}

// ---------------------------------------------------------------------------------------------
// Sorted: the compact, canonical form.

/// Distinct words with 64-bit counts, sorted by their bytes.
#[derive(Clone, Default, Debug, PartialEq, Eq)]
pub struct Sorted {
    bytes: Vec<u8>,
    ends: Vec<u64>,
    counts: Vec<u64>,
}

impl Sorted {
    pub fn len(&self) -> usize {
        self.counts.len()
    }

    pub fn is_empty(&self) -> bool {
        self.counts.is_empty()
    }

    /// The `i`-th word (in byte order).
    #[inline]
    pub fn word(&self, i: usize) -> &[u8] {
        let s = if i == 0 { 0 } else { self.ends[i - 1] as usize };
        &self.bytes[s..self.ends[i] as usize]
    }

    #[inline]
    pub fn count(&self, i: usize) -> u64 {
        self.counts[i]
    }

    /// The sum of all counts (exact: it may pass 2**64).
    pub fn total(&self) -> u128 {
        self.counts.iter().map(|&c| c as u128).sum()
    }

    /// The total length in bytes of the distinct words.
    pub fn total_bytes(&self) -> usize {
        self.bytes.len()
    }

    pub fn iter(&self) -> impl ExactSizeIterator<Item = (&[u8], u64)> + '_ {
        (0..self.len()).map(move |i| (self.word(i), self.counts[i]))
    }

    /// The count of `word` (0 if absent).
    pub fn get(&self, word: &[u8]) -> u64 {
        let (mut lo, mut hi) = (0, self.len());
        while lo < hi {
            let mid = (lo + hi) / 2;
            match self.word(mid).cmp(word) {
                CmpOrdering::Less => lo = mid + 1,
                CmpOrdering::Greater => hi = mid,
                CmpOrdering::Equal => return self.counts[mid],
            }
        }
        0
    }

    /// Appends `word`, which must sort at or after the last one (equal words add up).
    fn push(&mut self, word: &[u8], count: u64) {
        if let Some(last) = self.len().checked_sub(1) {
            match self.word(last).cmp(word) {
                CmpOrdering::Equal => {
                    self.counts[last] = self.counts[last].saturating_add(count);
                    return;
                }
                CmpOrdering::Greater => unreachable!("Sorted::push out of order"),
                CmpOrdering::Less => {}
            }
        }
        self.bytes.extend_from_slice(word);
        self.ends.push(self.bytes.len() as u64);
        self.counts.push(count);
    }

    /// The largest count (0 when empty).
    pub fn max_count(&self) -> u64 {
        self.counts.iter().copied().max().unwrap_or(0)
    }

    /// The sum of two sorted count sets (linear merge).
    pub fn merged(a: &Sorted, b: &Sorted) -> Sorted {
        if b.is_empty() {
            return a.clone();
        }
        if a.is_empty() {
            return b.clone();
        }
        let mut out = Sorted {
            bytes: Vec::with_capacity(a.bytes.len() + b.bytes.len()),
            ends: Vec::with_capacity(a.len() + b.len()),
            counts: Vec::with_capacity(a.len() + b.len()),
        };
        let (mut i, mut j) = (0, 0);
        while i < a.len() && j < b.len() {
            match a.word(i).cmp(b.word(j)) {
                CmpOrdering::Less => {
                    out.push(a.word(i), a.counts[i]);
                    i += 1;
                }
                CmpOrdering::Greater => {
                    out.push(b.word(j), b.counts[j]);
                    j += 1;
                }
                CmpOrdering::Equal => {
                    out.push(a.word(i), a.counts[i].saturating_add(b.counts[j]));
                    i += 1;
                    j += 1;
                }
            }
        }
        for k in i..a.len() {
            out.push(a.word(k), a.counts[k]);
        }
        for k in j..b.len() {
            out.push(b.word(k), b.counts[k]);
        }
        out
    }

    /// A word whose counts in `a` and `b` add up to more than 2**64 - 1, if any.
    pub fn overflow_with(&self, b: &Sorted) -> Option<&[u8]> {
        let (mut i, mut j) = (0, 0);
        while i < self.len() && j < b.len() {
            match self.word(i).cmp(b.word(j)) {
                CmpOrdering::Less => i += 1,
                CmpOrdering::Greater => j += 1,
                CmpOrdering::Equal => {
                    if self.counts[i].checked_add(b.counts[j]).is_none() {
                        return Some(self.word(i));
                    }
                    i += 1;
                    j += 1;
                }
            }
        }
        None
    }

    /// From unsorted `(word, count)` pairs (duplicates add up).
    pub fn from_pairs(mut v: Vec<(&[u8], u64)>) -> Sorted {
        Self::from_pairs_in_place(&mut v, &crate::parallel::pool_for(0))
    }

    /// From unsorted `(word, count)` pairs (duplicates add up), sorting them in place on
    /// `pool` (never rayon's global pool, which a forked child could not use: see
    /// `parallel::after_fork_in_child`).
    fn from_pairs_in_place(v: &mut [(&[u8], u64)], pool: &rayon::ThreadPool) -> Sorted {
        pool.install(|| v.par_sort_unstable_by(|a, b| a.0.cmp(b.0)));
        let mut out = Sorted::default();
        out.bytes.reserve(v.iter().map(|p| p.0.len()).sum());
        out.ends.reserve(v.len());
        out.counts.reserve(v.len());
        for &(w, c) in v.iter() {
            out.push(w, c);
        }
        out
    }

    /// Drops words with a zero count.
    fn without_zeros(self) -> Sorted {
        if !self.counts.contains(&0) {
            return self;
        }
        let mut out = Sorted::default();
        for (w, c) in self.iter() {
            if c > 0 {
                out.push(w, c);
            }
        }
        out
    }

    /// Serialises the words, prefix-coded: for each word the shared prefix length with the
    /// previous one, the suffix length, the suffix and the count, as LEB128 varints.
    fn write_entries(&self, out: &mut Vec<u8>) {
        put_varint(out, self.len() as u64);
        let mut prev: &[u8] = &[];
        for (w, c) in self.iter() {
            let shared = prev.iter().zip(w).take_while(|(a, b)| a == b).count();
            put_varint(out, shared as u64);
            put_varint(out, (w.len() - shared) as u64);
            out.extend_from_slice(&w[shared..]);
            put_varint(out, c);
            prev = w;
        }
    }

    fn read_entries(r: &mut Cursor<'_>) -> Result<Sorted> {
        let n = r.varint()? as usize;
        let mut out = Sorted::default();
        out.ends.reserve(n.min(1 << 24));
        out.counts.reserve(n.min(1 << 24));
        let mut word: Vec<u8> = Vec::new();
        for _ in 0..n {
            let shared = r.varint()? as usize;
            let len = r.varint()? as usize;
            if shared > word.len() {
                return Err(r.bad("prefix longer than the previous word"));
            }
            word.truncate(shared);
            word.extend_from_slice(r.take(len)?);
            let c = r.varint()?;
            if let Some(last) = out.len().checked_sub(1) {
                if out.word(last) >= &word[..] {
                    return Err(r.bad("words out of order"));
                }
            }
            out.push(&word, c);
        }
        Ok(out)
    }
}

pub(crate) fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// A bounds-checked reader over a serialised blob.
pub(crate) struct Cursor<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    pub(crate) fn new(data: &'a [u8]) -> Self {
        Cursor { data, pos: 0 }
    }

    pub(crate) fn bad(&self, msg: &str) -> Error {
        Error::Value(format!(
            "invalid WordCounts data at byte {}: {msg}",
            self.pos
        ))
    }

    pub(crate) fn varint(&mut self) -> Result<u64> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = *self
                .data
                .get(self.pos)
                .ok_or_else(|| self.bad("truncated"))?;
            self.pos += 1;
            v |= u64::from(b & 0x7f) << shift;
            if b < 0x80 {
                return Ok(v);
            }
        }
        Err(self.bad("varint too long"))
    }

    pub(crate) fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        if self.data.len() - self.pos < n {
            return Err(self.bad("truncated"));
        }
        let s = &self.data[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    pub(crate) fn at_end(&self) -> bool {
        self.pos == self.data.len()
    }
}

// ---------------------------------------------------------------------------------------------
// The counting tables.

#[derive(Clone, Copy)]
struct Slot {
    off: u64,
    count: u64,
    len: u32,
}

/// One shard of [`WordTable`]. Its storage comes from [`Big`], so that it leaves no resident
/// memory behind on the worker threads that grew it.
struct Shard {
    table: HashTable<Slot, Big>,
    arena: BigVec<u8, Big>,
}

impl Default for Shard {
    fn default() -> Self {
        Shard {
            table: HashTable::new_in(Big),
            arena: BigVec::new_in(Big),
        }
    }
}

/// Whether a slot holds `word` (its bytes in `arena`).
#[inline]
fn holds<'a>(arena: &'a [u8], word: &'a [u8]) -> impl Fn(&Slot) -> bool + 'a {
    move |s| {
        s.len as usize == word.len() && &arena[s.off as usize..s.off as usize + word.len()] == word
    }
}

impl Shard {
    #[inline]
    fn add(&mut self, word: &[u8], h: u64, count: u64) {
        let Shard { table, arena } = self;
        if let Some(s) = table.find_mut(h, holds(arena, word)) {
            s.count = s.count.saturating_add(count);
            return;
        }
        let off = arena.len() as u64;
        arena.extend_from_slice(word);
        let arena: &BigVec<u8, Big> = arena;
        table.insert_unique(
            h,
            Slot {
                off,
                count,
                len: word.len() as u32,
            },
            |s| hash_word(&arena[s.off as usize..s.off as usize + s.len as usize]),
        );
    }

    fn get(&self, word: &[u8], h: u64) -> u64 {
        self.table
            .find(h, holds(&self.arena, word))
            .map_or(0, |s| s.count)
    }

    fn mem_bytes(&self) -> usize {
        self.table.capacity() * (std::mem::size_of::<Slot>() + 1) + self.arena.capacity()
    }
}

/// A worker's private table for one batch; keys borrow from the batch.
struct Local<'a> {
    table: HashTable<(&'a [u8], u64, u64), Big>,
    /// Words counted (the sum of the counts).
    words: u64,
}

impl<'a> Local<'a> {
    fn new() -> Self {
        Local {
            table: HashTable::with_capacity_in(1 << 12, Big),
            words: 0,
        }
    }

    #[inline]
    fn add(&mut self, w: &'a [u8]) {
        self.words += 1;
        let h = hash_word(w);
        match self.table.find_mut(h, |e| e.0 == w) {
            Some(e) => e.2 += 1,
            None => {
                self.table.insert_unique(h, (w, h, 1), |e| e.1);
            }
        }
    }
}

/// The live counting table: sharded by hash, keys owned in per-shard arenas.
#[derive(Default)]
pub struct WordTable {
    shards: Vec<Shard>,
}

impl WordTable {
    pub fn new() -> Self {
        WordTable {
            shards: (0..SHARDS).map(|_| Shard::default()).collect(),
        }
    }

    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| s.table.len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Approximate heap memory in bytes.
    pub fn mem_bytes(&self) -> usize {
        self.shards.iter().map(Shard::mem_bytes).sum()
    }

    /// The count of `word` in the table.
    pub fn get(&self, word: &[u8]) -> u64 {
        let h = hash_word(word);
        self.shards[shard_of(h)].get(word, h)
    }

    /// Adds `count` to `word`.
    pub fn add(&mut self, word: &[u8], count: u64) {
        let h = hash_word(word);
        self.shards[shard_of(h)].add(word, h, count);
    }

    fn merge_locals(&mut self, locals: Vec<Local<'_>>) {
        if locals.len() == 1 && self.is_empty() && locals[0].table.len() < 4096 {
            for &(w, h, c) in locals[0].table.iter() {
                self.shards[shard_of(h)].add(w, h, c);
            }
            return;
        }
        // Partition each local table by shard (one block per table, in shard order, shard `s`
        // at `start[s]..start[s + 1]`), then fill the shards in parallel.
        type Parts<'a> = (BigVec<(&'a [u8], u64, u64), Big>, [usize; SHARDS + 1]);
        let parts: Vec<Parts> = locals
            .into_par_iter()
            .map(|l| {
                let mut start = [0usize; SHARDS + 1];
                for e in l.table.iter() {
                    start[shard_of(e.1) + 1] += 1;
                }
                for s in 0..SHARDS {
                    start[s + 1] += start[s];
                }
                let mut next = start;
                let mut v = BigVec::with_capacity_in(l.table.len(), Big);
                v.resize(l.table.len(), (&[][..], 0, 0));
                for &e in l.table.iter() {
                    let s = shard_of(e.1);
                    v[next[s]] = e;
                    next[s] += 1;
                }
                (v, start)
            })
            .collect();
        self.shards
            .par_iter_mut()
            .enumerate()
            .for_each(|(s, shard)| {
                for (v, start) in &parts {
                    for &(w, h, c) in &v[start[s]..start[s + 1]] {
                        shard.add(w, h, c);
                    }
                }
            });
    }

    /// Empties the table into sorted form (sorting on `pool`).
    pub fn drain_sorted(&mut self, pool: &rayon::ThreadPool) -> Sorted {
        let mut v: BigVec<(&[u8], u64), Big> = BigVec::with_capacity_in(self.len(), Big);
        for s in &self.shards {
            for slot in s.table.iter() {
                v.push((
                    &s.arena[slot.off as usize..slot.off as usize + slot.len as usize],
                    slot.count,
                ));
            }
        }
        let out = Sorted::from_pairs_in_place(&mut v, pool);
        drop(v);
        for s in &mut self.shards {
            *s = Shard::default();
        }
        out
    }
}

// ---------------------------------------------------------------------------------------------
// Splitting text into words.

/// How a text is cut into words: the split pattern, and the special tokens removed beforehand.
pub struct Splitter {
    pre: Pretokenizer,
    specials: Option<AhoCorasick>,
    /// Whether texts may be cut at [`is_safe_boundary`] points without changing the result.
    can_cut: bool,
}

impl Splitter {
    pub fn new(pattern: &str, specials: &[String]) -> Result<Self> {
        let pre = Pretokenizer::new(pattern)?;
        let nonempty: Vec<&String> = specials.iter().filter(|s| !s.is_empty()).collect();
        let specials_ac = if nonempty.is_empty() {
            None
        } else {
            Some(
                AhoCorasick::builder()
                    .match_kind(MatchKind::LeftmostLongest)
                    .build(&nonempty)
                    .map_err(|e| Error::Value(format!("special tokens: {e}")))?,
            )
        };
        let special_has_cut = nonempty.iter().any(|s| special_may_be_cut(s.as_bytes()));
        Ok(Splitter {
            can_cut: pre.is_native() && !special_has_cut,
            pre,
            specials: specials_ac,
        })
    }

    /// Whether documents may be cut at safe boundaries (built-in patterns only).
    pub fn can_cut(&self) -> bool {
        self.can_cut
    }

    /// Calls `f` with each word of `text`: special tokens are removed first (the text on either
    /// side is split separately, as the encoder does); valid UTF-8 runs are split with the
    /// pattern; each run of invalid bytes is one word of its own.
    pub fn split<'t>(&self, text: &'t [u8], f: &mut impl FnMut(&'t [u8])) -> Result<()> {
        match &self.specials {
            None => self.split_plain(text, f),
            Some(ac) => {
                let mut last = 0;
                for m in ac.find_iter(text) {
                    self.split_plain(&text[last..m.start()], f)?;
                    last = m.end();
                }
                self.split_plain(&text[last..], f)
            }
        }
    }

    fn split_plain<'t>(&self, text: &'t [u8], f: &mut impl FnMut(&'t [u8])) -> Result<()> {
        // Empty matches of a custom pattern are no words.
        if let Ok(s) = std::str::from_utf8(text) {
            return self.pre.split(s, |a, b| {
                if b > a {
                    f(&text[a..b])
                }
            });
        }
        for chunk in text.utf8_chunks() {
            let v = chunk.valid();
            self.pre.split(v, |a, b| {
                if b > a {
                    f(&v.as_bytes()[a..b])
                }
            })?;
            if !chunk.invalid().is_empty() {
                f(chunk.invalid());
            }
        }
        Ok(())
    }
}

/// The error for a count of `word` beyond 64 bits.
fn overflow(word: &[u8]) -> Error {
    Error::Value(format!(
        "the count of {:?} would pass 2**64 - 1",
        String::from_utf8_lossy(word)
    ))
}

/// Whether a text may be cut at a safe point strictly inside the special token `s`, wherever
/// the token stands. A cut at 1 depends on the byte before the token, so that byte is taken to
/// be a visible character (the case that allows the cut).
fn special_may_be_cut(s: &[u8]) -> bool {
    let padded = [b"!", s].concat();
    (2..padded.len()).any(|p| is_safe_boundary(&padded, p))
}

// ---------------------------------------------------------------------------------------------
// Spilled runs.

/// A sorted run on disk, removed when dropped.
///
/// Layout: the number of entries (8 bytes, little-endian), then for each entry, in increasing
/// byte order of the words: the length of the prefix shared with the previous word, the length
/// of the rest, the rest, and the count (varints).
struct Run {
    path: PathBuf,
}

impl Drop for Run {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// At most this many runs wait on disk: one more spill first merges them into one run, so that
/// settling never opens more files at once than this (the usual limit is 1024 per process).
const MAX_RUNS: usize = 64;

/// A read error of the spill file `path`, naming it; one that ends early is damage.
fn run_read_error(path: &Path, e: std::io::Error) -> Error {
    match e.kind() {
        std::io::ErrorKind::UnexpectedEof => damaged(path, "it ends early"),
        std::io::ErrorKind::InvalidData => damaged(path, &e.to_string()),
        _ => crate::input::io_at(path, e),
    }
}

/// The error for a spill file that does not read back as written.
fn damaged(path: &Path, what: &str) -> Error {
    Error::Io(std::io::Error::new(
        std::io::ErrorKind::InvalidData,
        format!(
            "{}: spilled word counts damaged ({what}); were the files in the spill directory changed?",
            path.display()
        ),
    ))
}

struct RunReader<'a> {
    r: BufReader<File>,
    run: &'a Run,
    left: u64,
    word: Vec<u8>,
    count: u64,
    /// Whether `word`/`count` hold an entry.
    has: bool,
}

fn read_varint(r: &mut impl Read) -> std::io::Result<u64> {
    let mut v = 0u64;
    let mut shift = 0;
    loop {
        let mut b = [0u8];
        r.read_exact(&mut b)?;
        v |= u64::from(b[0] & 0x7f) << shift;
        if b[0] < 0x80 {
            return Ok(v);
        }
        shift += 7;
        if shift >= 64 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                "bad varint",
            ));
        }
    }
}

impl<'a> RunReader<'a> {
    fn open(run: &'a Run) -> Result<Self> {
        let at = |e| run_read_error(&run.path, e);
        let mut r = BufReader::with_capacity(1 << 16, File::open(&run.path).map_err(at)?);
        let mut n = [0u8; 8];
        r.read_exact(&mut n).map_err(at)?;
        let mut rr = RunReader {
            r,
            run,
            left: u64::from_le_bytes(n),
            word: Vec::new(),
            count: 0,
            has: false,
        };
        rr.advance()?;
        Ok(rr)
    }

    /// Loads the next entry; `false` at the end.
    fn advance(&mut self) -> Result<bool> {
        if self.left == 0 {
            self.has = false;
            return Ok(false);
        }
        let first = !self.has;
        self.has = true;
        self.left -= 1;
        let path = &self.run.path;
        let at = |e| run_read_error(path, e);
        let shared = read_varint(&mut self.r).map_err(at)? as usize;
        let len = read_varint(&mut self.r).map_err(at)?;
        if shared > self.word.len() {
            return Err(damaged(path, "a shared prefix longer than the word before"));
        }
        let before = self.word.get(shared).copied();
        self.word.truncate(shared);
        // Read as it comes (not into a buffer of the stated length, which a damaged file could
        // make huge).
        let got = (&mut self.r)
            .take(len)
            .read_to_end(&mut self.word)
            .map_err(at)?;
        if got as u64 != len {
            return Err(damaged(path, "it ends early"));
        }
        let increasing = match (before, self.word.get(shared)) {
            (Some(b), Some(&a)) => a > b,
            (None, Some(_)) => true,
            (_, None) => first,
        };
        if !increasing {
            return Err(damaged(path, "words out of order"));
        }
        self.count = read_varint(&mut self.r).map_err(at)?;
        Ok(true)
    }
}

/// Writes a run entry by entry, adding up the counts of a word given twice in a row.
struct RunWriter {
    run: Run,
    w: BufWriter<File>,
    buf: Vec<u8>,
    /// The last word given and its count so far (written when the next word comes).
    word: Vec<u8>,
    count: Option<u64>,
    /// The word written last, for the shared prefix.
    prev: Vec<u8>,
    entries: u64,
}

impl RunWriter {
    fn create(dir: &Path, seq: usize) -> Result<Self> {
        static UNIQUE: AtomicUsize = AtomicUsize::new(0);
        let u = UNIQUE.fetch_add(1, Ordering::Relaxed);
        let path = dir.join(format!(
            "bytepair-spill-{}-{u}-{seq}.run",
            std::process::id()
        ));
        let f = File::create(&path).map_err(|e| crate::input::io_at(&path, e))?;
        Ok(RunWriter {
            run: Run { path },
            w: BufWriter::with_capacity(1 << 20, f),
            buf: vec![0; 8], // the entry count, filled in by `finish`
            word: Vec::new(),
            count: None,
            prev: Vec::new(),
            entries: 0,
        })
    }

    fn push(&mut self, word: &[u8], count: u64) -> Result<()> {
        if let Some(c) = self.count {
            if word == &self.word[..] {
                self.count = Some(c.saturating_add(count));
                return Ok(());
            }
            self.write_pending()?;
        }
        self.word.clear();
        self.word.extend_from_slice(word);
        self.count = Some(count);
        Ok(())
    }

    fn write_pending(&mut self) -> Result<()> {
        let Some(c) = self.count.take() else {
            return Ok(());
        };
        let (prev, word) = (&self.prev, &self.word);
        let shared = prev.iter().zip(word).take_while(|(a, b)| a == b).count();
        put_varint(&mut self.buf, shared as u64);
        put_varint(&mut self.buf, (word.len() - shared) as u64);
        self.buf.extend_from_slice(&word[shared..]);
        put_varint(&mut self.buf, c);
        std::mem::swap(&mut self.prev, &mut self.word);
        self.entries += 1;
        if self.buf.len() > (1 << 20) {
            self.w
                .write_all(&self.buf)
                .map_err(|e| crate::input::io_at(&self.run.path, e))?;
            self.buf.clear();
        }
        Ok(())
    }

    /// Writes what is left and the entry count. On any error the file is removed.
    fn finish(mut self) -> Result<Run> {
        use std::io::{Seek, SeekFrom};
        self.write_pending()?;
        let at = |e| crate::input::io_at(&self.run.path, e);
        self.w.write_all(&self.buf).map_err(at)?;
        self.w.seek(SeekFrom::Start(0)).map_err(at)?;
        self.w.write_all(&self.entries.to_le_bytes()).map_err(at)?;
        self.w.flush().map_err(at)?;
        Ok(self.run)
    }
}

fn write_run(dir: &Path, seq: usize, sorted: &Sorted) -> Result<Run> {
    let mut w = RunWriter::create(dir, seq)?;
    for (word, c) in sorted.iter() {
        w.push(word, c)?;
    }
    w.finish()
}

/// Merges sorted runs and one in-memory sorted set, in word order, into `out` (equal words come
/// out one after another).
fn merge_runs(
    mem: &Sorted,
    runs: &[Run],
    out: &mut dyn FnMut(&[u8], u64) -> Result<()>,
) -> Result<()> {
    #[derive(PartialEq, Eq)]
    struct Head(Vec<u8>, usize);
    impl Ord for Head {
        fn cmp(&self, o: &Self) -> CmpOrdering {
            o.0.cmp(&self.0).then(o.1.cmp(&self.1))
        }
    }
    impl PartialOrd for Head {
        fn partial_cmp(&self, o: &Self) -> Option<CmpOrdering> {
            Some(self.cmp(o))
        }
    }
    let mut readers: Vec<RunReader<'_>> = Vec::with_capacity(runs.len());
    for r in runs {
        readers.push(RunReader::open(r)?);
    }
    let mut heap = BinaryHeap::new();
    for (i, r) in readers.iter().enumerate() {
        if r.has {
            heap.push(Head(r.word.clone(), i));
        }
    }
    let mut mi = 0;
    loop {
        // The smaller of the in-memory head and the heap head goes next.
        let take_mem = match (mi < mem.len(), heap.peek()) {
            (false, None) => break,
            (true, None) => true,
            (false, Some(_)) => false,
            (true, Some(h)) => mem.word(mi) <= &h.0[..],
        };
        if take_mem {
            out(mem.word(mi), mem.count(mi))?;
            mi += 1;
        } else {
            let Head(w, i) = heap.pop().expect("peeked");
            out(&w, readers[i].count)?;
            if readers[i].advance()? {
                heap.push(Head(readers[i].word.clone(), i));
            }
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// The counter.

/// Tuning of the counting phase.
#[derive(Clone, Debug)]
pub struct CountOptions {
    /// Worker threads (0: one per core).
    pub num_threads: usize,
    /// Documents longer than this are cut at safe boundaries into parts of about this size, so
    /// that one long document is split by several threads (built-in patterns only).
    pub unit_bytes: usize,
    /// Spill sorted runs to disk when the table exceeds this many bytes.
    pub max_memory: Option<usize>,
    /// Where spilled runs go (default: the system temporary directory).
    pub spill_dir: Option<PathBuf>,
}

impl Default for CountOptions {
    fn default() -> Self {
        CountOptions {
            num_threads: 0,
            unit_bytes: 1 << 20,
            max_memory: None,
            spill_dir: None,
        }
    }
}

/// Word counts of a corpus under one split pattern and set of special tokens: the result of
/// phase 1, mergeable and serialisable.
pub struct WordCounts {
    pattern: String,
    specials: Vec<String>,
    splitter: Splitter,
    /// The settled part, sorted.
    sorted: Sorted,
    /// Counts since the last [`WordCounts::sorted`].
    table: WordTable,
    runs: Vec<Run>,
    spill_seq: usize,
    /// The largest count in `runs` (0 without runs): what a word's spilled part can add.
    spilled_max: u64,
    /// At least the count of every word (settled, in the table and spilled together): while a
    /// batch's number of words added to it fits in 64 bits, no count of the batch can overflow,
    /// and the batch needs no check per word.
    bound: u64,
    pub options: CountOptions,
}

impl std::fmt::Debug for WordCounts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WordCounts")
            .field("pattern", &self.pattern)
            .field("specials", &self.specials)
            .finish()
    }
}

impl WordCounts {
    /// Empty counts for a split pattern (a regex; resolve names with
    /// [`crate::pretokenize::builtin_pattern`] first) and special tokens.
    pub fn new(pattern: &str, specials: Vec<String>) -> Result<Self> {
        let splitter = Splitter::new(pattern, &specials)?;
        Ok(WordCounts {
            pattern: pattern.to_string(),
            specials,
            splitter,
            sorted: Sorted::default(),
            table: WordTable::new(),
            runs: Vec::new(),
            spill_seq: 0,
            spilled_max: 0,
            bound: 0,
            options: CountOptions::default(),
        })
    }

    pub fn pattern(&self) -> &str {
        &self.pattern
    }

    pub fn specials(&self) -> &[String] {
        &self.specials
    }

    pub fn splitter(&self) -> &Splitter {
        &self.splitter
    }

    /// Adds `count` occurrences of one word. A count that would pass 2**64 - 1 is an error.
    ///
    /// The check is exact from the settled counts and the table (a lookup in each). Counts
    /// spilled to disk (`max_memory`) are folded in first only when the largest spilled count
    /// could make this one overflow.
    pub fn add(&mut self, word: &[u8], count: u64) -> Result<()> {
        let here = |wc: &Self| wc.sorted.get(word).checked_add(wc.table.get(word));
        let fits = |now: Option<u64>, more: u64| {
            now.and_then(|n| n.checked_add(more))
                .and_then(|n| n.checked_add(count))
                .is_some()
        };
        let mut now = here(self);
        if !self.runs.is_empty() && !fits(now, self.spilled_max) {
            self.sorted()?;
            now = here(self);
        }
        if !fits(now, 0) {
            return Err(overflow(word));
        }
        if count > 0 {
            // `fits` held with the spilled part's bound or without runs, so this cannot wrap.
            let spilled = if self.runs.is_empty() {
                0
            } else {
                self.spilled_max
            };
            let total = now
                .unwrap_or(u64::MAX)
                .saturating_add(spilled)
                .saturating_add(count);
            self.bound = self.bound.max(total);
            self.table.add(word, count);
            self.maybe_spill()?;
        }
        Ok(())
    }

    /// Counts the words of a batch of documents, in parallel. A count that would pass
    /// 2**64 - 1 is an error, and then nothing of the batch is counted.
    pub fn count_documents<D: AsRef<[u8]> + Sync>(&mut self, docs: &[D]) -> Result<()> {
        if docs.is_empty() {
            return Ok(());
        }
        // Work units: whole documents, long ones cut at safe boundaries.
        let unit = self.options.unit_bytes.max(1 << 12);
        let mut units: Vec<&[u8]> = Vec::with_capacity(docs.len());
        for d in docs {
            let t = d.as_ref();
            if t.len() > 2 * unit && self.splitter.can_cut {
                let mut s = 0;
                while let Some(c) = crate::input::safe_boundary(t, s + unit) {
                    units.push(&t[s..c]);
                    s = c;
                }
                units.push(&t[s..]);
            } else if !t.is_empty() {
                units.push(t);
            }
        }
        let pool = crate::parallel::pool_for(self.options.num_threads);
        let threads = pool.current_num_threads().min(units.len()).max(1);
        let splitter = &self.splitter;
        let next = AtomicUsize::new(0);
        let results: Mutex<Vec<Result<Local>>> = Mutex::new(Vec::new());
        let work = || {
            let mut local = Local::new();
            let mut r = Ok(());
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= units.len() {
                    break;
                }
                if let Err(e) = splitter.split(units[i], &mut |w| local.add(w)) {
                    r = Err(e);
                    next.store(units.len(), Ordering::Relaxed);
                    break;
                }
            }
            results
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(r.map(|_| local));
        };
        // The calling thread counts too, with its interrupt poll (Ctrl-C, or a stop passed down
        // from a pipeline); the helpers get a stop from it, so one long document that cannot be
        // cut (a custom pattern) does not hold up an interrupt.
        crate::parallel::with_helpers(&pool, threads - 1, &work);
        let locals = results
            .into_inner()
            .unwrap_or_else(|e| e.into_inner())
            .into_iter()
            .collect::<Result<Vec<_>>>()?;
        let words: u64 = locals.iter().map(|l| l.words).sum();
        match self.bound.checked_add(words) {
            Some(bound) => {
                pool.install(|| self.table.merge_locals(locals));
                self.bound = bound;
            }
            // Only with counts near 2**64 (given to `add`): checked word by word.
            None => self.merge_locals_checked(&locals)?,
        }
        self.maybe_spill()
    }

    /// Adds a batch's counts if no word's count would pass 2**64 - 1; otherwise an error, and
    /// the counts are as they were (settled).
    fn merge_locals_checked(&mut self, locals: &[Local<'_>]) -> Result<()> {
        self.sorted()?;
        // Within the batch, counts add up to at most its number of words, which fits.
        let batch = Sorted::from_pairs(
            locals
                .iter()
                .flat_map(|l| l.table.iter().map(|&(w, _, c)| (w, c)))
                .collect(),
        );
        if let Some(w) = self.sorted.overflow_with(&batch) {
            return Err(overflow(w));
        }
        self.sorted = Sorted::merged(&self.sorted, &batch);
        self.bound = self.sorted.max_count();
        Ok(())
    }

    /// The thread pool of these counts' `num_threads`.
    fn pool(&self) -> std::sync::Arc<rayon::ThreadPool> {
        crate::parallel::pool_for(self.options.num_threads)
    }

    fn maybe_spill(&mut self) -> Result<()> {
        let Some(limit) = self.options.max_memory else {
            return Ok(());
        };
        if self.table.mem_bytes()
            + self.sorted.bytes.capacity()
            + self.sorted.counts.capacity() * 16
            <= limit
        {
            return Ok(());
        }
        let dir = self
            .options
            .spill_dir
            .clone()
            .unwrap_or_else(std::env::temp_dir);
        let mut s = self.table.drain_sorted(&self.pool());
        if !self.sorted.is_empty() {
            s = Sorted::merged(&std::mem::take(&mut self.sorted), &s);
        }
        super::release_memory();
        // On a failure to write (a full disk, a missing directory) the counts stay in memory, as
        // they were: nothing counted is lost.
        if self.runs.len() >= MAX_RUNS {
            self.spill_seq += 1;
            let merged = (|| {
                let mut w = RunWriter::create(&dir, self.spill_seq)?;
                merge_runs(&Sorted::default(), &self.runs, &mut |word, c| {
                    w.push(word, c)
                })?;
                w.finish()
            })();
            match merged {
                Ok(run) => self.runs = vec![run],
                Err(e) => {
                    self.sorted = s;
                    return Err(e);
                }
            }
        }
        self.spill_seq += 1;
        match write_run(&dir, self.spill_seq, &s) {
            Ok(run) => {
                let max = s.counts.iter().copied().max().unwrap_or(0);
                self.spilled_max = self.spilled_max.saturating_add(max);
                self.runs.push(run);
                Ok(())
            }
            Err(e) => {
                self.sorted = s;
                Err(e)
            }
        }
    }

    /// Number of spilled runs waiting to be merged.
    pub fn spilled_runs(&self) -> usize {
        self.runs.len()
    }

    /// Settles everything counted so far and returns the sorted counts.
    pub fn sorted(&mut self) -> Result<&Sorted> {
        if !self.table.is_empty() || !self.runs.is_empty() {
            let fresh = self.table.drain_sorted(&self.pool());
            let base = std::mem::take(&mut self.sorted);
            let mut s = if base.is_empty() {
                fresh
            } else {
                Sorted::merged(&base, &fresh)
            };
            if !self.runs.is_empty() {
                let mut all = Sorted::default();
                let merged = merge_runs(&s, &self.runs, &mut |word, c| {
                    all.push(word, c);
                    Ok(())
                });
                if let Err(e) = merged {
                    // The runs stay, and the rest is settled in memory: nothing is lost, and
                    // the next call meets the same error.
                    self.sorted = s;
                    return Err(e);
                }
                s = all;
                self.runs.clear();
                self.spilled_max = 0;
            }
            self.sorted = s.without_zeros();
            self.bound = self.sorted.max_count();
            super::release_memory();
        }
        Ok(&self.sorted)
    }

    /// Settles and takes the sorted counts out, leaving these counts empty.
    pub fn take_sorted(&mut self) -> Result<Sorted> {
        self.sorted()?;
        self.bound = 0;
        Ok(std::mem::take(&mut self.sorted))
    }

    fn check_compatible(&self, other: &WordCounts) -> Result<()> {
        if self.pattern != other.pattern || self.specials != other.specials {
            return Err(Error::Value(
                "cannot merge WordCounts counted with different patterns or special tokens".into(),
            ));
        }
        Ok(())
    }

    /// Adds the counts of `other` (same pattern and special tokens).
    pub fn merge(&mut self, other: &mut WordCounts) -> Result<()> {
        self.check_compatible(other)?;
        self.sorted()?;
        let b = other.sorted()?;
        if let Some(w) = self.sorted.overflow_with(b) {
            return Err(overflow(w));
        }
        self.sorted = Sorted::merged(&self.sorted, b);
        self.bound = self.sorted.max_count();
        Ok(())
    }

    /// A copy with the same pattern, specials and counts.
    pub fn try_clone(&mut self) -> Result<WordCounts> {
        let s = self.sorted()?.clone();
        let mut c = WordCounts::new(&self.pattern, self.specials.clone())?;
        c.bound = s.max_count();
        c.sorted = s;
        c.options = self.options.clone();
        Ok(c)
    }

    /// Serialises pattern, specials and counts into a compact blob (see [`WordCounts::from_bytes`]).
    pub fn to_bytes(&mut self) -> Result<Vec<u8>> {
        let mut out = Vec::new();
        out.extend_from_slice(MAGIC);
        put_varint(&mut out, self.pattern.len() as u64);
        out.extend_from_slice(self.pattern.as_bytes());
        put_varint(&mut out, self.specials.len() as u64);
        for s in &self.specials {
            put_varint(&mut out, s.len() as u64);
            out.extend_from_slice(s.as_bytes());
        }
        let s = self.sorted()?;
        out.reserve(s.total_bytes() / 2 + s.len() * 3 + 4);
        s.write_entries(&mut out);
        let crc = crc32fast::hash(&out);
        out.extend_from_slice(&crc.to_le_bytes());
        Ok(out)
    }

    /// Reads a blob written by [`WordCounts::to_bytes`] (or by a version before the CRC).
    pub fn from_bytes(data: &[u8]) -> Result<Self> {
        let data = if data.starts_with(MAGIC) {
            // The blob ends with the CRC-32 of everything before it.
            let Some(body_len) = data.len().checked_sub(4) else {
                return Err(Error::Value(
                    "not a bytepair WordCounts file (too short)".into(),
                ));
            };
            let (body, crc) = data.split_at(body_len);
            if crc32fast::hash(body).to_le_bytes() != crc {
                return Err(Error::Value(
                    "the WordCounts file is corrupted (its CRC-32 does not match its contents)"
                        .into(),
                ));
            }
            body
        } else {
            data
        };
        let mut r = Cursor::new(data);
        let magic = r.take(MAGIC.len()).ok();
        if magic != Some(MAGIC) && magic != Some(MAGIC_V1) {
            return Err(Error::Value(
                "not a bytepair WordCounts file (bad magic)".into(),
            ));
        }
        let str_at = |r: &mut Cursor| -> Result<String> {
            let n = r.varint()? as usize;
            let b = r.take(n)?;
            String::from_utf8(b.to_vec()).map_err(|_| r.bad("string is not UTF-8"))
        };
        let pattern = str_at(&mut r)?;
        let n = r.varint()? as usize;
        let mut specials = Vec::with_capacity(n.min(1024));
        for _ in 0..n {
            specials.push(str_at(&mut r)?);
        }
        let sorted = Sorted::read_entries(&mut r)?;
        if !r.at_end() {
            return Err(r.bad("trailing data"));
        }
        // What counting never writes (the checks of the Python constructor, and words): a blob
        // made by hand gets the same errors as the arguments would.
        let bad = |what: String| Error::Value(format!("invalid WordCounts data: {what}"));
        if pattern.is_empty() {
            return Err(bad("an empty pattern".into()));
        }
        for (i, sp) in specials.iter().enumerate() {
            if sp.len() < 2 {
                return Err(bad(format!(
                    "special token {sp:?} is shorter than two bytes"
                )));
            }
            if specials[..i].contains(sp) {
                return Err(bad(format!("duplicate special token {sp:?}")));
            }
        }
        if let Some((w, c)) = sorted.iter().find(|(w, c)| w.is_empty() || *c == 0) {
            return Err(bad(format!(
                "the word {:?} with count {c}",
                String::from_utf8_lossy(w)
            )));
        }
        let mut c = WordCounts::new(&pattern, specials)?;
        c.bound = sorted.max_count();
        c.sorted = sorted;
        Ok(c)
    }
}

/// Version 2: followed by a closing CRC-32 of the blob.
const MAGIC: &[u8] = b"BPWC\x02";
/// Version 1 (no CRC), still read.
const MAGIC_V1: &[u8] = b"BPWC\x01";

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pretokenize::CL100K_PATTERN;

    fn counts_of(c: &mut WordCounts) -> Vec<(Vec<u8>, u64)> {
        c.sorted()
            .unwrap()
            .iter()
            .map(|(w, n)| (w.to_vec(), n))
            .collect()
    }

    #[test]
    fn counts_words_and_strips_specials() {
        let mut c = WordCounts::new(CL100K_PATTERN, vec!["<|eot|>".into()]).unwrap();
        c.count_documents(&["hello world<|eot|>hello", "world"])
            .unwrap();
        assert_eq!(
            counts_of(&mut c),
            vec![
                (b" world".to_vec(), 1),
                (b"hello".to_vec(), 2),
                (b"world".to_vec(), 1)
            ]
        );
    }

    #[test]
    fn a_batch_that_would_pass_64_bits_is_refused_whole() {
        let pattern = crate::pretokenize::builtin_pattern("cl100k_base").unwrap();
        let mut c = WordCounts::new(pattern, vec![]).unwrap();
        c.add(b" x", u64::MAX - 2).unwrap();
        // Past the bound but exact: other words, and " x" up to the largest count.
        c.count_documents(&[" y y y x", " x"]).unwrap();
        assert_eq!(
            counts_of(&mut c),
            vec![(b" x".to_vec(), u64::MAX), (b" y".to_vec(), 3)]
        );
        let err = c.count_documents(&[" z x"]).unwrap_err();
        assert!(err.to_string().contains("2**64 - 1"), "{err}");
        assert_eq!(
            counts_of(&mut c),
            vec![(b" x".to_vec(), u64::MAX), (b" y".to_vec(), 3)]
        );
        // Counts that stay far from the limit take the unchecked path and still add up.
        let mut d = WordCounts::new(pattern, vec![]).unwrap();
        d.add(b" y", 5).unwrap();
        d.count_documents(&[" y y"]).unwrap();
        assert_eq!(counts_of(&mut d), vec![(b" y".to_vec(), 7)]);
    }

    #[test]
    fn invalid_utf8_counts_bytes() {
        let mut c = WordCounts::new(CL100K_PATTERN, vec![]).unwrap();
        c.count_documents(&[&b"ab\xffcd \xe2\x82"[..]]).unwrap();
        let v = counts_of(&mut c);
        let words: Vec<&[u8]> = v.iter().map(|p| &p.0[..]).collect();
        assert_eq!(words, [&b" "[..], b"ab", b"cd", b"\xe2\x82", b"\xff"]);
    }

    #[test]
    fn same_result_for_threads_units_order_and_spill() {
        let mut docs = Vec::new();
        for i in 0..3000 {
            docs.push(format!(
                "Doc {i}: the quick brown fox {} jumps.\nOver {} lazy dogs\n",
                i % 17,
                i * 7 % 13
            ));
        }
        let big = docs.concat();
        let mut reference = WordCounts::new(CL100K_PATTERN, vec![]).unwrap();
        for d in &docs {
            reference.count_documents(std::slice::from_ref(d)).unwrap();
        }
        let want = counts_of(&mut reference);
        for threads in [1, 2, 3] {
            for unit in [1usize << 12, 1 << 20] {
                let mut c = WordCounts::new(CL100K_PATTERN, vec![]).unwrap();
                c.options = CountOptions {
                    num_threads: threads,
                    unit_bytes: unit,
                    ..Default::default()
                };
                c.count_documents(&docs).unwrap();
                assert_eq!(counts_of(&mut c), want);
            }
        }
        // Spilling after every batch, reversed order.
        let dir = std::env::temp_dir();
        let mut c = WordCounts::new(CL100K_PATTERN, vec![]).unwrap();
        c.options.max_memory = Some(1);
        c.options.spill_dir = Some(dir);
        for chunk in docs.chunks(100).rev() {
            c.count_documents(chunk).unwrap();
        }
        assert!(c.spilled_runs() > 10);
        assert_eq!(counts_of(&mut c), want);
        // Serialisation round trip and merging.
        let blob = c.to_bytes().unwrap();
        let mut back = WordCounts::from_bytes(&blob).unwrap();
        assert_eq!(counts_of(&mut back), want);
        assert!(WordCounts::from_bytes(&blob[..blob.len() - 1]).is_err());
        // A changed byte anywhere (counts included) is caught by the closing CRC-32.
        for at in [6, blob.len() / 2, blob.len() - 6, blob.len() - 1] {
            let mut bad = blob.clone();
            bad[at] ^= 0x04;
            match WordCounts::from_bytes(&bad) {
                Err(Error::Value(m)) => assert!(m.contains("corrupted"), "{m}"),
                Err(e) => panic!("byte {at}: {e}"),
                Ok(_) => panic!("byte {at}: accepted"),
            }
        }
        // A version-1 blob (no CRC) still reads.
        let mut v1 = blob[..blob.len() - 4].to_vec();
        v1[..MAGIC_V1.len()].copy_from_slice(MAGIC_V1);
        assert_eq!(counts_of(&mut WordCounts::from_bytes(&v1).unwrap()), want);
        let mut half1 = WordCounts::new(CL100K_PATTERN, vec![]).unwrap();
        half1.count_documents(&docs[..1000]).unwrap();
        let mut half2 = WordCounts::new(CL100K_PATTERN, vec![]).unwrap();
        half2.count_documents(&docs[1000..]).unwrap();
        half1.merge(&mut half2).unwrap();
        assert_eq!(counts_of(&mut half1), want);
        // One long document cut at safe boundaries gives the counts of the whole.
        let mut whole = WordCounts::new(CL100K_PATTERN, vec![]).unwrap();
        whole.options.unit_bytes = 1 << 40;
        whole.count_documents(&[&big]).unwrap();
        let mut cut = WordCounts::new(CL100K_PATTERN, vec![]).unwrap();
        cut.options.unit_bytes = 1 << 12;
        cut.count_documents(&[&big]).unwrap();
        assert_eq!(counts_of(&mut whole), counts_of(&mut cut));
    }

    #[test]
    fn special_tokens_are_never_cut() {
        // A special token that starts with a newline and a letter may follow a visible character,
        // which makes a safe cut point right inside it: such texts must not be cut.
        for special in ["\nEND", "<x>\nEND", "a\nb"] {
            let mut text = "word word, word.\n ".repeat(2000);
            text.push_str(&format!("x{special} tail"));
            text.push_str(&" more text here.\n".repeat(2000));
            let count = |unit: usize| {
                let mut c = WordCounts::new(CL100K_PATTERN, vec![special.into()]).unwrap();
                c.options.unit_bytes = unit;
                c.count_documents(&[&text]).unwrap();
                counts_of(&mut c)
            };
            let whole = count(1 << 40);
            assert!(
                !whole.iter().any(|(w, _)| w == b"END" || w == b"b"),
                "{special:?}"
            );
            for unit in [1 << 12, text.find(special).unwrap() - 4096 + 2] {
                assert_eq!(count(unit), whole, "{special:?} cut from {unit}");
            }
        }
    }
}
