//! Corpus to token shards (`bytepair encode`) and corpus token counts (`bytepair count`).
//!
//! Why it is built this way: one reader thread does the I/O, decompression, JSON and UTF-8
//! checks and hands batches of documents (a few MiB each) down a channel that holds two
//! batches; the calling thread encodes each batch on the rayon pool (documents in parallel)
//! and writes the results in input order. Memory is bounded by a few batches plus the largest
//! single document, whatever the corpus size, and the output does not depend on the number of
//! threads.
//!
//! The shard layout is a fixed number of documents per shard ([`EncodeOptions::docs_per_shard`]):
//! shard `k` holds documents `k * D .. (k + 1) * D` of the corpus, in input order. That plan is
//! known before encoding anything, so an interrupted run resumes at a shard boundary by skipping
//! documents (read, not encoded), and a cluster can write any range of shards independently
//! ([`EncodeRange`]) and produce the same bytes as one machine.
//!
//! A "document" is a `.txt` file read whole, or a non-blank line of a `.jsonl` file whose `text`
//! field is a string; with [`OnError::Skip`] bad lines, unreadable files and files that are not
//! UTF-8 are not documents (they are counted as skipped), so the numbering stays deterministic.
//!
//! Shards are `.npy` files (format 1.0) with a fixed 128-byte header, written to a temporary
//! name and renamed into place once complete, so a shard file that exists is always whole.
use std::fs::{self, File};
use std::io::{BufWriter, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;

use crate::encode::{CoreBpe, SpecialSet};
use crate::error::{Error, Result};
use crate::input::{io_at, InputOptions, OnError, Reader, Stats};
use crate::parallel;
use crate::vocab::Rank;

/// The size of every shard's `.npy` header (magic, version, length and the padded dict).
pub const NPY_HEADER_LEN: usize = 128;

/// The element type of the shards.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dtype {
    U16,
    U32,
}

impl Dtype {
    /// `U16` when every id up to `max_token` fits in 16 bits, else `U32`.
    pub fn for_max_token(max_token: Rank) -> Self {
        if max_token <= u16::MAX as Rank {
            Dtype::U16
        } else {
            Dtype::U32
        }
    }

    /// Bytes per token.
    pub fn itemsize(self) -> usize {
        match self {
            Dtype::U16 => 2,
            Dtype::U32 => 4,
        }
    }

    /// The numpy name: `"uint16"` or `"uint32"`.
    pub fn name(self) -> &'static str {
        match self {
            Dtype::U16 => "uint16",
            Dtype::U32 => "uint32",
        }
    }

    fn descr(self) -> &'static str {
        match self {
            Dtype::U16 => "<u2",
            Dtype::U32 => "<u4",
        }
    }
}

/// The `.npy` (format 1.0) header of a 1-D array of `len` items, padded to [`NPY_HEADER_LEN`].
pub fn npy_header(dtype: Dtype, len: u64) -> [u8; NPY_HEADER_LEN] {
    let mut h = [b' '; NPY_HEADER_LEN];
    h[..6].copy_from_slice(b"\x93NUMPY");
    h[6] = 1;
    h[7] = 0;
    let dict_len = (NPY_HEADER_LEN - 10) as u16;
    h[8..10].copy_from_slice(&dict_len.to_le_bytes());
    let dict = format!(
        "{{'descr': '{}', 'fortran_order': False, 'shape': ({len},), }}",
        dtype.descr()
    );
    h[10..10 + dict.len()].copy_from_slice(dict.as_bytes());
    h[NPY_HEADER_LEN - 1] = b'\n';
    h
}

/// The file name of shard `index`: `shard_00000.npy`, `shard_00001.npy`, ...
pub fn shard_name(index: u64) -> String {
    format!("shard_{index:05}.npy")
}

/// Options shared by [`encode_to_shards`] and [`count_tokens`].
#[derive(Clone, Debug)]
pub struct CorpusOptions {
    pub on_error: OnError,
    /// The JSON field that holds the text.
    pub field: String,
    /// Threads for encoding (0: one per core).
    pub num_threads: usize,
    /// About this many bytes of text per batch.
    pub batch_bytes: usize,
    /// At most this many documents per batch.
    pub batch_docs: usize,
}

