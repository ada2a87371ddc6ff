//! Byte-level BPE training: [`count`] (phase 1: distinct words of a corpus, with 64-bit counts)
//! and [`merge`] (phase 2: the merge loop).
//!
//! Ranks follow tiktoken's layout: bytes `0..=255` are ranks `0..=255`, merge `i` creates rank
//! `256 + i`, special tokens come after the last merge. Long-running calls take a progress
//! callback; it is called from the calling thread only, and an error it returns (e.g.
//! [`Error::Interrupted`] after Ctrl-C) stops the work and is returned.
pub mod alloc;
pub mod count;
pub mod merge;

use std::sync::atomic::Ordering;

pub use count::{CountOptions, Sorted, Splitter, WordCounts, WordTable};
pub use merge::{learn, learn_owned, MergeOptions, Merges};

use crate::error::{Error, Result};
use crate::input::{Document, Reader};

/// A progress report.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Progress {
    /// Counting: bytes read so far (compressed size for compressed files) out of `total`.
    Read {
        bytes: u64,
        total: Option<u64>,
        documents: u64,
    },
    /// Merging: `done` merges out of at most `total`.
    Merge { done: usize, total: usize },
}

/// The regex of a built-in encoding name, or `pattern` itself (`ValueError` for a bare word that
/// names no encoding).
pub fn resolve_pattern(pattern: &str) -> Result<&str> {
    if let Some(p) = crate::pretokenize::builtin_pattern(pattern) {
        return Ok(p);
    }
    // A bare word is a misspelt encoding name ("cl100k"), not a split pattern: as a regex it
    // would match only itself, and training would silently learn nothing.
    if !pattern.is_empty()
        && pattern
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_')
    {
        let names: Vec<&str> = crate::pretokenize::BUILTIN_PATTERNS
            .iter()
            .map(|&(n, _)| n)
            .collect();
        return Err(Error::Value(format!(
            "unknown encoding name {pattern:?}: pattern must be one of {}, or a regex",
            names.join(", ")
        )));
    }
    Ok(pattern)
}

/// The number of merges for a vocabulary of `vocab_size` with `n_specials` special tokens.
pub fn num_merges(vocab_size: usize, n_specials: usize) -> Result<usize> {
    let min = 256 + n_specials;
    if vocab_size < min {
        return Err(Error::Value(format!(
            "vocab_size must be at least 256 + the number of special tokens ({min}), got {vocab_size}"
        )));
    }
    Ok(vocab_size - min)
}

/// Bytes of text per batch handed to the counting threads.
pub const BATCH_BYTES: usize = 4 << 20;

/// Returns freed heap memory to the operating system (glibc keeps it otherwise), so that the
/// memory of one phase is not held through the next.
pub fn release_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        extern "C" {
            fn malloc_trim(pad: usize) -> i32;
        }
        // SAFETY: malloc_trim only releases free memory of the allocator.
        unsafe {
            malloc_trim(0);
        }
    }
}

/// Counts the documents of `reader` into `counts`. Reading (I/O, decompression, JSON) runs on
/// the calling thread, one batch ahead of the counting, which runs on its own thread and the
/// pool. The batches are read here so that their memory comes from the calling thread's heap:
/// on the main thread that is glibc's main arena, which `release_memory` hands back in full;
/// the arena of a helper thread would keep up to the trim threshold (tens of MiB) resident.
pub fn count_reader(
    counts: &mut WordCounts,
    mut reader: Reader,
    progress: &mut dyn FnMut(Progress) -> Result<()>,
) -> Result<()> {
    let stats = reader.stats();
    let total = Some(reader.total_bytes());
    let mut report = || {
        progress(Progress::Read {
            bytes: stats.bytes_read.load(Ordering::Relaxed),
            total,
            documents: stats.documents.load(Ordering::Relaxed),
        })
    };
    report()?;
    // The reader's error (or Ctrl-C seen by `report`) wins over the `Interrupted` it causes in
    // the counter.
    crate::parallel::pipeline(
        |rx: std::sync::mpsc::Receiver<Vec<Document>>| {
            for batch in rx {
                let docs: Vec<&[u8]> = batch.iter().map(|d| &d.text[..]).collect();
                counts.count_documents(&docs)?;
            }
            Ok(())
        },
        |feed| {
            // Read on a thread of its own, so that Ctrl-C is seen while a pipe waits for its
            // writer.
            let batches = crate::parallel::read_ahead(1, move |send| loop {
                let next = reader.next_batch(BATCH_BYTES, 1 << 16).transpose();
                let last = !matches!(next, Some(Ok(_)));
                if !next.is_some_and(send) || last {
                    return;
                }
            })?;
            while let Some(batch) = crate::parallel::recv_checking(&batches, &mut || feed.check())?
            {
                if !feed.send(batch?)? {
                    break; // the counter failed: its error is returned
                }
                feed.check()?;
            }
            Ok(())
        },
        &mut report,
        &|f| f(),
    )?
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::input::InputOptions;

    #[test]
    fn vocab_size_checks() {
        assert_eq!(num_merges(300, 2).unwrap(), 42);
        assert!(num_merges(257, 2).is_err());
    }

    #[test]
    fn streamed_file_counts_equal_whole() {
        let d = std::env::temp_dir().join(format!("bytepair-train-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        let mut text = String::new();
        for i in 0..5000 {
            text.push_str(&format!(
                "Line {i}: some words, more words!\n\tindent {}\nNext\n",
                i % 7
            ));
        }
        let f = d.join("a.txt");
        std::fs::write(&f, &text).unwrap();
        let pat = resolve_pattern("cl100k_base").unwrap();
        let mut whole = WordCounts::new(pat, vec![]).unwrap();
        whole.count_documents(&[&text]).unwrap();
        for bs in [None, Some(1000), Some(1 << 20)] {
            let mut c = WordCounts::new(pat, vec![]).unwrap();
            let opts = InputOptions {
                block_size: bs,
                ..Default::default()
            };
            let mut seen = 0;
            count_reader(&mut c, Reader::new(vec![f.clone()], opts), &mut |_| {
                seen += 1;
                Ok(())
            })
            .unwrap();
            assert!(seen >= 2);
            assert_eq!(c.sorted().unwrap(), whole.sorted().unwrap());
        }
        // An interrupt from the callback stops the work.
        let mut c = WordCounts::new(pat, vec![]).unwrap();
        let r = count_reader(
            &mut c,
            Reader::new(vec![f.clone()], InputOptions::default()),
            &mut |_| Err(Error::Interrupted),
        );
        assert!(matches!(r, Err(Error::Interrupted)));
        let _ = std::fs::remove_dir_all(&d);
    }
}
