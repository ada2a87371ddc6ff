//! Corpus input: documents from files, directories and globs, read without Python.
//!
//! Formats (chosen by the file name, after stripping `.gz` / `.zst` / `.zstd`):
//! - `.jsonl` / `.ndjson`: one document per line, the string field `text` (configurable);
//! - `.parquet`: not read here (the Python layer reads it through pyarrow); an error otherwise;
//! - anything else: plain text, one document per file.
//!
//! A directory means every non-hidden file under it, recursively, in sorted order; a path with
//! `*`, `?` or `[` is a glob. Errors name the file and, for JSON lines, the 1-based line; with
//! [`OnError::Skip`] bad lines and unreadable files are counted and skipped instead.
//!
//! Large plain-text files can be streamed in blocks ([`InputOptions::block_size`]): a block ends
//! only at a [`safe_boundary`], where every built-in split pattern has a piece boundary and splits
//! the two sides exactly as it splits the whole, so streaming does not change any result.
//!
//! ```no_run
//! use bytepair_core::input::{InputOptions, Reader};
//! let mut reader = Reader::from_inputs(&["corpus/"], InputOptions::default())?;
//! while let Some(batch) = reader.next_batch(1 << 24, 4096)? {
//!     for doc in &batch { let _ = (&doc.source, doc.line, &doc.text); }
//! }
//! # Ok::<(), bytepair_core::Error>(())
//! ```
use std::fmt;
use std::fs::File;
use std::io::{self, BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use crate::error::{Error, Result};

/// What to do with a bad JSON line, a missing field or an unreadable file.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum OnError {
    /// Stop with an error naming the file and line.
    #[default]
    Fail,
    /// Count it, remember the first few messages ([`Stats::errors`]) and go on.
    Skip,
}

impl OnError {
    /// Parses `"fail"` / `"skip"`.
    pub fn parse(s: &str) -> Result<Self> {
        match s {
            "fail" | "raise" | "strict" => Ok(OnError::Fail),
            "skip" | "ignore" => Ok(OnError::Skip),
            _ => Err(Error::Value(format!(
                "on_error must be 'skip' or 'fail', not {s:?}"
            ))),
        }
    }
}

/// The container format of an input file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// One document per file.
    Text,
    /// One JSON object per line; the document is one string field.
    Jsonl,
    /// Apache Parquet (read by the Python layer, not here).
    Parquet,
}

/// The compression of an input file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
    Zstd,
}

/// The format and compression of `path`, from its name.
pub fn detect(path: &Path) -> (Format, Compression) {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().to_ascii_lowercase())
        .unwrap_or_default();
    let (stem, comp) = if let Some(s) = name.strip_suffix(".gz") {
        (s, Compression::Gzip)
    } else if let Some(s) = name
        .strip_suffix(".zst")
        .or_else(|| name.strip_suffix(".zstd"))
    {
        (s, Compression::Zstd)
    } else {
        (name.as_str(), Compression::None)
    };
    let fmt = if stem.ends_with(".jsonl") || stem.ends_with(".ndjson") {
        Format::Jsonl
    } else if stem.ends_with(".parquet") {
        Format::Parquet
    } else {
        Format::Text
    };
    (fmt, comp)
}

/// Options of a [`Reader`].
#[derive(Clone, Debug)]
pub struct InputOptions {
    pub on_error: OnError,
    /// The JSON field that holds the text (default `"text"`).
    pub field: String,
    /// Stream plain-text files in blocks of about this many bytes, cut at [`safe_boundary`]
    /// points (`None`: each file is one document, read whole).
    pub block_size: Option<usize>,
}

impl Default for InputOptions {
    fn default() -> Self {
        InputOptions {
            on_error: OnError::Fail,
            field: "text".into(),
            block_size: None,
        }
    }
}

/// One document (or one block of a streamed plain-text file).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Document {
    /// The file it came from.
    pub source: Arc<Path>,
    /// The 1-based line, for JSON lines.
    pub line: Option<u64>,
    /// The block number within a streamed text file (0 otherwise).
    pub part: u32,
    /// Whether this is the last block of its document (always true unless streamed).
    pub last_part: bool,
    /// The text: UTF-8 from JSON lines; plain-text files are passed on as they are.
    pub text: Vec<u8>,
}

impl Document {
    /// The text as `&str`, or an error naming the file, line and byte offset of invalid UTF-8.
    pub fn as_str(&self) -> Result<&str> {
        std::str::from_utf8(&self.text).map_err(|e| {
            Error::Value(format!(
                "{}: invalid UTF-8 at byte {}",
                self.location(),
                e.valid_up_to()
            ))
        })
    }

    /// `path` or `path:line`, for messages.
    pub fn location(&self) -> String {
        match self.line {
            Some(l) => format!("{}:{l}", self.source.display()),
            None => self.source.display().to_string(),
        }
    }
}

/// Counters shared with whoever shows progress (safe to read from another thread).
#[derive(Default, Debug)]
pub struct Stats {
    /// Bytes read from disk so far (compressed size for compressed files).
    pub bytes_read: AtomicU64,
    /// Documents (blocks) produced.
    pub documents: AtomicU64,
    /// Lines or files skipped under [`OnError::Skip`].
    pub skipped: AtomicU64,
    first_errors: Mutex<Vec<String>>,
}