impl Default for CorpusOptions {
    fn default() -> Self {
        CorpusOptions {
            on_error: OnError::Fail,
            field: "text".into(),
            num_threads: 0,
            batch_bytes: 4 << 20,
            batch_docs: 8192,
        }
    }
}

/// Which part of the document stream to encode, and where its first shard starts (default:
/// all of it, from shard 0).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EncodeRange {
    /// Documents of the stream to skip (read, not encoded) before the first shard.
    pub skip_docs: u64,
    /// Stop after this many documents (None: the end of the input).
    pub max_docs: Option<u64>,
    /// The index of the first shard written.
    pub first_shard: u64,
}

/// A shard written and renamed into place.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShardInfo {
    pub index: u64,
    pub path: PathBuf,
    /// Documents in the shard.
    pub documents: u64,
    /// Tokens in the shard, end-of-text tokens included.
    pub tokens: u64,
}

/// What the callback of a long call hears about, on the calling thread, between batches.
#[derive(Clone, Debug)]
pub enum Event {
    /// Bytes read (of `total_bytes`; compressed size for compressed files), documents done and
    /// tokens produced so far.
    Progress {
        bytes_read: u64,
        total_bytes: u64,
        documents: u64,
        tokens: u64,
    },
    /// A shard is complete on disk.
    Shard(ShardInfo),
}

/// The outcome of a run.
#[derive(Clone, Debug, Default)]
pub struct Summary {
    /// Documents encoded (or counted) in this run.
    pub documents: u64,
    /// Tokens written (end-of-text included) or counted.
    pub tokens: u64,
    /// Shards written by this run.
    pub shards: Vec<ShardInfo>,
    /// Inputs skipped under [`OnError::Skip`], and the first few messages.
    pub skipped: u64,
    pub errors: Vec<String>,
    /// Per-file token counts ([`count_tokens`] only), in the order of the files.
    pub per_file: Vec<u64>,
}

/// One document: where it came from and its text.
struct Doc {
    file: usize,
    location: LocationOf,
    text: String,
}

/// Enough to name a document in an error message.
struct LocationOf {
    source: Arc<Path>,
    line: Option<u64>,
}

impl LocationOf {
    fn show(&self) -> String {
        match self.line {
            Some(l) => format!("{}:{l}", self.source.display()),
            None => self.source.display().to_string(),
        }
    }
}

/// The documents of a [`Reader`], checked for UTF-8 (by policy), with the index of their file.
struct DocStream {
    reader: Reader,
    files: Vec<PathBuf>,
    file: usize,
    last_source: Option<Arc<Path>>,
    on_error: OnError,
    skipped: u64,
    errors: Vec<String>,
}

impl DocStream {
    fn new(files: Vec<PathBuf>, opts: &CorpusOptions) -> Self {
        let iopts = InputOptions {
            on_error: opts.on_error,
            field: opts.field.clone(),
            block_size: None,
        };
        DocStream {
            reader: Reader::new(files.clone(), iopts),
            files,
            file: 0,
            last_source: None,
            on_error: opts.on_error,
            skipped: 0,
            errors: Vec::new(),
        }
    }

    fn file_index(&mut self, source: &Arc<Path>) -> usize {
        if self
            .last_source
            .as_ref()
            .is_some_and(|s| Arc::ptr_eq(s, source))
        {
            return self.file;
        }
        // A new file: the next one in the list with this path (files that yield nothing are
        // passed over).
        let start = if self.last_source.is_some() {
            self.file + 1
        } else {
            0
        };
        let found = (start..self.files.len()).find(|&i| *self.files[i] == **source);
        self.file = found.unwrap_or(self.files.len().saturating_sub(1));
        self.last_source = Some(source.clone());
        self.file
    }

