//! Phase 2 of training: the merge loop.
//!
//! Why it is built this way: the words are distinct (phase 1 counted them), so each is stored
//! once, as byte ids in one flat array, with its count. Each pair of adjacent symbols has a
//! 64-bit count and the list of the words it occurs in, and a max-heap orders the pairs by
//! (count, smallest pair first). A merge visits only the words in its pair's list, rewrites
//! them in place and turns what changed into count deltas. Counts only ever go down, except for
//! pairs that contain the new token, which are created (with their full word lists) by the
//! merge that creates it; so the heap can be revalidated lazily: an entry whose stored count is
//! stale is pushed back with the current count when it reaches the top, and the entry accepted
//! is always the true maximum, ties going to the smallest (left, right). Word lists are sorted
//! and duplicate-free, so the expensive early merges can split them across threads: the words
//! touched are disjoint, and per-thread deltas are summed in a fixed order.
use std::collections::BinaryHeap;
use std::time::Instant;

use rayon::prelude::*;
use rustc_hash::FxHashMap;

use super::count::Sorted;
use super::Progress;
use crate::error::{Error, Result};

/// Options of the merge loop.
#[derive(Clone, Debug)]
pub struct MergeOptions {
    /// The number of merges to learn (fewer if the pairs run out first).
    pub num_merges: usize,
    /// Stop when the most frequent pair occurs fewer times than this.
    pub min_frequency: u64,
    /// Never create a token longer than this many bytes.
    pub max_token_length: Option<usize>,
    /// Worker threads (0: one per core).
    pub num_threads: usize,
}

impl Default for MergeOptions {
    fn default() -> Self {
        MergeOptions {
            num_merges: 0,
            min_frequency: 1,
            max_token_length: None,
            num_threads: 0,
        }
    }
}

/// The learned merges, in order: merge `i` makes token `256 + i` from `pairs[i]`, a pair that
/// occurred `counts[i]` times when it was chosen.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Merges {
    pub pairs: Vec<(u32, u32)>,
    pub counts: Vec<u64>,
}

impl Merges {
    /// The bytes of every token: 256 single bytes, then one per merge.
    pub fn token_bytes(&self) -> Vec<Vec<u8>> {
        let mut t: Vec<Vec<u8>> = (0..=255u8).map(|b| vec![b]).collect();
        for &(a, b) in &self.pairs {
            let mut v = t[a as usize].clone();
            v.extend_from_slice(&t[b as usize]);
            t.push(v);
        }
        t
    }
}

#[inline(always)]
fn pk(a: u32, b: u32) -> u64 {
    (u64::from(a) << 32) | u64::from(b)
}

#[inline(always)]
fn unpk(k: u64) -> (u32, u32) {
    ((k >> 32) as u32, k as u32)
}

/// A heap entry: count in the high half, the bitwise-not of the pair in the low half, so that
/// the max-heap yields the highest count and, among equal counts, the smallest pair.
#[inline(always)]
fn entry(count: u64, pair: u64) -> u128 {
    (u128::from(count) << 64) | u128::from(!pair)
}

/// A symbol id as stored in the word array: `u16` when every id fits (half the memory), else
/// `u32`.
trait Sym: Copy + Eq + Send + Sync + 'static {
    fn from_u32(v: u32) -> Self;
    fn get(self) -> u32;
}

impl Sym for u16 {
    #[inline(always)]
    fn from_u32(v: u32) -> Self {
        v as u16
    }
    #[inline(always)]
    fn get(self) -> u32 {
        u32::from(self)
    }
}

impl Sym for u32 {
    #[inline(always)]
    fn from_u32(v: u32) -> Self {
        v
    }
    #[inline(always)]
    fn get(self) -> u32 {
        self
    }
}

/// Words with two or more symbols, in one flat array.
struct Words<S> {
    sym: Vec<S>,
    start: Vec<usize>,
    len: Vec<u32>,
    count: Vec<u64>,
}

/// Raw access for the parallel merge: each word index occurs once per word list, so tasks that
/// work on different parts of one list never touch the same word.
struct WordsPtr<S> {
    sym: *mut S,
    len: *mut u32,
}
unsafe impl<S> Sync for WordsPtr<S> {}
unsafe impl<S> Send for WordsPtr<S> {}