impl Stats {
    /// The first few skipped errors (at most 20).
    pub fn errors(&self) -> Vec<String> {
        self.first_errors
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn record(&self, msg: String) {
        self.skipped.fetch_add(1, Ordering::Relaxed);
        let mut v = self.first_errors.lock().unwrap_or_else(|e| e.into_inner());
        if v.len() < 20 {
            v.push(msg);
        }
    }
}

/// Expands inputs into a list of files: files as given, directories recursively (sorted, hidden
/// entries skipped), globs (`*`, `?`, `[...]`, `**`) sorted. Symbolic links are followed, but a
/// link back to a directory above it is skipped. Missing paths and globs that match nothing are
/// errors.
pub fn expand<S: AsRef<Path>>(inputs: &[S]) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for input in inputs {
        let p = input.as_ref();
        let s = p.to_string_lossy();
        if p.exists() {
            push_path(p, &mut out)?;
        } else if p.symlink_metadata().is_ok() {
            out.push(p.to_path_buf()); // a broken link: the read reports it (or skips it)
        } else if let Some(s) = p.to_str().filter(|s| s.contains(['*', '?', '['])) {
            let mut matched = glob_paths(s)?;
            if matched.is_empty() {
                return Err(Error::Io(io::Error::new(
                    io::ErrorKind::NotFound,
                    format!("{s}: no file matches"),
                )));
            }
            matched.sort();
            // A matched directory brings the files under it, which the glob may match too.
            let mut files = Vec::new();
            for m in matched {
                match std::fs::metadata(&m) {
                    Ok(md) if md.is_dir() => walk(&m, None, 1, &mut Vec::new(), &mut files)?,
                    // A file, or a broken link, which the read reports (as within a walk under a
                    // glob), so that `on_error="skip"` skips it.
                    _ => files.push(m),
                }
            }
            let mut seen = std::collections::HashSet::new();
            out.extend(files.into_iter().filter(|f| seen.insert(f.clone())));
        } else {
            return Err(Error::Io(io::Error::new(
                io::ErrorKind::NotFound,
                format!("{s}: no such file or directory"),
            )));
        }
    }
    Ok(out)
}

/// The paths that the glob `s` matches, unsorted: files only (those under a matching directory
/// included). The pattern is matched while walking from the directory its wildcards start in,
/// on the bytes of each name (so names that are not UTF-8 match too), following links but never
/// round a loop; without `**` the walk goes no deeper than the pattern. (The `glob` crate
/// matches UTF-8 names only, and its own walk follows `ln -s . self` until the system refuses:
/// 40 levels, or 2^40 paths with two such links.)
fn glob_paths(s: &str) -> Result<Vec<PathBuf>> {
    // Walk from the components before the first one with a wildcard; the rest is the pattern,
    // matched against the path below that directory (so `./`, `//` and `a/./b` in the part
    // before the wildcards need no care).
    let (mut base, mut rest) = (PathBuf::new(), Vec::new());
    for c in Path::new(s).components() {
        let part = c.as_os_str().to_string_lossy();
        if rest.is_empty() && !part.contains(['*', '?', '[']) {
            base.push(c);
        } else {
            rest.push(part.into_owned());
        }
    }
    let pattern = literal_braces(&rest.join("/"));
    let matcher = globset::GlobBuilder::new(&pattern)
        .literal_separator(true)
        .backslash_escape(true)
        .build()
        .map_err(|e| Error::Value(format!("bad glob {s:?}: {e}")))?
        .compile_matcher();
    let glob = Glob {
        matcher,
        base: base.clone(),
        depth: if pattern.contains("**") {
            usize::MAX
        } else {
            rest.len()
        },
    };
    let mut matched = Vec::new();
    if base.as_os_str().is_empty() || base.is_dir() {
        walk(&base, Some(&glob), 1, &mut Vec::new(), &mut matched)?;
    }
    Ok(matched)
}

/// `pattern` with its braces outside `[...]` escaped: globs here are the shell's and Python's
/// `glob` (`*`, `?`, `[...]`, `**`), in which `{a,b}` is literal text, not globset's alternation.
fn literal_braces(pattern: &str) -> String {
    let mut out = String::with_capacity(pattern.len() + 8);
    let mut class = false;
    let mut chars = pattern.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                out.push(c);
                if let Some(n) = chars.next() {
                    out.push(n);
                }
                continue;
            }
            '[' if !class => {
                class = true;
                out.push(c);
                // A `]` first in a class (after an optional `!`) is a member, not its end.
                if chars.peek() == Some(&'!') {
                    out.push(chars.next().unwrap());
                }
                if chars.peek() == Some(&']') {
                    out.push(chars.next().unwrap());
                }
                continue;
            }
            ']' if class => class = false,
            '{' | '}' if !class => out.push('\\'),
            _ => {}
        }
        out.push(c);
    }
    out
}

struct Glob {
    matcher: globset::GlobMatcher,
    /// The directory the walk starts from; paths are matched below it.
    base: PathBuf,
    /// How many levels below `base` a path can match (`usize::MAX` with `**`).
    depth: usize,
}

