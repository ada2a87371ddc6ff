//! Quick throughput breakdown: `cargo run --release -p bytepair-core --example encode_speed -- FILE [encoding] [max-bytes]`.
//!
//! Environment knobs:
//! - `ENCODE_REPS=N`, `LEX_REPS=N`: repeat the encode or the lexing pass (for profilers).
//! - `BUCKETS=1`: time per piece length (1, 2-7, 8-15, 16-31, 32-127, 128+ bytes), pieces of a
//!   bucket encoded together with warm tables; the ns are per byte of the whole text.
//! - `THRASH_MB=M`: also time encoding in turns of 16 documents with M MB of other memory written
//!   before each turn (as another library's turn would): the regime of `bytepair bench`, where
//!   the tables start cold. `THRASH_MODE=lex` or `whole` times only the lexer, or the lexer and
//!   whole-piece lookups, in that regime. `THRASH_WARM_CODE=1` encodes a short text after each
//!   write, so that the turn starts with the code (and few table entries) cached.
//! - `PRELEXED=1`: also times encoding from pieces stored beforehand, against full encodes in
//!   turn: how much a free lexer could give.
//! - `MERGE_HOT=1` (with `BUCKETS=1`): the merge time of the 8-31-byte pieces that need one, in
//!   text order and repeated on the same piece (all in L1): how much of a merge waits for memory.
use bytepair_core::{pretokenize, vocab, CoreBpe};
use std::time::Instant;