/// A pointer for parallel writes to disjoint slots.
struct SyncMut<T>(*mut T);
unsafe impl<T> Sync for SyncMut<T> {}

/// What one merge changes: pair count deltas and the words of the new pairs.
#[derive(Default)]
struct Acc {
    delta: FxHashMap<u64, i64>,
    /// `(new pair, word)` for each word that now holds a pair with the new token.
    new_occ: Vec<(u64, u32)>,
    removed: i64,
    scratch: Vec<u64>,
}

impl Acc {
    /// Sums `other` (from a later part of the word list) into `self`.
    fn absorb(&mut self, other: Acc) {
        self.removed += other.removed;
        for (k, d) in other.delta {
            *self.delta.entry(k).or_default() += d;
        }
        self.new_occ.extend_from_slice(&other.new_occ);
    }
}

/// Merges every non-overlapping `a b` (left to right) in word `w` into `x`.
///
/// # Safety
/// `w` must be a valid word index not being merged by another thread at the same time.
#[inline]
unsafe fn merge_word<S: Sym>(
    p: &WordsPtr<S>,
    start: &[usize],
    counts: &[u64],
    w: u32,
    a: u32,
    b: u32,
    x: u32,
    acc: &mut Acc,
) {
    let w = w as usize;
    let n = *p.len.add(w) as usize;
    let s = std::slice::from_raw_parts_mut(p.sym.add(start[w]), n);
    let c = counts[w] as i64;
    let (sa, sb, sx) = (S::from_u32(a), S::from_u32(b), S::from_u32(x));
    let Some(first) = s.windows(2).position(|q| q[0] == sa && q[1] == sb) else {
        return;
    };
    acc.scratch.clear();
    let mut out = first;
    let mut i = first;
    while i < n {
        if i + 1 < n && s[i] == sa && s[i + 1] == sb {
            if out > 0 {
                let l = s[out - 1].get();
                *acc.delta.entry(pk(l, a)).or_default() -= c;
                *acc.delta.entry(pk(l, x)).or_default() += c;
                acc.scratch.push(pk(l, x));
            }
            acc.removed += c;
            if i + 2 < n {
                let r = s[i + 2].get();
                *acc.delta.entry(pk(b, r)).or_default() -= c;
                *acc.delta.entry(pk(x, r)).or_default() += c;
                acc.scratch.push(pk(x, r));
            }
            s[out] = sx;
            out += 1;
            i += 2;
        } else {
            s[out] = s[i];
            out += 1;
            i += 1;
        }
    }
    *p.len.add(w) = out as u32;
    match acc.scratch.len() {
        0 | 1 => {}
        2 => {
            if acc.scratch[0] == acc.scratch[1] {
                acc.scratch.pop();
            }
        }
        _ => {
            acc.scratch.sort_unstable();
            acc.scratch.dedup();
        }
    }
    for &k in &acc.scratch {
        acc.new_occ.push((k, w as u32));
    }
}

/// A hash map split in 16 by key, so that growing it never holds two copies of all of it.
struct ShardedMap {
    shards: Vec<FxHashMap<u64, PairData>>,
}

impl Default for ShardedMap {
    fn default() -> Self {
        ShardedMap {
            shards: (0..16).map(|_| FxHashMap::default()).collect(),
        }
    }
}

impl ShardedMap {
    #[inline(always)]
    fn shard(k: u64) -> usize {
        (k.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 60) as usize
    }
    #[inline]
    fn get(&self, k: &u64) -> Option<&PairData> {
        self.shards[Self::shard(*k)].get(k)
    }
    #[inline]
    fn get_mut(&mut self, k: &u64) -> Option<&mut PairData> {
        self.shards[Self::shard(*k)].get_mut(k)
    }
    #[inline]
    fn contains_key(&self, k: &u64) -> bool {
        self.shards[Self::shard(*k)].contains_key(k)
    }
    fn insert(&mut self, k: u64, v: PairData) {
        self.shards[Self::shard(k)].insert(k, v);
    }
    fn remove(&mut self, k: &u64) -> Option<PairData> {
        self.shards[Self::shard(*k)].remove(k)
    }
    fn len(&self) -> usize {
        self.shards.iter().map(|m| m.len()).sum()
    }
    fn iter(&self) -> impl Iterator<Item = (&u64, &PairData)> {
        self.shards.iter().flat_map(|m| m.iter())
    }
}