/// Adds the files under the directory `dir` ("" is the current directory, and the paths are then
/// relative): those that `glob` matches, or, with no glob (a directory input, or a directory the
/// glob matched), all of them but hidden ones. `level` is how deep below the glob's base the
/// entries of `dir` are. Links are followed, except one that leads back to a directory being
/// walked, which is left out (`ln -s . self` would loop forever): `open` holds the canonical
/// paths of those.
fn walk(
    dir: &Path,
    glob: Option<&Glob>,
    level: usize,
    open: &mut Vec<PathBuf>,
    out: &mut Vec<PathBuf>,
) -> Result<()> {
    let at = if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    };
    open.push(std::fs::canonicalize(at).map_err(|e| io_at(at, e))?);
    for name in sorted_names(at)? {
        if glob.is_none() && name.to_string_lossy().starts_with('.') {
            continue;
        }
        let p = dir.join(name);
        // A broken link fails a directory input at once; a glob lets the read report it.
        let is_dir = match (std::fs::metadata(&p), glob) {
            // A FIFO, socket or device found by a walk is not a document (reading a FIFO would
            // wait for a writer forever); named as an input itself, it is still read.
            (Ok(m), _) if !m.is_dir() && !m.is_file() => continue,
            (Ok(m), _) => m.is_dir(),
            (Err(_), Some(_)) => false,
            (Err(e), None) => return Err(io_at(&p, e)),
        };
        let hit = glob.is_none_or(|g| {
            level <= g.depth && g.matcher.is_match(p.strip_prefix(&g.base).unwrap_or(&p))
        });
        if !is_dir {
            if hit {
                out.push(p);
            }
            continue;
        }
        if !hit && glob.is_some_and(|g| level >= g.depth) {
            continue; // nothing deeper can match
        }
        let real = std::fs::canonicalize(&p).map_err(|e| io_at(&p, e))?;
        if !open.contains(&real) && !is_shards_dir(&p) {
            walk(&p, if hit { None } else { glob }, level + 1, open, out)?;
        }
    }
    open.pop();
    Ok(())
}

/// Whether `dir` holds token shards written by `bytepair encode` (its `manifest.json` says so):
/// walks leave those out, so that `bytepair encode data -o data/shards` followed by
/// `bytepair count data` or `bytepair train data` reads the text only. Named as a file, or as
/// the directory (or glob base) itself, a shard is still read.
fn is_shards_dir(dir: &Path) -> bool {
    let mut head = [0u8; 256];
    let Ok(mut f) = std::fs::File::open(dir.join("manifest.json")) else {
        return false;
    };
    let n = f.read(&mut head).unwrap_or(0);
    memchr::memmem::find(&head[..n], br#""format": "bytepair-shards""#).is_some()
}

/// The names of the entries of the directory `dir`, sorted.
fn sorted_names(dir: &Path) -> Result<Vec<std::ffi::OsString>> {
    let mut names: Vec<std::ffi::OsString> = std::fs::read_dir(dir)
        .map_err(|e| io_at(dir, e))?
        .map(|e| e.map(|e| e.file_name()))
        .collect::<io::Result<_>>()
        .map_err(|e| io_at(dir, e))?;
    names.sort();
    Ok(names)
}

/// Adds the file `p`, or every file under the directory `p` (sorted, hidden entries left out,
/// links followed but never round a loop: see [`walk`]).
fn push_path(p: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    if std::fs::metadata(p).map_err(|e| io_at(p, e))?.is_dir() {
        walk(p, None, 1, &mut Vec::new(), out)
    } else {
        out.push(p.to_path_buf());
        Ok(())
    }
}

/// An I/O error that names the file.
pub fn io_at(p: &Path, e: io::Error) -> Error {
    Error::Io(io::Error::new(e.kind(), format!("{}: {e}", p.display())))
}

/// Whether `p` is a point where a built-in split pattern (r50k, cl100k, o200k) always has a
/// piece boundary that does not depend on the text around it: `text[p-1]` is `\n`, `text[p]` an
/// ASCII letter and `text[p-2]` a visible ASCII char. Why it is exact: no piece of these
/// patterns contains a newline followed by a letter (the letter alternatives exclude CR/LF in
/// their optional prefix), and the piece that ends with this newline is the same whether the
/// text ends there or continues with a letter (`X\n` is one punctuation piece, or `\n` alone via
/// `\s*[\r\n]`, `\s++$` or `\s`).
#[inline]
pub fn is_safe_boundary(text: &[u8], p: usize) -> bool {
    p >= 2
        && p < text.len()
        && text[p - 1] == b'\n'
        && text[p].is_ascii_alphabetic()
        && (0x21..=0x7e).contains(&text[p - 2])
}

/// The first [`is_safe_boundary`] point at or after `from`, if any.
pub fn safe_boundary(text: &[u8], from: usize) -> Option<usize> {
    let mut i = from.max(1);
    while i < text.len() {
        let nl = memchr::memchr(b'\n', &text[i - 1..])? + i - 1;
        let p = nl + 1;
        if is_safe_boundary(text, p) {
            return Some(p);
        }
        i = p + 1;
    }
    None
}

/// Counts bytes read from the underlying file.
struct Counting<R> {
    inner: R,
    stats: Arc<Stats>,
}

impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.stats.bytes_read.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
}

fn open(path: &Path, comp: Compression, stats: &Arc<Stats>) -> Result<Box<dyn Read + Send>> {
    let f = File::open(path).map_err(|e| io_at(path, e))?;
    let raw = BufReader::with_capacity(
        1 << 16,
        Counting {
            inner: f,
            stats: stats.clone(),
        },
    );
    Ok(match comp {
        Compression::None => Box::new(raw),
        Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(raw)),
        Compression::Zstd => {
            Box::new(zstd::stream::read::Decoder::with_buffer(raw).map_err(|e| io_at(path, e))?)
        }
    })
}

enum Source {
    Text {
        src: Arc<Path>,
        r: Box<dyn Read + Send>,
        buf: Vec<u8>,
        part: u32,
        eof: bool,
    },
    Jsonl {
        src: Arc<Path>,
        r: BufReader<Box<dyn Read + Send>>,
        line: u64,
        buf: Vec<u8>,
    },
}

