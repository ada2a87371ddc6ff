//! Property tests: every fast path against its generic counterpart.
//! - hand-written lexers vs fancy-regex on the same pattern;
//! - the stack-array merge vs the heap merge vs a textbook reference, on piece lengths just below
//!   and above every size switch.
use bytepair_core::bpe::{
    merge, merge_chunked, merge_chunked_from, merge_count, merge_heap, merge_scan, reference_merge,
    CHUNK, HEAP_THRESHOLD,
};
use bytepair_core::pretokenize::{Pretokenizer, CL100K_PATTERN, O200K_PATTERN, R50K_PATTERN};
use bytepair_core::vocab::{bundled, Vocab};
use proptest::prelude::*;
use std::sync::OnceLock;

/// Characters chosen to hit every branch of the lexers: each class, case variants, marks,
/// contractions, CR/LF, slashes, exotic whitespace and digits.
const ALPHABET: &[&str] = &[
    "a",
    "b",
    "Z",
    "é",
    "ß",
    "ǅ",
    "ʰ",
    "中",
    "の",
    "\u{301}",
    "\u{5b0}",
    "1",
    "٣",
    "Ⅷ",
    "²",
    " ",
    " ",
    " ",
    "\t",
    "\n",
    "\r",
    "\r\n",
    "\u{a0}",
    "\u{3000}",
    "\u{85}",
    "\u{2028}",
    "'",
    "'s",
    "'T",
    "'ll",
    "'VE",
    "'re",
    "'ſ",
    "/",
    "!",
    "?",
    ".",
    "😀",
    "👍🏽",
    "\u{200d}",
    "_",
    "-",
    "\"",
    "ſ",
    "K",
    "\u{0}",
    "\u{7f}",
    "\u{10ffff}",
    "\u{e000}",
    // Long ASCII runs, so the 16-byte SIMD spans cross chunk edges and stop at every offset.
    "abcdefghijklmnopq",
    "HELLOWORLDABCDEFG",
    "Quickbrownfoxjumps",
    "        ",
    "0123456789",
];

/// `n` cases, times `BYTEPAIR_FUZZ_SCALE` when set (`.ci/fuzz`, the long fuzzing job).
fn cases(n: u32) -> u32 {
    let scale = std::env::var("BYTEPAIR_FUZZ_SCALE")
        .ok()
        .and_then(|s| s.parse::<u32>().ok())
        .unwrap_or(1)
        .max(1);
    n.saturating_mul(scale)
}

fn text_strategy() -> impl Strategy<Value = String> {
    prop::collection::vec(prop::sample::select(ALPHABET), 0..60).prop_map(|v| v.concat())
}

fn pretokenizers() -> &'static Vec<(Pretokenizer, Pretokenizer)> {
    static P: OnceLock<Vec<(Pretokenizer, Pretokenizer)>> = OnceLock::new();
    P.get_or_init(|| {
        [R50K_PATTERN, CL100K_PATTERN, O200K_PATTERN]
            .iter()
            .map(|p| {
                (
                    Pretokenizer::new(p).unwrap(),
                    Pretokenizer::regex(p).unwrap(),
                )
            })
            .collect()
    })
}

fn vocabs() -> &'static Vec<Vocab> {
    static V: OnceLock<Vec<Vocab>> = OnceLock::new();
    V.get_or_init(|| {
        ["r50k_base", "cl100k_base", "o200k_base"]
            .iter()
            .map(|n| bundled(n).unwrap())
            .collect()
    })
}

/// Every built-in pattern's hand-written lexer gives the regex's pieces on `text`.
fn lexers_agree(text: &str) -> Result<(), TestCaseError> {
    for (fast, slow) in pretokenizers() {
        prop_assert_eq!(fast.pieces(text).unwrap(), slow.pieces(text).unwrap());
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(3000), ..ProptestConfig::default() })]

    #[test]
    fn lexers_equal_regex(text in text_strategy()) {
        lexers_agree(&text)?;
    }
}