/// One pair's current count and word list `arena[off..off + len]` (sorted, duplicate-free;
/// written once, when the pair appears).
struct PairData {
    count: u64,
    off: u32,
    len: u32,
}

/// The live pairs, by key `(left << 32) | right`. Word lists live in one arena (no allocation
/// per pair); lists of pairs that were merged or died are dropped by compacting the arena when
/// they are most of it. A pair whose count reaches zero never comes back (only pairs with the
/// newest token gain counts), so it is removed.
#[derive(Default)]
struct PairTable {
    map: ShardedMap,
    arena: Vec<u32>,
    dead: usize,
}

impl PairTable {
    /// Registers a pair whose list is `arena[off..]`.
    fn insert(&mut self, key: u64, count: u64, off: usize) {
        let len = (self.arena.len() - off) as u32;
        self.map.insert(
            key,
            PairData {
                count,
                off: off as u32,
                len,
            },
        );
    }

    fn list(&self, p: &PairData) -> &[u32] {
        &self.arena[p.off as usize..p.off as usize + p.len as usize]
    }

    /// Removes a pair that was merged or no longer occurs.
    fn remove(&mut self, key: u64) {
        if let Some(p) = self.map.remove(&key) {
            self.dead += p.len as usize;
        }
    }

    /// Drops the lists of removed pairs once they are most of the arena, moving the live lists
    /// down in place (in offset order), so no second arena is needed.
    fn maybe_compact(&mut self) {
        if self.dead < (1 << 16) || self.dead * 2 < self.arena.len() {
            return;
        }
        let mut live: Vec<(u32, u64)> = self
            .map
            .iter()
            .filter(|(_, p)| p.len > 0)
            .map(|(&k, p)| (p.off, k))
            .collect();
        live.sort_unstable();
        let mut to = 0usize;
        for (off, k) in live {
            let p = self.map.get_mut(&k).expect("live pair");
            let (from, n) = (off as usize, p.len as usize);
            self.arena.copy_within(from..from + n, to);
            p.off = to as u32;
            to += n;
        }
        self.arena.truncate(to);
        self.arena.shrink_to(to + to / 4);
        self.dead = 0;
    }
}

/// Word lists shorter than this are merged on one thread.
const PAR_MIN_WORDS: usize = 4096;

/// Learns merges from word counts: the pair with the highest count first, ties to the smallest
/// (left id, right id), byte ids equal to byte values.
pub fn learn(
    words: &Sorted,
    opts: &MergeOptions,
    progress: &mut dyn FnMut(Progress) -> Result<()>,
) -> Result<Merges> {
    let pool = crate::parallel::pool_for(opts.num_threads);
    if small_ids(opts) {
        learn_in_pool(&pool, build_words::<u16>(words)?, opts, progress)
    } else {
        learn_in_pool(&pool, build_words::<u32>(words)?, opts, progress)
    }
}

fn small_ids(opts: &MergeOptions) -> bool {
    256 + opts.num_merges <= 1 << 16
}

/// [`learn`], freeing the word counts as soon as they are copied into the working form.
pub fn learn_owned(
    words: Sorted,
    opts: &MergeOptions,
    progress: &mut dyn FnMut(Progress) -> Result<()>,
) -> Result<Merges> {
    let pool = crate::parallel::pool_for(opts.num_threads);
    if small_ids(opts) {
        let w = build_words::<u16>(&words)?;
        drop(words);
        super::release_memory();
        learn_in_pool(&pool, w, opts, progress)
    } else {
        let w = build_words::<u32>(&words)?;
        drop(words);
        super::release_memory();
        learn_in_pool(&pool, w, opts, progress)
    }
}