/// Reads documents from a list of files, in order. Iterate it, or take batches with
/// [`Reader::next_batch`]. After an error under [`OnError::Fail`] it yields nothing more.
pub struct Reader {
    files: Vec<PathBuf>,
    next_file: usize,
    cur: Option<Source>,
    opts: InputOptions,
    stats: Arc<Stats>,
    failed: bool,
}

impl fmt::Debug for Reader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Reader")
            .field("files", &self.files.len())
            .field("next_file", &self.next_file)
            .finish()
    }
}

impl Reader {
    /// A reader over these files (no expansion; see [`expand`]).
    pub fn new(files: Vec<PathBuf>, opts: InputOptions) -> Self {
        Reader {
            files,
            next_file: 0,
            cur: None,
            opts,
            stats: Arc::default(),
            failed: false,
        }
    }

    /// Expands `inputs` (files, directories, globs) and reads them.
    pub fn from_inputs<S: AsRef<Path>>(inputs: &[S], opts: InputOptions) -> Result<Self> {
        Ok(Self::new(expand(inputs)?, opts))
    }

    /// The files, in reading order.
    pub fn files(&self) -> &[PathBuf] {
        &self.files
    }

    /// The total size of the files on disk (for progress bars).
    pub fn total_bytes(&self) -> u64 {
        self.files
            .iter()
            .filter_map(|p| std::fs::metadata(p).ok())
            .map(|m| m.len())
            .sum()
    }

    /// Shared counters: bytes read, documents, skipped errors.
    pub fn stats(&self) -> Arc<Stats> {
        self.stats.clone()
    }

    /// Up to `max_docs` documents holding about `max_bytes` of text (at least one document);
    /// `None` when the input is exhausted.
    pub fn next_batch(
        &mut self,
        max_bytes: usize,
        max_docs: usize,
    ) -> Result<Option<Vec<Document>>> {
        let mut out = Vec::new();
        let mut bytes = 0;
        while bytes < max_bytes && out.len() < max_docs.max(1) {
            match self.next() {
                Some(Ok(d)) => {
                    bytes += d.text.len();
                    out.push(d);
                }
                Some(Err(e)) => return Err(e),
                None => break,
            }
        }
        Ok(if out.is_empty() { None } else { Some(out) })
    }

    /// Handles an error by policy: `Ok(())` to go on (skip), `Err` to stop.
    fn policy(&mut self, e: Error) -> Result<()> {
        match self.opts.on_error {
            OnError::Skip => {
                self.stats.record(e.to_string());
                Ok(())
            }
            OnError::Fail => {
                self.failed = true;
                Err(e)
            }
        }
    }

    fn open_next(&mut self) -> Result<bool> {
        while self.next_file < self.files.len() {
            let path = self.files[self.next_file].clone();
            self.next_file += 1;
            let (fmt, comp) = detect(&path);
            let src: Arc<Path> = Arc::from(path.as_path());
            if fmt == Format::Parquet {
                let e = Error::Value(format!(
                    "{}: parquet files are read through pyarrow by the Python layer",
                    path.display()
                ));
                self.policy(e)?;
                continue;
            }
            match open(&path, comp, &self.stats) {
                Ok(r) => {
                    self.cur = Some(match fmt {
                        Format::Jsonl => Source::Jsonl {
                            src,
                            r: BufReader::with_capacity(1 << 16, r),
                            line: 0,
                            buf: Vec::new(),
                        },
                        _ => Source::Text {
                            src,
                            r,
                            buf: Vec::new(),
                            part: 0,
                            eof: false,
                        },
                    });
                    return Ok(true);
                }
                Err(e) => self.policy(e)?,
            }
        }
        Ok(false)
    }

    /// The next document of the current file: `Ok(None)` at its end.
    fn next_in_file(&mut self) -> Result<Option<Document>> {
        let block = self.opts.block_size;
        let on_error = self.opts.on_error;
        let field = self.opts.field.clone();
        let Some(cur) = self.cur.as_mut() else {
            return Ok(None);
        };
        match cur {
            Source::Text {
                src,
                r,
                buf,
                part,
                eof,
            } => {
                if *eof && buf.is_empty() {
                    return Ok(None);
                }
                let Some(block) = block else {
                    let mut all = Vec::new();
                    r.read_to_end(&mut all).map_err(|e| io_at(src, e))?;
                    *eof = true;
                    return Ok(Some(Document {
                        source: src.clone(),
                        line: None,
                        part: 0,
                        last_part: true,
                        text: all,
                    }));
                };
                // Fill until a safe cut point past `block` exists or the file ends; read in
                // small steps so that blocks are not over-allocated.
                let mut searched = block;
                let cut = loop {
                    if buf.len() > block {
                        if let Some(p) = safe_boundary(buf, searched) {
                            break Some(p);
                        }
                        searched = buf.len().max(block);
                    }
                    if *eof {
                        break None;
                    }
                    let step = (block / 4).clamp(1 << 12, 1 << 20);
                    let n = r
                        .by_ref()
                        .take(step as u64)
                        .read_to_end(buf)
                        .map_err(|e| io_at(src, e))?;
                    if n == 0 {
                        *eof = true;
                    }
                };
                let text = match cut {
                    Some(p) => {
                        let t = buf[..p].to_vec();
                        buf.drain(..p);
                        t
                    }
                    None => std::mem::take(buf),
                };
                let last = cut.is_none();
                let d = Document {
                    source: src.clone(),
                    line: None,
                    part: *part,
                    last_part: last,
                    text,
                };
                *part += 1;
                if last {
                    *eof = true;
                    buf.shrink_to_fit();
                }
                Ok(Some(d))
            }
            Source::Jsonl { src, r, line, buf } => loop {
                buf.clear();
                let n = r.read_until(b'\n', buf).map_err(|e| io_at(src, e))?;
                if n == 0 {
                    return Ok(None);
                }
                *line += 1;
                let t = buf.trim_ascii();
                if t.is_empty() {
                    continue;
                }
                match parse_json_field(t, &field) {
                    Ok(text) => {
                        return Ok(Some(Document {
                            source: src.clone(),
                            line: Some(*line),
                            part: 0,
                            last_part: true,
                            text: text.into_bytes(),
                        }))
                    }
                    Err(msg) => {
                        let e = Error::Value(format!("{}:{}: {msg}", src.display(), line));
                        match on_error {
                            OnError::Skip => self.stats.record(e.to_string()),
                            OnError::Fail => {
                                self.failed = true;
                                return Err(e);
                            }
                        }
                    }
                }
            },
        }
    }
}