/// A short text that runs most of the encoder's code (`THRASH_WARM_CODE`).
const WARM_TEXT: &str = "The quick brown fox's jumps: 1234 over the lazy dog!\n  def f(x):\n\treturn x  # ok\r\n Привет мир, 中文";

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let text = std::fs::read(&args[1]).unwrap();
    let limit: usize = args.get(3).and_then(|s| s.parse().ok()).unwrap_or(8 << 20);
    let text = String::from_utf8_lossy(&text[..text.len().min(limit)]).into_owned();
    let name = args.get(2).map(String::as_str).unwrap_or("cl100k_base");
    let rank_file = if name == "o200k_base" {
        "o200k_base"
    } else {
        "cl100k_base"
    };
    let core = CoreBpe::new(
        vocab::bundled(rank_file).unwrap(),
        pretokenize::builtin_pattern(name).unwrap(),
        vec![],
    )
    .unwrap();
    let mb = text.len() as f64 / 1e6;
    let mut docs = Vec::new();
    let mut i = 0;
    while i < text.len() {
        let mut j = (i + 4096).min(text.len());
        while !text.is_char_boundary(j) {
            j += 1;
        }
        docs.push(&text[i..j]);
        i = j;
    }
    // LEX_REPS=N repeats the lexing pass (for profilers); the figure is per pass.
    let lex_reps: usize = std::env::var("LEX_REPS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1)
        .max(1);
    let t = Instant::now();
    let mut n = 0;
    for _ in 0..lex_reps {
        n = 0;
        for d in &docs {
            core.pretokenizer().split(d, |_, _| n += 1).unwrap();
        }
    }
    let lex = t.elapsed().as_secs_f64() / lex_reps as f64;
    // ENCODE_REPS=N repeats the encode pass (for profilers); the figure is per pass.
    let reps: usize = std::env::var("ENCODE_REPS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1);
    let t = Instant::now();
    let mut toks = 0;
    for _ in 0..reps {
        toks = 0;
        for d in &docs {
            toks += core.encode_ordinary(d).unwrap().len();
        }
    }
    let enc = t.elapsed().as_secs_f64() / reps as f64;
    // PRELEXED=1: the pieces of every document stored first, then only the piece encoding timed
    // (the bound on what a faster lexer could give), interleaved with full encodes.
    if std::env::var_os("PRELEXED").is_some() {
        let pieces: Vec<Vec<(u32, u32)>> = docs
            .iter()
            .map(|d| {
                let mut v = Vec::new();
                core.pretokenizer()
                    .split(d, |s, e| v.push((s as u32, e as u32)))
                    .unwrap();
                v
            })
            .collect();
        let (mut full, mut pre) = (0.0, 0.0);
        let mut out = Vec::new();
        for _ in 0..reps.max(3) {
            let t = Instant::now();
            for d in &docs {
                std::hint::black_box(core.encode_ordinary(d).unwrap());
            }
            full += t.elapsed().as_secs_f64();
            let t = Instant::now();
            for (d, ps) in docs.iter().zip(&pieces) {
                out.clear();
                for &(s, e) in ps {
                    bytepair_core::bpe::encode_piece(
                        core.vocab(),
                        d.as_bytes(),
                        s as usize,
                        e as usize,
                        &mut out,
                    );
                }
                std::hint::black_box(&out);
            }
            pre += t.elapsed().as_secs_f64();
        }
        println!(
            "full {:.1} MB/s, pre-lexed {:.1} MB/s",
            mb * reps.max(3) as f64 / full,
            mb * reps.max(3) as f64 / pre
        );
    }
    // BUCKETS=1: time spent per piece length (whole lookups and merges, warm).
    if std::env::var_os("BUCKETS").is_some() {
        let b = text.as_bytes();
        let mut by: Vec<Vec<(usize, usize)>> = vec![Vec::new(); 6];
        let base = text.as_ptr() as usize;
        for d in &docs {
            let off = d.as_ptr() as usize - base;
            core.pretokenizer()
                .split(d, |s, e| {
                    let k = match e - s {
                        1 => 0,
                        2..=7 => 1,
                        8..=15 => 2,
                        16..=31 => 3,
                        32..=127 => 4,
                        _ => 5,
                    };
                    by[k].push((off + s, off + e));
                })
                .unwrap();
        }
        let mut out = Vec::new();
        if let Ok(mode) = std::env::var("MERGE_HOT") {
            // The pieces of 8 to 31 bytes that need merging, each merged once in text order
            // (tables as warm as the text leaves them), then each three times in a row (the
            // repeats find everything in L1): how much of a merge is waiting for memory.
            let v = core.vocab();
            let ps: Vec<(usize, usize)> = by[2]
                .iter()
                .chain(&by[3])
                .copied()
                .filter(|&(s, e)| {
                    out.clear();
                    bytepair_core::bpe::encode_piece(v, b, s, e, &mut out);
                    out.len() > 1
                })
                .collect();
            let mut merge = |s: usize, e: usize| {
                out.clear();
                bytepair_core::bpe::merge(v, &b[s..e], &mut out);
            };
            // MERGE_HOT=profile: ten rounds instead of two, long enough for a profiler.
            let rounds = if mode == "profile" { 10 } else { 2 };
            for _ in 0..rounds {
                let t = Instant::now();
                for &(s, e) in &ps {
                    merge(s, e);
                }
                let once = t.elapsed().as_secs_f64();
                let t = Instant::now();
                for &(s, e) in &ps {
                    for _ in 0..3 {
                        merge(s, e);
                    }
                }
                let thrice = t.elapsed().as_secs_f64();
                let per = |x: f64| x * 1e9 / ps.len() as f64;
                println!(
                    "{} merged pieces of 8-31 bytes: {:.1} ns each in text order, {:.1} ns repeated",
                    ps.len(),
                    per(once),
                    per((thrice - once) / 2.0)
                );
            }
        }
        for (k, ps) in by.iter().enumerate() {
            let t = Instant::now();
            let (mut bytes, mut merged) = (0, 0);
            for _ in 0..3 {
                for &(s, e) in ps {
                    out.clear();
                    bytepair_core::bpe::encode_piece(core.vocab(), b, s, e, &mut out);
                    merged += (out.len() > 1) as usize;
                    bytes += e - s;
                }
            }
            let dt = t.elapsed().as_secs_f64() / 3.0;
            println!(
                "bucket {k}: {} pieces ({} merged), {:.2} MB, {:.2} ms = {:.2} ns per text byte",
                ps.len(),
                merged / 3,
                bytes as f64 / 3e6,
                dt * 1e3,
                dt * 1e9 / text.len() as f64
            );
        }
    }
    // THRASH_MB=M: between turns of 16 documents, write M MB of other memory (as another
    // library's turn would), timing only the encoding: the regime of `bytepair bench`.
    let thrash: usize = std::env::var("THRASH_MB")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    if thrash > 0 {
        let mut junk = vec![1u64; thrash << 17];
        let mut cold = 0.0;
        let mode = std::env::var("THRASH_MODE").unwrap_or_default();
        let warm_code = std::env::var_os("THRASH_WARM_CODE").is_some();
        for turn in docs.chunks(16) {
            for (i, x) in junk.iter_mut().enumerate() {
                *x = x.wrapping_mul(3).wrapping_add(i as u64);
            }
            std::hint::black_box(&junk);
            if warm_code {
                // Runs the encoder's code paths on a short text, touching few table entries.
                std::hint::black_box(core.encode_ordinary(WARM_TEXT).unwrap());
            }
            let t = Instant::now();
            for d in turn {
                match mode.as_str() {
                    "lex" => {
                        let mut n = 0;
                        core.pretokenizer().split(d, |s, e| n += s ^ e).unwrap();
                        std::hint::black_box(n);
                    }
                    "whole" => {
                        let mut n = 0;
                        let b = d.as_bytes();
                        core.pretokenizer()
                            .split(d, |s, e| n += core.vocab().get(&b[s..e]).unwrap_or(0))
                            .unwrap();
                        std::hint::black_box(n);
                    }
                    _ => {
                        std::hint::black_box(core.encode_ordinary(d).unwrap());
                    }
                }
            }
            cold += t.elapsed().as_secs_f64();
        }
        println!(
            "{name}: cold turns (after {thrash} MB written) {:.1} MB/s",
            mb / cold
        );
    }
    println!(
        "{name}: {n} pieces, {toks} tokens; lex {:.1} MB/s, full encode {:.1} MB/s",
        mb / lex,
        mb / enc
    );
}