    fn next_doc(&mut self) -> Option<Result<Doc>> {
        loop {
            let d = match self.reader.next()? {
                Ok(d) => d,
                Err(e) => return Some(Err(e)),
            };
            let file = self.file_index(&d.source);
            let location = LocationOf {
                source: d.source,
                line: d.line,
            };
            match String::from_utf8(d.text) {
                Ok(text) => {
                    return Some(Ok(Doc {
                        file,
                        location,
                        text,
                    }))
                }
                Err(e) => {
                    let msg = format!(
                        "{}: invalid UTF-8 at byte {}",
                        location.show(),
                        e.utf8_error().valid_up_to()
                    );
                    match self.on_error {
                        OnError::Fail => return Some(Err(Error::Value(msg))),
                        OnError::Skip => {
                            self.skipped += 1;
                            if self.errors.len() < 20 {
                                self.errors.push(msg);
                            }
                        }
                    }
                }
            }
        }
    }

    /// Skipped inputs (reader's and ours) and the first messages.
    fn skipped(&self, stats: &Stats) -> (u64, Vec<String>) {
        let mut errors = stats.errors();
        errors.extend(self.errors.iter().cloned());
        errors.truncate(20);
        (stats.skipped.load(Ordering::Relaxed) + self.skipped, errors)
    }
}

/// Runs the reader on its own thread and `consume` on this one, batch by batch, in order.
/// The first `skip` documents are read and dropped; at most `max` are passed on.
fn pipeline(
    files: Vec<PathBuf>,
    opts: &CorpusOptions,
    skip: u64,
    max: Option<u64>,
    consume: &mut dyn FnMut(Vec<Doc>, &Stats) -> Result<()>,
) -> Result<(u64, Vec<String>)> {
    let mut stream = DocStream::new(files, opts);
    let stats = stream.reader.stats();
    let (batch_bytes, batch_docs) = (opts.batch_bytes.max(1), opts.batch_docs.max(1));
    enum Msg {
        Batch(Vec<Doc>),
        Failed(Error),
        /// The end, with the skipped inputs.
        Done(u64, Vec<String>),
    }
    // The reader runs on a thread of its own (see `read_ahead`): this one looks for Ctrl-C while
    // a pipe waits for its writer, and a stop here does not wait for the read.
    let rx = crate::parallel::read_ahead(2, move |send| {
        let (mut skip, mut left) = (skip, max.unwrap_or(u64::MAX));
        loop {
            let mut batch = Vec::new();
            let mut bytes = 0;
            while bytes < batch_bytes && batch.len() < batch_docs && left > 0 {
                match stream.next_doc() {
                    None => break,
                    Some(Err(e)) => {
                        send(Msg::Failed(e));
                        return;
                    }
                    Some(Ok(_)) if skip > 0 => skip -= 1,
                    Some(Ok(d)) => {
                        bytes += d.text.len();
                        left -= 1;
                        batch.push(d);
                    }
                }
            }
            if batch.is_empty() {
                break;
            }
            if !send(Msg::Batch(batch)) {
                return;
            }
        }
        let stats = stream.reader.stats();
        let (n, errors) = stream.skipped(&stats);
        send(Msg::Done(n, errors));
    })?;
    let mut check = || {
        if crate::parallel::interrupt::poll() {
            Err(Error::Interrupted)
        } else {
            Ok(())
        }
    };
    loop {
        match crate::parallel::recv_checking(&rx, &mut check)? {
            Some(Msg::Batch(batch)) => consume(batch, &stats)?,
            Some(Msg::Failed(e)) => return Err(e),
            Some(Msg::Done(n, errors)) => return Ok((n, errors)),
            None => return Err(Error::Value("the input reader thread panicked".into())),
        }
    }
}

/// Writes shards one after another: a temporary file, then a rename once complete.
struct ShardWriter {
    dir: PathBuf,
    dtype: Dtype,
    next_index: u64,
    cur: Option<OpenShard>,
    buf: Vec<u8>,
}

struct OpenShard {
    index: u64,
    tmp: PathBuf,
    file: BufWriter<File>,
    documents: u64,
    tokens: u64,
}