/// The words (two symbols or more, nonzero count) in one flat array.
fn build_words<S: Sym>(input: &Sorted) -> Result<Words<S>> {
    let mut w = Words {
        sym: Vec::new(),
        start: Vec::new(),
        len: Vec::new(),
        count: Vec::new(),
    };
    {
        let (mut n, mut total) = (0usize, 0usize);
        // No pair can be counted more often than this, so pair counts (u64) cannot wrap.
        let mut pairs = Some(0u64);
        for (word, c) in input.iter() {
            if word.len() >= 2 && c > 0 {
                n += 1;
                total += word.len();
                pairs = pairs.and_then(|p| p.checked_add(c.checked_mul(word.len() as u64 - 1)?));
            }
        }
        if pairs.is_none() {
            return Err(Error::Value(
                "word counts too large: a pair count could pass 2^64 - 1".into(),
            ));
        }
        if n > u32::MAX as usize {
            return Err(Error::Value(
                "too many distinct words (more than 2^32)".into(),
            ));
        }
        w.sym.reserve_exact(total);
        w.start.reserve_exact(n);
        w.len.reserve_exact(n);
        w.count.reserve_exact(n);
        for (word, c) in input.iter() {
            if word.len() >= 2 && c > 0 {
                w.start.push(w.sym.len());
                w.len.push(word.len() as u32);
                w.count.push(c);
                w.sym
                    .extend(word.iter().map(|&b| S::from_u32(u32::from(b))));
            }
        }
    }
    Ok(w)
}