/// Words and what ends or splits a run of them, for the lexers' 64-byte word runs: spaces
/// before letters, case changes, contractions, letters and marks beyond ASCII right after ASCII
/// letters, punctuation, digits, CR/LF and other whitespace.
const WORDISH: &[&str] = &[
    " the",
    " quick",
    "brown",
    " Fox",
    "JUMPS",
    " oVer",
    "Lazy",
    " a",
    "x",
    "Q",
    " I",
    "abcdefghij",
    " HTTPServer",
    "helloWorld",
    "ABCdefGHI",
    " MixedCASEword",
    "'s",
    "'T",
    "'ll",
    "'VE",
    "'",
    "é",
    "ß",
    "É",
    "\u{301}",
    "中",
    "ǅ",
    "ʰ",
    " é",
    "1",
    "42",
    " ",
    "  ",
    "\t",
    "\n",
    "\r\n",
    ",",
    ".",
    "!",
    "(",
    "-",
    "_",
    "/",
    "\"",
    "\u{b}",
    "\u{7f}",
    "\u{a0}",
    "😀",
    // Two-byte letters and what ends or splits their words: Cyrillic and Greek words and
    // capitals, Latin-1 letters, a Hebrew letter (\p{Lo}), a modifier letter, marks, and
    // two-byte characters that are no letter (guillemets, NBSP, NEL, soft hyphen, ², ×, µ is
    // a letter, an Arabic-Indic digit, an Arabic comma).
    " слово",
    "Привет",
    "мир",
    " ВОТ",
    "ёЁ",
    " λόγος",
    "Ω",
    " über",
    "Ünïcödé",
    "ñ",
    "א",
    " שלום",
    "ˈ",
    "\u{308}",
    "\u{483}",
    "«",
    "»",
    "\u{85}",
    "\u{ad}",
    "²",
    "×",
    "µ",
    "\u{660}",
    "\u{60c}",
];

fn wordish_strategy() -> impl Strategy<Value = String> {
    prop::collection::vec(prop::sample::select(WORDISH), 0..160).prop_map(|v| v.concat())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(3000), ..ProptestConfig::default() })]

    /// Runs of words longer than the lexers' 64-byte window, broken at every offset.
    #[test]
    fn lexers_equal_regex_on_word_runs(text in wordish_strategy()) {
        lexers_agree(&text)?;
    }
}

/// Code: punctuation runs, indentation and blank lines, digit groups, slashes after line ends,
/// quotes and apostrophes between words, and the bytes of 0x80 or more that may continue a
/// punctuation, whitespace or digit run (a symbol, NBSP, a line separator, an Arabic-Indic
/// digit, a mark, letters): the pieces that break the lexers' 64-byte word runs in code, and
/// the runs that start again after them.
const CODEISH: &[&str] = &[
    " self",
    "x",
    "_name",
    "Foo",
    "def",
    ",",
    " =",
    " ==",
    ".",
    "._",
    ":",
    ":\n",
    "):\n",
    ")\n",
    ")\n\n",
    "(",
    "((",
    ")",
    "[",
    "]",
    "{}",
    " #",
    " '",
    "'",
    "\"",
    "\"\"\"",
    "'s",
    "'ll",
    "->",
    "::",
    "/",
    "//",
    "\n/",
    " /",
    "*",
    "\n",
    "\n\n",
    "\r\n",
    "\r",
    "    ",
    "        ",
    "\n        ",
    "\n    \n",
    " ",
    "  ",
    "\t",
    "\t\t",
    "\u{b}",
    "\u{c}",
    "\u{1}",
    "\u{1f}",
    "\u{7f}",
    "0",
    "12",
    "123",
    "1234567",
    " 42",
    "€",
    "\u{a0}",
    " \u{a0}",
    "\u{2028}",
    "\u{3000}",
    "\u{85}",
    "\u{660}",
    "\u{663}\u{664}",
    "\u{301}",
    "é",
    "я",
    "中",
    "😀",
    "«",
    "—",
];

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(3000), ..ProptestConfig::default() })]

    /// Lines of code longer than the lexers' 64-byte window, broken at every offset.
    #[test]
    fn lexers_equal_regex_on_code(text in concat_of(CODEISH, 200)) {
        lexers_agree(&text)?;
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(300), ..ProptestConfig::default() })]

    #[test]
    fn merges_agree_around_threshold(
        text in text_strategy(),
        len in prop::sample::select(vec![2usize, 3, 7, 8, 9, 15, 16, 17, 31, 32, 33, HEAP_THRESHOLD - 2, HEAP_THRESHOLD - 1, HEAP_THRESHOLD, HEAP_THRESHOLD + 1, 200]),
    ) {
        let mut bytes = text.into_bytes();
        if bytes.is_empty() {
            bytes.push(b'x');
        }
        let piece: Vec<u8> = bytes.iter().cycle().take(len).copied().collect();
        for v in vocabs() {
            let want = reference_merge(v, &piece);
            let mut heap = Vec::new();
            merge_heap(v, &piece, &mut heap);
            prop_assert_eq!(&heap, &want);
            if piece.len() < HEAP_THRESHOLD {
                let mut scan = Vec::new();
                merge_scan(v, &piece, &mut scan);
                prop_assert_eq!(&scan, &want);
            }
            let mut any = Vec::new();
            merge(v, &piece, &mut any);
            prop_assert_eq!(&any, &want);
        }
    }
}