impl ShardWriter {
    fn push(&mut self, tokens: &[Rank], eot: Rank) -> Result<()> {
        if self.cur.is_none() {
            let index = self.next_index;
            let tmp = self.dir.join(format!("{}.tmp", shard_name(index)));
            let f = File::create(&tmp).map_err(|e| io_at(&tmp, e))?;
            let mut file = BufWriter::with_capacity(1 << 20, f);
            file.write_all(&npy_header(self.dtype, 0))
                .map_err(|e| io_at(&tmp, e))?;
            self.cur = Some(OpenShard {
                index,
                tmp,
                file,
                documents: 0,
                tokens: 0,
            });
        }
        let cur = self.cur.as_mut().expect("open shard");
        self.buf.clear();
        match self.dtype {
            Dtype::U16 => {
                for &t in tokens.iter().chain(std::iter::once(&eot)) {
                    self.buf.extend_from_slice(&(t as u16).to_le_bytes());
                }
            }
            Dtype::U32 => {
                for &t in tokens.iter().chain(std::iter::once(&eot)) {
                    self.buf.extend_from_slice(&t.to_le_bytes());
                }
            }
        }
        cur.file
            .write_all(&self.buf)
            .map_err(|e| io_at(&cur.tmp, e))?;
        cur.documents += 1;
        cur.tokens += tokens.len() as u64 + 1;
        Ok(())
    }

    fn documents(&self) -> u64 {
        self.cur.as_ref().map_or(0, |c| c.documents)
    }

    /// Completes the open shard (header with the real length, sync, rename).
    fn finish(&mut self) -> Result<Option<ShardInfo>> {
        let Some(cur) = self.cur.take() else {
            return Ok(None);
        };
        let OpenShard {
            index,
            tmp,
            file,
            documents,
            tokens,
        } = cur;
        let at = |e| io_at(&tmp, e);
        let mut f = file.into_inner().map_err(|e| at(e.into_error()))?;
        f.seek(SeekFrom::Start(0)).map_err(at)?;
        f.write_all(&npy_header(self.dtype, tokens)).map_err(at)?;
        f.sync_data().map_err(at)?;
        drop(f);
        let path = self.dir.join(shard_name(index));
        fs::rename(&tmp, &path).map_err(at)?;
        self.next_index = index + 1;
        Ok(Some(ShardInfo {
            index,
            path,
            documents,
            tokens,
        }))
    }
}

impl Drop for ShardWriter {
    fn drop(&mut self) {
        // An unfinished shard (error or interruption) is not kept.
        if let Some(cur) = self.cur.take() {
            drop(cur.file);
            let _ = fs::remove_file(&cur.tmp);
        }
    }
}

fn encode_batch(bpe: &CoreBpe, pool: &rayon::ThreadPool, docs: &[Doc]) -> Vec<Result<Vec<Rank>>> {
    per_document(pool, docs, |d| bpe.encode_ordinary(&d.text))
}

/// `f` of each document, in order, on the calling thread and the pool (see
/// [`parallel::map_ordered`]: the caller works too and passes a Ctrl-C on to the pool's threads,
/// so a long document on any thread stops soon after it). Errors name the document; an
/// interruption stays [`Error::Interrupted`].
fn per_document<T: Send>(
    pool: &rayon::ThreadPool,
    docs: &[Doc],
    f: impl Fn(&Doc) -> Result<T> + Sync,
) -> Vec<Result<T>> {
    let one = |d: &Doc| {
        Ok(f(d).map_err(|e| match e {
            Error::Interrupted => e,
            e => Error::Value(format!("{}: {e}", d.location.show())),
        }))
    };
    parallel::map_ordered(pool, docs, one).expect("every item is Ok")
}