fn learn_in_pool<S: Sym>(
    pool: &rayon::ThreadPool,
    mut w: Words<S>,
    opts: &MergeOptions,
    progress: &mut dyn FnMut(Progress) -> Result<()>,
) -> Result<Merges> {
    let threads = pool.current_num_threads();
    let max_len = opts.max_token_length.unwrap_or(usize::MAX);
    let mut out = Merges::default();
    if opts.num_merges == 0 || max_len < 2 {
        return Ok(out);
    }
    let nw = w.len.len();

    // ---- Initial pair counts and word lists (byte pairs: a dense 256x256 table), in two
    // parallel passes over contiguous word ranges: count, then write each list straight into
    // its place in the arena (lists stay sorted, and there is no intermediate copy).
    let chunk = nw.div_ceil(threads.max(1)).max(1 << 14);
    let ranges: Vec<(usize, usize)> = (0..nw)
        .step_by(chunk)
        .map(|s| (s, (s + chunk).min(nw)))
        .collect();
    // Pass 1: counts and list lengths per range.
    let partials: Vec<(Vec<u64>, Vec<u32>)> = pool.install(|| {
        ranges
            .par_iter()
            .map(|&(s, e)| {
                let mut cnt = vec![0u64; 1 << 16];
                let mut len = vec![0u32; 1 << 16];
                let mut last = vec![u32::MAX; 1 << 16];
                for i in s..e {
                    let c = w.count[i];
                    let syms = &w.sym[w.start[i]..w.start[i] + w.len[i] as usize];
                    for q in syms.windows(2) {
                        let k = ((q[0].get() as usize) << 8) | q[1].get() as usize;
                        cnt[k] = cnt[k].wrapping_add(c);
                        if last[k] != i as u32 {
                            last[k] = i as u32;
                            len[k] += 1;
                        }
                    }
                }
                (cnt, len)
            })
            .collect()
    });
    // Offsets: pair k's list is the concatenation of the ranges' parts, in range order.
    let mut pairs = PairTable::default();
    let mut offs: Vec<Vec<u64>> = vec![vec![0; 1 << 16]; partials.len()];
    let mut total_len = 0u64;
    for k in 0..1usize << 16 {
        let c = partials.iter().fold(0u64, |a, p| a.wrapping_add(p.0[k]));
        if c == 0 {
            continue;
        }
        let off = total_len;
        for (r, p) in partials.iter().enumerate() {
            offs[r][k] = total_len;
            total_len += u64::from(p.1[k]);
        }
        let len = (total_len - off) as u32;
        pairs.map.insert(
            pk((k >> 8) as u32, (k & 255) as u32),
            PairData {
                count: c,
                off: off as u32,
                len,
            },
        );
    }
    drop(partials);
    if total_len > u64::from(u32::MAX) {
        return Err(Error::Value(
            "corpus too large: more than 2^32 pair occurrences in distinct words".into(),
        ));
    }
    // Pass 2: write the lists.
    pairs.arena = vec![0u32; total_len as usize];
    {
        let arena = SyncMut(pairs.arena.as_mut_ptr());
        let arena = &arena;
        pool.install(|| {
            ranges
                .par_iter()
                .zip(offs.par_iter_mut())
                .for_each(|(&(s, e), off)| {
                    let mut last = vec![u32::MAX; 1 << 16];
                    for i in s..e {
                        let syms = &w.sym[w.start[i]..w.start[i] + w.len[i] as usize];
                        for q in syms.windows(2) {
                            let k = ((q[0].get() as usize) << 8) | q[1].get() as usize;
                            if last[k] != i as u32 {
                                last[k] = i as u32;
                                // SAFETY: each (range, pair) owns the slots from its offset on.
                                unsafe { *arena.0.add(off[k] as usize) = i as u32 };
                                off[k] += 1;
                            }
                        }
                    }
                });
        });
    }
    drop(offs);
    super::release_memory();
    let mut heap: BinaryHeap<u128> = pairs.map.iter().map(|(&k, p)| entry(p.count, k)).collect();
    let mut tok_len: Vec<u32> = vec![1; 256];

    // ---- The merge loop.
    let total = opts.num_merges;
    let mut last_report = Instant::now();
    progress(Progress::Merge { done: 0, total })?;
    let ptr = WordsPtr {
        sym: w.sym.as_mut_ptr(),
        len: w.len.as_mut_ptr(),
    };
    let start = &w.start[..];
    let counts = &w.count[..];
    let mut acc = Acc::default();
    while out.pairs.len() < total {
        let Some(top) = heap.pop() else { break };
        let stored = (top >> 64) as u64;
        let key = !(top as u64);
        let Some(pd) = pairs.map.get(&key) else {
            continue;
        };
        let cur = pd.count;
        if cur != stored {
            heap.push(entry(cur, key));
            continue;
        }
        if cur < opts.min_frequency {
            break;
        }
        let (a, b) = unpk(key);
        let x = 256 + out.pairs.len() as u32;
        out.pairs.push((a, b));
        out.counts.push(cur);
        tok_len.push(tok_len[a as usize] + tok_len[b as usize]);

        // Clearing costs the capacity: shrink what a big early merge left behind.
        let used = acc.delta.len();
        acc.delta.clear();
        if acc.delta.capacity() > 4 * used + 4096 {
            acc.delta.shrink_to(2 * used + 1024);
        }
        if acc.new_occ.capacity() > 1 << 16 {
            acc.new_occ = Vec::new();
        }
        acc.new_occ.clear();
        acc.removed = 0;
        let list = pairs.list(pd);
        if threads > 1 && list.len() >= PAR_MIN_WORDS {
            let per = list.len().div_ceil(threads * 4).max(PAR_MIN_WORDS / 2);
            let ptr = &ptr;
            let parts: Vec<Acc> = pool.install(|| {
                list.par_chunks(per)
                    .map(|ws| {
                        let mut a2 = Acc::default();
                        for &wi in ws {
                            // SAFETY: `list` is strictly increasing, so chunks hold disjoint words.
                            unsafe { merge_word(ptr, start, counts, wi, a, b, x, &mut a2) };
                        }
                        a2
                    })
                    .collect()
            });
            for p in parts {
                acc.absorb(p);
            }
        } else {
            for &wi in list {
                // SAFETY: single-threaded here.
                unsafe { merge_word(&ptr, start, counts, wi, a, b, x, &mut acc) };
            }
        }

        // Apply the deltas. Pairs with the new token are new: register them with their lists.
        let mut new_pairs: Vec<(u64, i64)> = Vec::new();
        for (&k, &d) in &acc.delta {
            let (l, r) = unpk(k);
            if l == x || r == x {
                if d > 0 {
                    new_pairs.push((k, d));
                }
            } else if d != 0 {
                if let Some(p) = pairs.map.get_mut(&k) {
                    p.count = p.count.wrapping_add_signed(d);
                    if p.count == 0 && k != key {
                        pairs.remove(k);
                    }
                }
            }
        }
        // (With a == b the merged pair also shows up in the deltas, as a neighbour pair.)
        if let Some(p) = pairs.map.get_mut(&key) {
            p.count = p.count.wrapping_add_signed(-acc.removed);
            debug_assert_eq!(p.count, 0, "merged pair left over");
        }
        pairs.remove(key);
        new_pairs.sort_unstable();
        // Words are unique per pair, so this order is (pair, increasing word).
        acc.new_occ.sort_unstable();
        let mut j = 0;
        for (k, d) in new_pairs {
            let (l, r) = unpk(k);
            while j < acc.new_occ.len() && acc.new_occ[j].0 < k {
                j += 1;
            }
            if (tok_len[l as usize] + tok_len[r as usize]) as usize > max_len {
                continue;
            }
            let off = pairs.arena.len();
            while j < acc.new_occ.len() && acc.new_occ[j].0 == k {
                pairs.arena.push(acc.new_occ[j].1);
                j += 1;
            }
            pairs.insert(k, d as u64, off);
            heap.push(entry(d as u64, k));
        }
        pairs.maybe_compact();
        if pairs.arena.len() > u32::MAX as usize {
            return Err(Error::Value(
                "corpus too large: word lists exceed 2^32 entries".into(),
            ));
        }
        // Entries of removed pairs stay in the heap until they surface; drop them when they
        // outnumber the live pairs.
        if heap.len() > pairs.map.len() + pairs.map.len() / 4 + (1 << 16) {
            let mut v = std::mem::take(&mut heap).into_vec();
            v.retain(|&e| pairs.map.contains_key(&!(e as u64)));
            heap = BinaryHeap::from(v);
        }

        if out.pairs.len() % 64 == 0 && last_report.elapsed().as_millis() >= 100 {
            last_report = Instant::now();
            progress(Progress::Merge {
                done: out.pairs.len(),
                total,
            })?;
        }
    }
    progress(Progress::Merge {
        done: out.pairs.len(),
        total,
    })?;
    if std::env::var_os("BYTEPAIR_DEBUG").is_some() {
        eprintln!(
            "pairs {} arena {} (dead {}) heap {} words {nw} syms {}",
            pairs.map.len(),
            pairs.arena.len(),
            pairs.dead,
            heap.len(),
            w.sym.len()
        );
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sorted(words: &[(&[u8], u64)]) -> Sorted {
        Sorted::from_pairs(words.to_vec())
    }

    /// Full recount per merge: the obviously correct trainer.
    fn reference(words: &[(&[u8], u64)], n: usize) -> Vec<(u32, u32)> {
        let mut ws: Vec<(Vec<u32>, u64)> = words
            .iter()
            .map(|(w, c)| (w.iter().map(|&b| b as u32).collect(), *c))
            .collect();
        let mut out = Vec::new();
        for m in 0..n {
            let mut cnt: std::collections::BTreeMap<(u32, u32), u64> = Default::default();
            for (w, c) in &ws {
                for q in w.windows(2) {
                    *cnt.entry((q[0], q[1])).or_default() += c;
                }
            }
            let Some(best) = cnt.iter().map(|(p, c)| (*c, std::cmp::Reverse(*p))).max() else {
                break;
            };
            let p = best.1 .0;
            let x = 256 + m as u32;
            for (w, _) in &mut ws {
                let mut o = Vec::new();
                let mut i = 0;
                while i < w.len() {
                    if i + 1 < w.len() && (w[i], w[i + 1]) == p {
                        o.push(x);
                        i += 2;
                    } else {
                        o.push(w[i]);
                        i += 1;
                    }
                }
                *w = o;
            }
            out.push(p);
        }
        out
    }

    #[test]
    fn overlapping_repeats_and_ties() {
        let cases: Vec<Vec<(&[u8], u64)>> = vec![
            vec![(b"aaaa", 1)],
            vec![(b"aaaaa", 3), (b"aaa", 2)],
            vec![(b"abab", 2), (b"baba", 2), (b"ab", 1)],
            vec![(b"abcabc", 1), (b"bcabca", 1), (b"cab", 5)],
            vec![(b"zy", 1), (b"ba", 1), (b"ab", 1)],
            vec![
                (b"\xf0\x9f\x98\x80\xf0\x9f\x98\x80", 4),
                (b"\xf0\x9f\x98\x81", 3),
            ],
        ];
        for case in cases {
            let want = reference(&case, 20);
            for threads in [1, 2] {
                let opts = MergeOptions {
                    num_merges: 20,
                    num_threads: threads,
                    ..Default::default()
                };
                let got = learn(&sorted(&case), &opts, &mut |_| Ok(())).unwrap();
                assert_eq!(got.pairs, want, "{case:?}");
            }
        }
    }

    #[test]
    fn random_corpora_match_reference() {
        let mut seed = 12345u64;
        let mut rnd = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for _ in 0..30 {
            let mut words: Vec<Vec<u8>> = Vec::new();
            for _ in 0..(rnd() % 40 + 1) {
                let len = (rnd() % 9 + 1) as usize;
                words.push(
                    (0..len)
                        .map(|_| b"aabc\xe2"[(rnd() % 5) as usize])
                        .collect(),
                );
            }
            let mut pairs: Vec<(&[u8], u64)> =
                words.iter().map(|w| (&w[..], rnd() % 5 + 1)).collect();
            pairs.sort();
            pairs.dedup_by(|a, b| a.0 == b.0);
            let want = reference(&pairs, 30);
            let opts = MergeOptions {
                num_merges: 30,
                ..Default::default()
            };
            let got = learn(&sorted(&pairs), &opts, &mut |_| Ok(())).unwrap();
            assert_eq!(got.pairs, want);
        }
    }

    #[test]
    fn parallel_merges_equal_serial() {
        // Enough words that the early merges run in parallel.
        let mut words: Vec<Vec<u8>> = Vec::new();
        let mut seed = 7u64;
        for _ in 0..40000 {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let len = (seed >> 60) as usize + 2;
            words.push(
                (0..len)
                    .map(|i| b"abcdeab"[((seed >> (i * 3)) % 7) as usize])
                    .collect(),
            );
        }
        let pairs: Vec<(&[u8], u64)> = words
            .iter()
            .enumerate()
            .map(|(i, w)| (&w[..], (i % 3 + 1) as u64))
            .collect();
        let s = sorted(&pairs);
        let run = |t| {
            learn(
                &s,
                &MergeOptions {
                    num_merges: 200,
                    num_threads: t,
                    ..Default::default()
                },
                &mut |_| Ok(()),
            )
            .unwrap()
        };
        assert_eq!(run(1), run(3));
        // Ids past 65535 switch the word array to u32 symbols: same merges.
        let wide = learn(
            &s,
            &MergeOptions {
                num_merges: 70000,
                ..Default::default()
            },
            &mut |_| Ok(()),
        )
        .unwrap();
        assert!(wide.pairs.len() > 200 && wide.pairs.len() < 70000);
        let n = wide.pairs.len();
        let narrow = learn(
            &s,
            &MergeOptions {
                num_merges: n,
                ..Default::default()
            },
            &mut |_| Ok(()),
        )
        .unwrap();
        assert_eq!(wide, narrow);
    }

    #[test]
    fn min_frequency_and_max_len() {
        let s = sorted(&[(b"abcd", 10), (b"xy", 1)]);
        let got = learn(
            &s,
            &MergeOptions {
                num_merges: 10,
                min_frequency: 2,
                ..Default::default()
            },
            &mut |_| Ok(()),
        )
        .unwrap();
        assert_eq!(got.pairs.len(), 3);
        let got = learn(
            &s,
            &MergeOptions {
                num_merges: 10,
                max_token_length: Some(2),
                ..Default::default()
            },
            &mut |_| Ok(()),
        )
        .unwrap();
        assert!(got.token_bytes()[256..].iter().all(|t| t.len() <= 2));
        assert_eq!(got.pairs, [(97, 98), (99, 100), (120, 121)]); // ab, cd, xy; ab+c and ab+cd are too long
    }
}