/// Pieces made of few distinct units, so that chunk edges land inside tokens and between
/// tokens that merge across them: the chunked merge must still equal the heap merge.
fn repetitive_piece() -> impl Strategy<Value = Vec<u8>> {
    let units = prop::collection::vec(
        prop::sample::select(vec![
            "a", "b", "ab", " ", "  ", "\t", "\n", "\r\n", "=", "-", "!", "0", "中", "😀",
            "\u{a0}", "e\u{301}", "the", " the", "ing", "ア",
        ]),
        1..4,
    );
    (units, prop::collection::vec(0usize..4, 1..400)).prop_map(|(units, picks)| {
        picks
            .iter()
            .map(|&i| units[i % units.len()])
            .collect::<String>()
            .into_bytes()
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(400), ..ProptestConfig::default() })]

    #[test]
    fn chunked_merge_equals_heap_merge(
        piece in repetitive_piece(),
        chunk in prop::sample::select(vec![2usize, 3, 5, 8, 13, 31, CHUNK, 100]),
    ) {
        for v in vocabs() {
            let mut heap = Vec::new();
            merge_heap(v, &piece, &mut heap);
            let mut chunked = Vec::new();
            merge_chunked(v, &piece, &mut chunked, chunk);
            prop_assert_eq!(&chunked, &heap, "chunk {}", chunk);
            let mut scratch = Vec::new();
            prop_assert_eq!(merge_count(v, &piece, &mut scratch), heap.len());
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(300), ..ProptestConfig::default() })]

    /// A chunked merge continued from the tokens another piece's merge has over their common
    /// start (as `encode_with_unstable` does for its candidates) equals the merge from scratch.
    #[test]
    fn chunked_merge_continued_from_another_piece_equals_heap_merge(
        base in repetitive_piece(),
        cut in 0.0f64..1.0,
        tail in repetitive_piece(),
        tail_len in 0usize..40,
        chunk in prop::sample::select(vec![3usize, 13, CHUNK]),
    ) {
        let at = (base.len() as f64 * cut) as usize;
        let piece = [&base[..at], &tail[..tail_len.min(tail.len())]].concat();
        let shared = base.iter().zip(&piece).take_while(|(a, b)| a == b).count();
        for v in vocabs() {
            let mut expected = Vec::new();
            if piece.len() < 2 {
                merge(v, &piece, &mut expected); // the heap merge takes two bytes or more
            } else {
                merge_heap(v, &piece, &mut expected);
            }
            let mut tokens = Vec::new();
            merge_heap(v, &base, &mut tokens);
            let mut ends = Vec::new();
            let mut end = 0;
            for &t in &tokens {
                end += v.token(t).unwrap().len();
                if end > shared {
                    break;
                }
                ends.push(end);
            }
            let mut out = vec![7, 7]; // tokens of earlier pieces stay as they are
            out.extend_from_slice(&tokens[..ends.len()]);
            merge_chunked_from(v, &piece, &mut out, 2, &mut ends, chunk, None);
            prop_assert_eq!(&out[..2], &[7, 7]);
            prop_assert_eq!(&out[2..], &expected[..], "cut at {} of {}", at, base.len());
        }
    }
}

