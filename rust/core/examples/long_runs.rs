//! Cost of long single-character runs: `cargo run --release -p bytepair-core --example long_runs [encoding]`.
//! Prints, per unit, the time of a 1M-character run over its 100k-character run (best of 3).
use bytepair_core::{pretokenize, vocab, CoreBpe};
use std::time::Instant;

fn best(core: &CoreBpe, text: &str) -> f64 {
    (0..3)
        .map(|_| {
            let t = Instant::now();
            std::hint::black_box(core.encode_ordinary(text).unwrap());
            t.elapsed().as_secs_f64()
        })
        .fold(f64::MAX, f64::min)
}

fn main() {
    let name = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "cl100k_base".into());
    let rank_file = if name.starts_with("o200k") {
        "o200k_base"
    } else {
        "cl100k_base"
    };
    let core = CoreBpe::new(
        vocab::bundled(rank_file).unwrap(),
        pretokenize::builtin_pattern(&name).unwrap(),
        vec![],
    )
    .unwrap();
    let only = std::env::args().nth(2);
    for unit in ["a", " ", "\t", "\n", "\r\n", "7", "!", "中", "😀", "\u{a0}"] {
        if only.as_deref().is_some_and(|o| o != unit) {
            continue;
        }
        let small = best(&core, &unit.repeat(100_000));
        let big = best(&core, &unit.repeat(1_000_000));
        println!(
            "{unit:?}: 100k {:.1} ms, 1M {:.1} ms, ratio {:.1}x",
            small * 1e3,
            big * 1e3,
            big / small
        );
    }
}