impl Iterator for Reader {
    type Item = Result<Document>;

    fn next(&mut self) -> Option<Result<Document>> {
        loop {
            if self.failed {
                return None;
            }
            if self.cur.is_none() {
                match self.open_next() {
                    Ok(true) => {}
                    Ok(false) => return None,
                    Err(e) => return Some(Err(e)),
                }
            }
            match self.next_in_file() {
                Ok(Some(d)) => {
                    self.stats.documents.fetch_add(1, Ordering::Relaxed);
                    return Some(Ok(d));
                }
                Ok(None) => self.cur = None,
                Err(e) => {
                    self.cur = None;
                    if let Err(e) = self.policy(e) {
                        return Some(Err(e));
                    }
                }
            }
        }
    }
}

/// Reads the string `field` of a JSON object, skipping the other values without building them.
///
/// Lines as Python's `json.dumps` writes them read as Python's `json.loads` reads them: a field
/// given twice takes its last value, `NaN` and `Infinity` (in other fields) are numbers, and lone
/// surrogates in strings become U+FFFD (as a `str` document with them is read). A UTF-8 byte
/// order mark before the object is ignored.
pub fn parse_json_field(line: &[u8], field: &str) -> std::result::Result<String, String> {
    let line = line.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(line);
    match parse_json_field_strict(line, field) {
        Err(e) if e.starts_with("invalid JSON") => {
            // Retry with what serde_json refuses but Python writes, when the line has any.
            let fixed = replace_lone_surrogates(line);
            let fixed = match replace_non_finite(fixed.as_deref().unwrap_or(line)) {
                Some(f) => Some(f),
                None => fixed,
            };
            match fixed {
                Some(f) => match parse_json_field_strict(&f, field) {
                    Err(again) if again.starts_with("invalid JSON") => Err(e),
                    r => r,
                },
                None => Err(e),
            }
        }
        r => r,
    }
}

fn parse_json_field_strict(line: &[u8], field: &str) -> std::result::Result<String, String> {
    use serde::de::{Deserializer, IgnoredAny, MapAccess, Visitor};
    struct V<'f>(&'f str);
    impl<'de> Visitor<'de> for V<'_> {
        type Value = Option<serde_json::Value>;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a JSON object")
        }
        fn visit_map<A: MapAccess<'de>>(
            self,
            mut map: A,
        ) -> std::result::Result<Self::Value, A::Error> {
            let mut found = None;
            while let Some(k) = map.next_key::<std::borrow::Cow<'de, str>>()? {
                if k == self.0 {
                    found = Some(map.next_value::<serde_json::Value>()?); // the last one wins
                } else {
                    map.next_value::<IgnoredAny>()?;
                }
            }
            Ok(found)
        }
    }
    let mut de = serde_json::Deserializer::from_slice(line);
    let v = de.deserialize_map(V(field)).map_err(|e| {
        if e.is_data() && e.to_string().contains("expected a JSON object") {
            "not a JSON object".to_string()
        } else {
            format!("invalid JSON: {e}")
        }
    })?;
    de.end().map_err(|e| format!("invalid JSON: {e}"))?;
    match v {
        Some(serde_json::Value::String(s)) => Ok(s),
        Some(serde_json::Value::Null) => Err(format!("field {field:?} is null")),
        Some(other) => Err(format!(
            "invalid value of field {field:?}: expected a string, got {}",
            match other {
                serde_json::Value::Bool(_) => "a boolean",
                serde_json::Value::Number(_) => "a number",
                serde_json::Value::Array(_) => "an array",
                _ => "an object",
            }
        )),
        None => Err(format!("missing field {field:?}")),
    }
}

/// `line` with the bare `NaN`, `Infinity` and `-Infinity` outside strings (which Python's
/// `json.dumps` writes for float values) written as the number `0`, or `None` when it has none.
fn replace_non_finite(line: &[u8]) -> Option<Vec<u8>> {
    let (mut out, mut copied, mut i, mut in_string) = (None::<Vec<u8>>, 0, 0, false);
    while i < line.len() {
        let b = line[i];
        if in_string {
            match b {
                b'\\' => i += 1, // the escaped byte is skipped too
                b'"' => in_string = false,
                _ => {}
            }
            i += 1;
            continue;
        }
        if b == b'"' {
            in_string = true;
            i += 1;
            continue;
        }
        let word = [&b"-Infinity"[..], b"Infinity", b"NaN"]
            .into_iter()
            .find(|w| line[i..].starts_with(w));
        if let Some(w) = word {
            let o = out.get_or_insert_with(|| Vec::with_capacity(line.len()));
            o.extend_from_slice(&line[copied..i]);
            o.push(b'0');
            i += w.len();
            copied = i;
            continue;
        }
        i += 1;
    }
    let mut o = out?;
    o.extend_from_slice(&line[copied..]);
    Some(o)
}