/// Encodes the documents of `files` (in order, each followed by `eot`) into shards of
/// `docs_per_shard` documents in `out` (which must exist). `range` selects part of the stream
/// (resuming, or one task of a cluster job). `on_event` is called between batches and after
/// each shard; an error it returns stops the run (the unfinished shard is removed).
pub fn encode_to_shards(
    bpe: &CoreBpe,
    files: Vec<PathBuf>,
    out: &Path,
    eot: Rank,
    docs_per_shard: u64,
    range: EncodeRange,
    opts: &CorpusOptions,
    on_event: &mut dyn FnMut(Event) -> Result<()>,
) -> Result<Summary> {
    if docs_per_shard == 0 {
        return Err(Error::Value("docs_per_shard must be at least 1".into()));
    }
    let max_token = bpe.max_token().unwrap_or(0).max(eot);
    let dtype = Dtype::for_max_token(max_token);
    let total_bytes = Reader::new(files.clone(), InputOptions::default()).total_bytes();
    let pool = parallel::pool_for(opts.num_threads);
    let mut w = ShardWriter {
        dir: out.to_path_buf(),
        dtype,
        next_index: range.first_shard,
        cur: None,
        buf: Vec::new(),
    };
    let mut summary = Summary::default();
    let (skipped, errors) = pipeline(
        files,
        opts,
        range.skip_docs,
        range.max_docs,
        &mut |docs, stats| {
            let encoded = encode_batch(bpe, &pool, &docs);
            for toks in encoded {
                let toks = toks?;
                w.push(&toks, eot)?;
                summary.documents += 1;
                summary.tokens += toks.len() as u64 + 1;
                if w.documents() == docs_per_shard {
                    if let Some(info) = w.finish()? {
                        summary.shards.push(info.clone());
                        on_event(Event::Shard(info))?;
                    }
                }
            }
            on_event(Event::Progress {
                bytes_read: stats.bytes_read.load(Ordering::Relaxed),
                total_bytes,
                documents: summary.documents,
                tokens: summary.tokens,
            })
        },
    )?;
    if let Some(info) = w.finish()? {
        summary.shards.push(info.clone());
        on_event(Event::Shard(info))?;
    }
    summary.skipped = skipped;
    summary.errors = errors;
    Ok(summary)
}

/// Counts the tokens of the documents of `files` (`encode_ordinary` lengths, no end-of-text),
/// per file ([`Summary::per_file`]) and in total.
pub fn count_tokens(
    bpe: &CoreBpe,
    files: Vec<PathBuf>,
    opts: &CorpusOptions,
    on_event: &mut dyn FnMut(Event) -> Result<()>,
) -> Result<Summary> {
    let total_bytes = Reader::new(files.clone(), InputOptions::default()).total_bytes();
    let pool = parallel::pool_for(opts.num_threads);
    let mut summary = Summary {
        per_file: vec![0; files.len()],
        ..Default::default()
    };
    let none = SpecialSet::None;
    let (skipped, errors) = pipeline(files, opts, 0, None, &mut |docs, stats| {
        let counts = per_document(&pool, &docs, |d| bpe.count(&d.text, &none, &none));
        for (d, n) in docs.iter().zip(counts) {
            let n = n? as u64;
            summary.per_file[d.file] += n;
            summary.documents += 1;
            summary.tokens += n;
        }
        on_event(Event::Progress {
            bytes_read: stats.bytes_read.load(Ordering::Relaxed),
            total_bytes,
            documents: summary.documents,
            tokens: summary.tokens,
        })
    })?;
    summary.skipped = skipped;
    summary.errors = errors;
    Ok(summary)
}