#[test]
fn chunked_merge_equals_heap_merge_on_long_runs() {
    for v in vocabs() {
        for unit in [
            "a", " ", "\t", "\n", "\r\n", "7", "!", "中", "😀", "\u{a0}", "ab", " a",
        ] {
            for reps in [1000usize, 4099] {
                let piece = unit.repeat(reps).into_bytes();
                let mut heap = Vec::new();
                merge_heap(v, &piece, &mut heap);
                for chunk in [7, CHUNK] {
                    let mut chunked = Vec::new();
                    merge_chunked(v, &piece, &mut chunked, chunk);
                    assert_eq!(chunked, heap, "{unit:?} x {reps}, chunk {chunk}");
                }
                let mut scratch = Vec::new();
                assert_eq!(
                    merge_count(v, &piece, &mut scratch),
                    heap.len(),
                    "{unit:?} x {reps}"
                );
            }
        }
    }
}

/// Real text with everything but letters removed: long pieces (hundreds of kilobytes) with the
/// token structure of real words, in every script of the shared corpus. Skipped without it.
#[test]
fn chunked_merge_equals_heap_merge_on_squeezed_corpus_text() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/corpus");
    for name in ["en.txt", "code.txt", "multi.txt"] {
        let Ok(text) = std::fs::read_to_string(dir.join(name)) else {
            eprintln!("skipped: {name} not found under {}", dir.display());
            continue;
        };
        let squeezed: String = text
            .chars()
            .filter(|c| c.is_alphabetic())
            .take(100_000)
            .collect();
        for v in vocabs() {
            let (mut heap, mut chunked) = (Vec::new(), Vec::new());
            merge_heap(v, squeezed.as_bytes(), &mut heap);
            merge_chunked(v, squeezed.as_bytes(), &mut chunked, CHUNK);
            assert!(chunked == heap, "{name}");
            let mut scratch = Vec::new();
            assert_eq!(
                merge_count(v, squeezed.as_bytes(), &mut scratch),
                heap.len(),
                "{name}"
            );
        }
    }
}

/// Letters of many scripts (2, 3 and 4 bytes in UTF-8), with the ASCII, spaces and punctuation
/// they sit next to: the merges that start from whole characters (`bytepair_core::chars`) must
/// give exactly the byte-level merges.
const SCRIPTS: &[&str] = &[
    "а", "о", "е", "и", "н", "т", "с", "р", "в", "л", "к", "м", "д", "п", "у", "я", "ы", "ь", "ж",
    "щ", "ё", "А", "П", "Я", "і", "ї", "є", "α", "ο", "ι", "ε", "τ", "Ω", "ά", "ب", "ا", "ل", "م",
    "י", "ו", "ה", "ש", "क", "ा", "र", "्", "न", "ก", "า", "ร", "中", "国", "的", "人", "是", "一",
    "の", "に", "は", "を", "ア", "ン", "ー", "한", "국", "어", "é", "ü", "ñ", "ç", "ł", "ő", "ß",
    "😀", "€", "—", "“", "”", "…", "\u{a0}", "a", "e", "t", "s", "T", " ", ",", ".", "-", "'", "1",
];