/// `line` with every `\uD800`-`\uDFFF` escape that is not half of a surrogate pair written as
/// `\uFFFD`, or `None` when it has none (serde_json refuses them).
fn replace_lone_surrogates(line: &[u8]) -> Option<Vec<u8>> {
    let hex = |at: usize| -> Option<u16> {
        let h = line.get(at..at + 4)?;
        u16::from_str_radix(std::str::from_utf8(h).ok()?, 16).ok()
    };
    // The code unit of a `\uXXXX` escape at `at`, if there is one.
    let unit = |at: usize| -> Option<u16> {
        (line.get(at..at + 2)? == b"\\u")
            .then(|| hex(at + 2))
            .flatten()
    };
    let mut out: Option<Vec<u8>> = None;
    let mut i = memchr::memchr(b'\\', line)?;
    let mut copied = 0;
    while i < line.len() {
        if line[i] != b'\\' {
            i += 1;
            continue;
        }
        let Some(u) = unit(i) else {
            i += 2; // another escape (`\\\\`, `\\n`, ...)
            continue;
        };
        let lone = match u {
            0xD800..=0xDBFF => match unit(i + 6) {
                Some(0xDC00..=0xDFFF) => {
                    i += 12; // a pair
                    continue;
                }
                _ => true,
            },
            0xDC00..=0xDFFF => true,
            _ => false,
        };
        if lone {
            let o = out.get_or_insert_with(|| Vec::with_capacity(line.len()));
            o.extend_from_slice(&line[copied..i]);
            o.extend_from_slice(b"\\uFFFD");
            copied = i + 6;
        }
        i += 6;
    }
    let mut o = out?;
    o.extend_from_slice(&line[copied..]);
    Some(o)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn tmpdir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("bytepair-input-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn walks_leave_out_token_shard_directories() {
        let d = tmpdir("shards");
        let shards = d.join("shards");
        let other = d.join("other");
        std::fs::create_dir_all(&shards).unwrap();
        std::fs::create_dir_all(&other).unwrap();
        std::fs::write(d.join("a.txt"), "a").unwrap();
        std::fs::write(shards.join("shard_00000.npy"), b"\x93NUMPY").unwrap();
        let manifest = "{\n \"format\": \"bytepair-shards\",\n \"version\": 1\n}\n";
        std::fs::write(shards.join("manifest.json"), manifest).unwrap();
        // A manifest.json of something else is an ordinary input.
        std::fs::write(other.join("manifest.json"), "{\"format\": \"other\"}").unwrap();
        let names = |v: Vec<PathBuf>| -> Vec<String> {
            v.iter()
                .map(|p| p.strip_prefix(&d).unwrap().display().to_string())
                .collect()
        };
        assert_eq!(
            names(expand(&[d.to_str().unwrap()]).unwrap()),
            ["a.txt", "other/manifest.json"]
        );
        assert_eq!(
            names(expand(&[d.join("**/*").to_str().unwrap()]).unwrap()),
            ["a.txt", "other/manifest.json"]
        );
        // Named as files, or as the directory itself, shards are still read.
        let named = shards.join("shard_00000.npy");
        assert_eq!(expand(&[&named]).unwrap(), std::slice::from_ref(&named));
        assert_eq!(expand(&[&shards]).unwrap().len(), 2);
        assert_eq!(
            expand(&[shards.join("*.npy")]).unwrap(),
            std::slice::from_ref(&named)
        );
        let _ = std::fs::remove_dir_all(&d);
    }

    #[cfg(unix)]
    #[test]
    fn walks_leave_out_fifos_and_other_special_files() {
        let d = tmpdir("fifo");
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join("a.txt"), "a").unwrap();
        let fifo = d.join("pipe.txt");
        let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        // SAFETY: a valid C string; mkfifo only creates the file.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        // Reading the FIFO would wait for a writer forever: a walk leaves it out.
        assert_eq!(expand(&[&d]).unwrap(), [d.join("a.txt")]);
        assert_eq!(expand(&[d.join("*.txt")]).unwrap(), [d.join("a.txt")]);
        // Named itself (`<(zcat x.gz)`, say), it is an input.
        assert_eq!(expand(&[&fifo]).unwrap(), std::slice::from_ref(&fifo));
        let _ = std::fs::remove_dir_all(&d);
    }

    #[cfg(unix)]
    #[test]
    fn directory_links_are_followed_but_never_in_a_loop() {
        let d = tmpdir("links");
        let sub = d.join("sub");
        std::fs::create_dir_all(&sub).unwrap();
        std::fs::write(d.join("a.txt"), "a").unwrap();
        std::fs::write(sub.join("b.txt"), "b").unwrap();
        std::os::unix::fs::symlink(".", d.join("self")).unwrap();
        std::os::unix::fs::symlink("..", sub.join("up")).unwrap();
        let other = tmpdir("links-other");
        std::fs::write(other.join("c.txt"), "c").unwrap();
        std::os::unix::fs::symlink(&other, d.join("other")).unwrap();
        let names = |v: Vec<PathBuf>| -> Vec<String> {
            v.iter()
                .map(|p| p.strip_prefix(&d).unwrap().display().to_string())
                .collect()
        };
        let got = expand(&[d.to_str().unwrap()]).unwrap();
        assert_eq!(names(got), ["a.txt", "other/c.txt", "sub/b.txt"]);
        // Reached through a link, a directory is read once too.
        let got = expand(&[d.join("sub/up").to_str().unwrap()]).unwrap();
        assert_eq!(got.len(), 3, "{got:?}");
        // `**` globs leave out the paths that go round a loop.
        let got = expand(&[d.join("**/*.txt").to_str().unwrap()]).unwrap();
        assert_eq!(names(got), ["a.txt", "other/c.txt", "sub/b.txt"]);
        let got = expand(&[d.join("**").to_str().unwrap()]).unwrap();
        assert_eq!(names(got), ["a.txt", "other/c.txt", "sub/b.txt"]);
        // A matching directory brings its files, hidden ones left out as for directory inputs.
        std::fs::write(sub.join(".hidden.txt"), "h").unwrap();
        let got = expand(&[d.join("**/sub").to_str().unwrap()]).unwrap();
        assert_eq!(names(got), ["sub/b.txt"]);
        let got = expand(&[d.join("**/.hidden.txt").to_str().unwrap()]).unwrap();
        assert_eq!(names(got), ["sub/.hidden.txt"]);
        let dotdot = format!("{}/sub/../sub/*.txt", d.display());
        assert_eq!(
            names(expand(&[dotdot.as_str()]).unwrap()),
            ["sub/../sub/.hidden.txt", "sub/../sub/b.txt"]
        );
    }

    #[test]
    fn globs_match_names_by_their_bytes() {
        let d = tmpdir("globs");
        std::fs::create_dir_all(d.join("sub/deeper")).unwrap();
        for f in [
            "a.txt",
            "b.jsonl",
            "{x,y}.txt",
            "x.txt",
            "sub/c.txt",
            "sub/deeper/d.txt",
        ] {
            std::fs::write(d.join(f), "t").unwrap();
        }
        let names = |pattern: &str| -> Vec<String> {
            let got = expand(&[d.join(pattern).to_str().unwrap()]).unwrap();
            got.iter()
                .map(|p| p.strip_prefix(&d).unwrap().to_string_lossy().into_owned())
                .collect()
        };
        assert_eq!(names("*.txt"), ["a.txt", "x.txt", "{x,y}.txt"]);
        assert_eq!(names("*/*.txt"), ["sub/c.txt"]);
        assert_eq!(names("**/*.txt").len(), 5);
        assert_eq!(names("[!a]*.txt"), ["x.txt", "{x,y}.txt"]);
        // Braces are literal, as in the shell's and Python's globs, in and out of classes.
        assert_eq!(names("{x,y}*"), ["{x,y}.txt"]);
        assert_eq!(names("[{]*"), ["{x,y}.txt"]);
        assert!(expand(&[d.join("{a,b}.t?t").to_str().unwrap()]).is_err());
        assert_eq!(literal_braces("[]{]{a}"), "[]{]\\{a\\}");
        assert_eq!(literal_braces("\\{[!]}]"), "\\{[!]}]");
        // A matching directory brings the files under it.
        assert_eq!(names("su?"), ["sub/c.txt", "sub/deeper/d.txt"]);
        #[cfg(unix)]
        {
            use std::os::unix::ffi::OsStrExt;
            let bad = std::ffi::OsStr::from_bytes(b"bad\xff.txt");
            std::fs::write(d.join(bad), "t").unwrap();
            let got = expand(&[d.join("b*.txt").to_str().unwrap()]).unwrap();
            assert_eq!(got, [d.join(bad)]);
            assert_eq!(names("**/*.txt").len(), 6);
        }
    }

    #[test]
    fn json_field() {
        assert_eq!(
            parse_json_field(br#"{"a": [1, {"text": 2}], "text": "h\u00e9\n"}"#, "text").unwrap(),
            "hé\n"
        );
        assert!(parse_json_field(br#"{"a": 1}"#, "text")
            .unwrap_err()
            .contains("missing"));
        assert!(parse_json_field(br#"{"text": 1}"#, "text")
            .unwrap_err()
            .contains("invalid"));
        assert!(parse_json_field(br#"{"text": "x"} x"#, "text")
            .unwrap_err()
            .contains("invalid JSON"));
        assert!(parse_json_field(b"[1]", "text").is_err());
        assert!(parse_json_field(b"{\"text\": \"\xff\"}", "text").is_err());
        // Lone surrogates (as Python's json.dumps writes them) read as U+FFFD; pairs and other
        // escapes as they are.
        let cases: [(&[u8], &str); 5] = [
            (br#"{"text": "ok \udc80 x"}"#, "ok \u{FFFD} x"),
            (br#"{"text": "\ud83d\ude00\ud800"}"#, "\u{1F600}\u{FFFD}"),
            (
                br#"{"text": "\ud800\ud800\\udc00"}"#,
                "\u{FFFD}\u{FFFD}\\udc00",
            ),
            (br#"{"x": "\udfff", "text": "a\\"}"#, "a\\"),
            (br#"{"text": "\udbff"}"#, "\u{FFFD}"),
        ];
        for (line, want) in cases {
            assert_eq!(parse_json_field(line, "text").unwrap(), want);
        }
        assert!(parse_json_field(br#"{"text": "\ud800" x"#, "text").is_err());
        // As Python's json.loads: the last of a repeated field, NaN and infinities as values
        // (not inside strings), and a byte order mark first.
        let python: [(&[u8], &str); 6] = [
            (br#"{"text": 1, "text": "last"}"#, "last"),
            (br#"{"text": "first", "text": "last"}"#, "last"),
            (
                br#"{"s": NaN, "t": [Infinity, -Infinity], "text": "NaN \"Infinity\""}"#,
                "NaN \"Infinity\"",
            ),
            (br#"{"s": NaN, "text": "\udc80 \\"}"#, "\u{FFFD} \\"),
            (b"\xEF\xBB\xBF{\"text\": \"bom\"}", "bom"),
            (br#"{"text": "a\"NaN"}"#, "a\"NaN"),
        ];
        for (line, want) in python {
            assert_eq!(parse_json_field(line, "text").unwrap(), want);
        }
        for (line, err) in [
            (
                &br#"{"text": "x", "text": 2}"#[..],
                "expected a string, got a number",
            ),
            (br#"{"text": NaN}"#, "expected a string, got a number"),
            (br#"{"text": Nan}"#, "invalid JSON"),
            (br#"{"text": "x"} NaN"#, "invalid JSON"),
        ] {
            let got = parse_json_field(line, "text").unwrap_err();
            assert!(got.contains(err), "{got}");
        }
    }

    #[test]
    fn reads_formats_and_reports_lines() {
        let d = tmpdir("formats");
        std::fs::write(d.join("a.txt"), "hello\nworld").unwrap();
        std::fs::write(
            d.join("b.jsonl"),
            "{\"text\": \"one\"}\n\n{\"text\": \"two\"}\n",
        )
        .unwrap();
        let mut gz = flate2::write::GzEncoder::new(
            File::create(d.join("c.jsonl.gz")).unwrap(),
            Default::default(),
        );
        gz.write_all(b"{\"text\": \"three\"}\n{\"id\": 1}\n")
            .unwrap();
        gz.finish().unwrap();
        std::fs::write(
            d.join("d.txt.zst"),
            zstd::encode_all(&b"four"[..], 3).unwrap(),
        )
        .unwrap();
        std::fs::write(d.join(".hidden"), "no").unwrap();
        let inputs = [d.to_str().unwrap()];
        let docs: Vec<_> = Reader::from_inputs(&inputs, InputOptions::default())
            .unwrap()
            .collect();
        let texts: Vec<_> = docs
            .iter()
            .take(4)
            .map(|d| String::from_utf8(d.as_ref().unwrap().text.clone()).unwrap())
            .collect();
        assert_eq!(texts, ["hello\nworld", "one", "two", "three"]);
        let err = docs[4].as_ref().unwrap_err().to_string();
        assert!(
            err.contains("c.jsonl.gz:2") && err.contains("missing field"),
            "{err}"
        );
        assert_eq!(docs.len(), 5, "fail stops");
        let line = docs[2].as_ref().unwrap().line;
        assert_eq!(line, Some(3));

        let opts = InputOptions {
            on_error: OnError::Skip,
            ..Default::default()
        };
        let mut r = Reader::from_inputs(&inputs, opts).unwrap();
        let texts: Vec<_> = r
            .by_ref()
            .map(|d| String::from_utf8(d.unwrap().text).unwrap())
            .collect();
        assert_eq!(texts, ["hello\nworld", "one", "two", "three", "four"]);
        assert_eq!(r.stats().skipped.load(Ordering::Relaxed), 1);
        assert!(r.stats().errors()[0].contains(":2: missing field"));

        let g = format!("{}/*.jsonl*", d.display());
        assert_eq!(expand(&[g]).unwrap().len(), 2);
        assert!(expand(&[format!("{}/nope*", d.display())]).is_err());
        assert!(expand(&[d.join("missing.txt").to_str().unwrap()]).is_err());
    }

    #[test]
    fn streamed_blocks_cut_at_safe_points_only() {
        let d = tmpdir("blocks");
        let mut text = String::new();
        for i in 0..2000 {
            text.push_str(&format!("line {i} ok.\n  indented {i}\nword\n\n"));
        }
        std::fs::write(d.join("big.txt"), &text).unwrap();
        for bs in [1usize, 7, 100, 4096, 1 << 20] {
            let opts = InputOptions {
                block_size: Some(bs),
                ..Default::default()
            };
            let docs: Vec<Document> = Reader::new(vec![d.join("big.txt")], opts)
                .map(|d| d.unwrap())
                .collect();
            let joined: Vec<u8> = docs.iter().flat_map(|d| d.text.clone()).collect();
            assert_eq!(joined, text.as_bytes());
            assert!(docs.last().unwrap().last_part);
            let mut off = 0;
            for (i, doc) in docs.iter().enumerate() {
                assert_eq!(doc.part as usize, i);
                off += doc.text.len();
                if off < text.len() {
                    assert!(
                        is_safe_boundary(text.as_bytes(), off),
                        "bs {bs} cut at {off}"
                    );
                }
            }
        }
    }

    #[test]
    fn safe_boundaries_split_exactly() {
        use crate::pretokenize::{Pretokenizer, CL100K_PATTERN, O200K_PATTERN, R50K_PATTERN};
        let text = "a.\nb x\nC ?\nd 1\ne '\nf\n\ng\r\nh!!\ni \nj";
        for pat in [R50K_PATTERN, CL100K_PATTERN, O200K_PATTERN] {
            let p = Pretokenizer::regex(pat).unwrap();
            let whole = p.pieces(text).unwrap();
            let mut parts = Vec::new();
            let mut start = 0;
            while let Some(c) = safe_boundary(text.as_bytes(), start + 1) {
                parts.extend(p.pieces(&text[start..c]).unwrap());
                start = c;
            }
            parts.extend(p.pieces(&text[start..]).unwrap());
            assert_eq!(whole, parts, "{pat}");
        }
    }
}