/// The number of documents of each file (same rules as [`encode_to_shards`]): the plan of a
/// cluster job, which needs to know where each shard starts.
pub fn count_documents(
    files: Vec<PathBuf>,
    opts: &CorpusOptions,
) -> Result<(Vec<u64>, u64, Vec<String>)> {
    let mut per_file = vec![0u64; files.len()];
    let (skipped, errors) = pipeline(files, opts, 0, None, &mut |docs, _| {
        for d in &docs {
            per_file[d.file] += 1;
        }
        Ok(())
    })?;
    Ok((per_file, skipped, errors))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vocab::Vocab;

    fn tmpdir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("bytepair-shards-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        fs::create_dir_all(&d).unwrap();
        d
    }

    /// A byte-level encoding with a few merges and `<|endoftext|>` (id 300).
    fn tiny() -> CoreBpe {
        let bytes: Vec<[u8; 1]> = (0..=255u8).map(|b| [b]).collect();
        let merges: [&[u8]; 6] = [b"he", b"ll", b"hell", b"hello", b" w", b"or"];
        let entries = bytes
            .iter()
            .enumerate()
            .map(|(i, b)| (&b[..], i as Rank))
            .chain(
                merges
                    .iter()
                    .enumerate()
                    .map(|(i, m)| (*m, 256 + i as Rank)),
            );
        let vocab = Vocab::from_entries(entries).unwrap();
        CoreBpe::new(
            vocab,
            crate::pretokenize::CL100K_PATTERN,
            vec![("<|endoftext|>".into(), 300)],
        )
        .unwrap()
    }

    fn read_npy(p: &Path) -> Vec<u16> {
        let b = fs::read(p).unwrap();
        assert_eq!(&b[..6], b"\x93NUMPY");
        let n: u64 = {
            let h = std::str::from_utf8(&b[10..NPY_HEADER_LEN]).unwrap();
            let s = h.split("'shape': (").nth(1).unwrap();
            s.split(',').next().unwrap().parse().unwrap()
        };
        let v: Vec<u16> = b[NPY_HEADER_LEN..]
            .chunks(2)
            .map(|c| u16::from_le_bytes([c[0], c[1]]))
            .collect();
        assert_eq!(v.len() as u64, n);
        v
    }

    fn corpus(d: &Path) -> (Vec<PathBuf>, Vec<String>) {
        let mut docs = Vec::new();
        let mut jl = String::new();
        for i in 0..23 {
            let t = format!("hello world {i}\nhello");
            jl.push_str(&format!("{{\"text\": {:?}}}\n", t));
            if i % 5 == 0 {
                jl.push('\n');
            }
            docs.push(t);
        }
        fs::write(d.join("a.jsonl"), jl).unwrap();
        fs::write(d.join("b.txt"), "hello there, world").unwrap();
        docs.push("hello there, world".into());
        fs::write(d.join("c.jsonl"), "{\"text\": \"or\"}\n").unwrap();
        docs.push("or".into());
        (
            vec![d.join("a.jsonl"), d.join("b.txt"), d.join("c.jsonl")],
            docs,
        )
    }

    fn run(
        bpe: &CoreBpe,
        files: &[PathBuf],
        out: &Path,
        range: EncodeRange,
        threads: usize,
    ) -> Summary {
        fs::create_dir_all(out).unwrap();
        let opts = CorpusOptions {
            num_threads: threads,
            batch_docs: 3,
            ..Default::default()
        };
        encode_to_shards(bpe, files.to_vec(), out, 300, 4, range, &opts, &mut |_| {
            Ok(())
        })
        .unwrap()
    }

    #[test]
    fn shards_hold_the_documents_in_order() {
        let bpe = tiny();
        let d = tmpdir("order");
        let (files, docs) = corpus(&d);
        let s = run(&bpe, &files, &d.join("out"), EncodeRange::default(), 2);
        assert_eq!(s.documents, docs.len() as u64);
        assert_eq!(s.shards.len(), docs.len().div_ceil(4));
        let mut all = Vec::new();
        for sh in &s.shards {
            let v = read_npy(&sh.path);
            assert_eq!(v.iter().filter(|&&t| t == 300).count() as u64, sh.documents);
            all.extend(v);
        }
        let mut expect = Vec::new();
        for t in &docs {
            expect.extend(
                bpe.encode_ordinary(t)
                    .unwrap()
                    .into_iter()
                    .map(|r| r as u16),
            );
            expect.push(300);
        }
        assert_eq!(all, expect);
        assert!(fs::read_dir(d.join("out")).unwrap().all(|e| !e
            .unwrap()
            .file_name()
            .to_string_lossy()
            .ends_with(".tmp")));

        // Any range of shards, written on its own, is byte-identical; so is a 1-thread run.
        let one = run(&bpe, &files, &d.join("one"), EncodeRange::default(), 1);
        let part = run(
            &bpe,
            &files,
            &d.join("part"),
            EncodeRange {
                skip_docs: 8,
                max_docs: Some(8),
                first_shard: 2,
            },
            2,
        );
        assert_eq!(
            part.shards.iter().map(|s| s.index).collect::<Vec<_>>(),
            [2, 3]
        );
        for sh in &s.shards {
            assert_eq!(
                fs::read(&sh.path).unwrap(),
                fs::read(d.join("one").join(shard_name(sh.index))).unwrap()
            );
            if (2..4).contains(&sh.index) {
                assert_eq!(
                    fs::read(&sh.path).unwrap(),
                    fs::read(d.join("part").join(shard_name(sh.index))).unwrap()
                );
            }
        }
        assert_eq!(one.tokens, s.tokens);

        let (per_file, skipped, _) =
            count_documents(files.clone(), &CorpusOptions::default()).unwrap();
        assert_eq!((per_file, skipped), (vec![23, 1, 1], 0));
        let c = count_tokens(&bpe, files, &CorpusOptions::default(), &mut |_| Ok(())).unwrap();
        assert_eq!(c.tokens + c.documents, s.tokens);
        assert_eq!(c.per_file.iter().sum::<u64>(), c.tokens);
    }

    #[test]
    fn errors_name_file_and_line_and_skip_keeps_numbering() {
        let bpe = tiny();
        let d = tmpdir("errors");
        fs::write(
            d.join("a.jsonl"),
            "{\"text\": \"hello\"}\n{\"txt\": 1}\n{bad\n{\"text\": \"world\"}\n",
        )
        .unwrap();
        fs::write(d.join("b.txt"), b"hel\xfflo").unwrap();
        fs::write(d.join("c.txt"), "or").unwrap();
        let files = vec![d.join("a.jsonl"), d.join("b.txt"), d.join("c.txt")];
        fs::create_dir_all(d.join("out")).unwrap();
        let e = encode_to_shards(
            &bpe,
            files.clone(),
            &d.join("out"),
            300,
            2,
            EncodeRange::default(),
            &CorpusOptions::default(),
            &mut |_| Ok(()),
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("a.jsonl:2") && e.contains("missing field"),
            "{e}"
        );
        let opts = CorpusOptions {
            on_error: OnError::Skip,
            ..Default::default()
        };
        let s = encode_to_shards(
            &bpe,
            files.clone(),
            &d.join("out"),
            300,
            2,
            EncodeRange::default(),
            &opts,
            &mut |_| Ok(()),
        )
        .unwrap();
        assert_eq!((s.documents, s.skipped), (3, 3));
        assert!(
            s.errors
                .iter()
                .any(|m| m.contains("b.txt: invalid UTF-8 at byte 3")),
            "{:?}",
            s.errors
        );
        assert!(
            s.errors.iter().any(|m| m.contains("a.jsonl:3")),
            "{:?}",
            s.errors
        );
        let c = count_tokens(&bpe, files.clone(), &opts, &mut |_| Ok(())).unwrap();
        assert_eq!(c.per_file.len(), 3);
        assert_eq!(c.per_file[1], 0);
        let e = count_tokens(
            &bpe,
            vec![d.join("b.txt")],
            &CorpusOptions::default(),
            &mut |_| Ok(()),
        )
        .unwrap_err();
        assert!(e.to_string().contains("b.txt: invalid UTF-8"));
    }

    #[test]
    fn interruption_leaves_only_complete_shards() {
        let bpe = tiny();
        let d = tmpdir("stop");
        let (files, _) = corpus(&d);
        let out = d.join("out");
        fs::create_dir_all(&out).unwrap();
        let mut n = 0;
        let r = encode_to_shards(
            &bpe,
            files,
            &out,
            300,
            4,
            EncodeRange::default(),
            &CorpusOptions {
                batch_docs: 3,
                ..Default::default()
            },
            &mut |e| {
                if let Event::Shard(_) = e {
                    n += 1;
                    if n == 2 {
                        return Err(Error::Interrupted);
                    }
                }
                Ok(())
            },
        );
        assert!(matches!(r, Err(Error::Interrupted)));
        let mut names: Vec<String> = fs::read_dir(&out)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into())
            .collect();
        names.sort();
        assert_eq!(names, ["shard_00000.npy", "shard_00001.npy"]);
    }

    #[test]
    fn npy_header_shape() {
        let h = npy_header(Dtype::U32, 12345678901234567890);
        let s = std::str::from_utf8(&h[10..]).unwrap();
        assert!(s.starts_with(
            "{'descr': '<u4', 'fortran_order': False, 'shape': (12345678901234567890,), }"
        ));
        assert!(s.ends_with(" \n"));
        assert_eq!(
            u16::from_le_bytes([h[8], h[9]]) as usize + 10,
            NPY_HEADER_LEN
        );
    }
}