/// The scan merge (which starts from units where that is exact) against the textbook merge from
/// bytes, on every piece of `text` under every bundled pattern, and on `text` as one piece.
fn scan_equals_reference_on_pieces(text: &str) -> Result<(), TestCaseError> {
    let lexers = pretokenizers();
    for (v, (lexer, _)) in vocabs().iter().zip(lexers) {
        let mut pieces = lexer.pieces(text).unwrap();
        pieces.push(text);
        for piece in pieces {
            let p = piece.as_bytes();
            if p.len() < 2 || p.len() >= HEAP_THRESHOLD {
                continue;
            }
            let want = reference_merge(v, p);
            let mut scan = Vec::new();
            merge_scan(v, p, &mut scan);
            prop_assert_eq!(&scan, &want, "{:?}", piece);
        }
    }
    Ok(())
}

/// Texts of up to `max` of `parts`, concatenated.
fn concat_of(parts: &'static [&'static str], max: usize) -> impl Strategy<Value = String> {
    prop::collection::vec(prop::sample::select(parts), 0..max).prop_map(|v| v.concat())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(1500), ..ProptestConfig::default() })]

    #[test]
    fn merges_from_characters_equal_byte_level_merges(text in concat_of(SCRIPTS, 40)) {
        scan_equals_reference_on_pieces(&text)?;
    }
}

/// Fragments of English words and code, so that the ASCII pairs that may start merged
/// (`bytepair_core::chars`) meet every kind of neighbour: letters of both cases, digits, spaces,
/// punctuation, CR/LF.
const ASCII_BITS: &[&str] = &[
    "th", "he", "in", "er", "an", "re", "on", "at", "en", "nd", "ti", "es", "or", "te", "of", "ed",
    "is", "it", "al", "ar", "st", "to", "nt", "ng", "se", "ha", "as", "ou", "io", "le", "ve", "co",
    "me", "de", "hi", "ri", "ro", "ic", "ne", "ea", "ra", "ce", "ing", "tion", "the", "and", "a",
    "e", "i", "o", "u", "y", "s", "t", "x", "q", "z", "T", "S", "A", "I", "Th", "TH", "IN", "ER",
    " ", " ", "  ", "\n", "\r\n", "\t", ".", ",", "'", "\"", "(", ")", "_", "__", "-", "=", "==",
    ":", "::", "/", "//", "#", "{", "}", "[", "]", "0", "1", "9", "00", "42", "self", "def", "x_",
];

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(3000), ..ProptestConfig::default() })]

    /// Pairs of ASCII bytes start merged where that is exact: every piece (and the whole text,
    /// as one long piece) must still merge exactly as from single bytes.
    #[test]
    fn merges_from_ascii_pairs_equal_byte_level_merges(text in concat_of(ASCII_BITS, 30)) {
        scan_equals_reference_on_pieces(&text)?;
    }
}

/// The scan merge (which starts from ASCII pairs and whole characters where that is exact)
/// against the heap merge (which always starts from bytes) on every piece of samples of the
/// shared corpus's prose, code and multilingual text. Also checks that units did start merged, so
/// the comparison is not vacuous. Skipped without the corpus.
#[test]
fn merges_from_units_equal_heap_merges_on_corpus_pieces() {
    for name in ["en.txt", "code.txt", "multi.txt"] {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../../shared/corpus")
            .join(name);
        let Ok(text) = std::fs::read_to_string(&path) else {
            eprintln!("skipped: {} not found", path.display());
            continue;
        };
        units_equal_heap_merges(&text);
    }
}

fn units_equal_heap_merges(text: &str) {
    let lexers = pretokenizers();
    for (v, (lexer, _)) in vocabs().iter().zip(lexers) {
        let mut started_merged = 0usize;
        for part in 0..8 {
            let mut a = text.len() / 8 * part;
            while !text.is_char_boundary(a) {
                a += 1;
            }
            let mut b = (a + 150_000).min(text.len());
            while !text.is_char_boundary(b) {
                b += 1;
            }
            for piece in lexer.pieces(&text[a..b]).unwrap() {
                let p = piece.as_bytes();
                if p.len() < 2 || p.len() >= HEAP_THRESHOLD || v.get(p).is_some() {
                    continue;
                }
                started_merged += (0..p.len())
                    .filter(|&i| v.chars().at(p, i).is_some())
                    .count();
                let (mut scan, mut heap) = (Vec::new(), Vec::new());
                merge_scan(v, p, &mut scan);
                merge_heap(v, p, &mut heap);
                assert_eq!(scan, heap, "{piece:?}");
            }
        }
        assert!(started_merged > 10_000, "{started_merged}");
    }
}

