//! Quick throughput breakdown: `cargo run --release -p bytepair-core --example encode_speed -- FILE [encoding] [max-bytes]`.
use bytepair_core::{pretokenize, vocab, CoreBpe};
use std::time::Instant;

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
    let t = Instant::now();
    let mut n = 0;
    for d in &docs {
        core.pretokenizer().split(d, |_, _| n += 1).unwrap();
    }
    let lex = t.elapsed().as_secs_f64();
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
    println!(
        "{name}: {n} pieces, {toks} tokens; lex {:.1} MB/s, full encode {:.1} MB/s",
        mb / lex,
        mb / enc
    );
}