/// The encoders of the three bundled patterns, built once.
fn encoders() -> &'static Vec<bytepair_core::CoreBpe> {
    static E: OnceLock<Vec<bytepair_core::CoreBpe>> = OnceLock::new();
    E.get_or_init(|| {
        ["r50k_base", "cl100k_base", "o200k_base"]
            .iter()
            .map(|n| {
                let pattern = bytepair_core::pretokenize::builtin_pattern(n).unwrap();
                bytepair_core::CoreBpe::new(bundled(n).unwrap(), pattern, vec![]).unwrap()
            })
            .collect()
    })
}

/// A whole encode (which copies the tokens of a piece met earlier in the same text) against each
/// piece merged on its own; also `count`, and the parallel encode with small chunks.
fn encode_equals_piecewise(text: &str) -> Result<(), TestCaseError> {
    use bytepair_core::encode::SpecialSet;
    for e in encoders() {
        let mut want = Vec::new();
        for piece in e.pretokenizer().pieces(text).unwrap() {
            want.extend(e.encode_single_piece(piece.as_bytes()).unwrap());
        }
        prop_assert_eq!(&e.encode_ordinary(text).unwrap(), &want);
        let none = SpecialSet::None;
        prop_assert_eq!(e.count(text, &none, &none).unwrap(), want.len());
        let pool = bytepair_core::parallel::pool(2);
        let par = e.encode_ordinary_parallel(text, &pool, 64).unwrap();
        prop_assert_eq!(&par, &want);
    }
    Ok(())
}

/// Words that need merging, some of them sharing the length and the first and last 8 bytes that
/// the memo of repeated pieces hashes (so that only the bytes between tell them apart), with
/// separators, so that pieces recur within a text.
const REPEATED: &[&str] = &[
    " unbelievably",
    " unbelievable",
    " antidisqqqqestablishment",
    " antidisrrrrestablishment",
    " antidisqqqrrestablishment",
    " antidisrrrqqestablishment",
    "xyzzyqwertplugh",
    "xyzzyqwerplugh",
    " Приветствую",
    " Приветствуем",
    " приветабствуйте",
    " приветбаствуйте",
    " 中文中中文中文",
    " 中文丁中文中文",
    " здравствуйте",
    "аааааааааааааааааааааааа",
    "ааааааааааааааааааааааааа",
    " 中文中文中文中文",
    "qqqq",
    "qqqqq",
    "zzzxzzz",
    "😀😀😀",
    " ",
    "\n",
    ".",
    ",",
    "123456",
];

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(600), ..ProptestConfig::default() })]

    #[test]
    fn repeated_pieces_encode_as_on_their_own(text in concat_of(REPEATED, 80)) {
        encode_equals_piecewise(&text)?;
    }
}

/// More distinct repeated pieces than the memo has slots, so that slots are taken over.
#[test]
fn many_repeated_pieces_encode_as_on_their_own() {
    let mut words = Vec::new();
    let mut x = 0x2545_f491_4f6c_dd1du64;
    for _ in 0..3000 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let len = 3 + (x % 20) as usize;
        let word: String = (0..len)
            .map(|i| (b'a' + ((x >> (3 * i)) % 26) as u8) as char)
            .collect();
        words.push(word);
    }
    let mut text = String::new();
    for round in 0..3 {
        for (i, w) in words.iter().enumerate() {
            if (i + round) % 3 != 0 {
                text.push(' ');
                text.push_str(w);
            }
        }
    }
    encode_equals_piecewise(&text).unwrap();
}
