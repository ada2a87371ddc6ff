//! Pre-tokenization: splitting text into the pieces that byte-pair merging works on.
//!
//! The split patterns of the built-in encodings run on hand-written lexers ([`lexer`]); any other
//! pattern runs on `fancy-regex`, which gives tiktoken's semantics exactly (tiktoken uses it too).
pub mod lexer;
pub mod unicode;

use crate::error::{Error, Result};
pub use lexer::Kind;

/// The r50k/p50k/gpt2 split pattern of tiktoken 0.14.
pub const R50K_PATTERN: &str =
    r"'(?:[sdmt]|ll|ve|re)| ?\p{L}++| ?\p{N}++| ?[^\s\p{L}\p{N}]++|\s++$|\s+(?!\S)|\s";
/// The cl100k_base split pattern of tiktoken 0.14.
pub const CL100K_PATTERN: &str = r"'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}++|\p{N}{1,3}+| ?[^\s\p{L}\p{N}]++[\r\n]*+|\s++$|\s*[\r\n]|\s+(?!\S)|\s";
/// The o200k_base split pattern of tiktoken 0.14.
pub const O200K_PATTERN: &str = concat!(
    r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?",
    "|",
    r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?",
    "|",
    r"\p{N}{1,3}",
    "|",
    r" ?[^\s\p{L}\p{N}]+[\r\n/]*",
    "|",
    r"\s*[\r\n]+",
    "|",
    r"\s+(?!\S)",
    "|",
    r"\s+"
);

/// The built-in encoding names and their split patterns.
pub const BUILTIN_PATTERNS: [(&str, &str); 7] = [
    ("gpt2", R50K_PATTERN),
    ("r50k_base", R50K_PATTERN),
    ("p50k_base", R50K_PATTERN),
    ("p50k_edit", R50K_PATTERN),
    ("cl100k_base", CL100K_PATTERN),
    ("o200k_base", O200K_PATTERN),
    ("o200k_harmony", O200K_PATTERN),
];

/// Resolves a pattern name (`"cl100k_base"`, `"gpt2"`, ...) to its regex string.
pub fn builtin_pattern(name: &str) -> Option<&'static str> {
    BUILTIN_PATTERNS
        .iter()
        .find_map(|&(n, p)| (n == name).then_some(p))
}

/// Bytes of text between two runs of the Ctrl-C poll in [`Pretokenizer::split`] (a fraction of
/// a millisecond of encoding).
pub const POLL_BYTES: usize = 64 << 10;

/// Whether the Ctrl-C poll installed on this thread asks to stop (kept out of the lexing loop).
#[cold]
#[inline(never)]
fn interrupted() -> bool {
    crate::parallel::interrupt::poll()
}

/// A compiled split pattern.
pub enum Pretokenizer {
    Native(Kind),
    Regex(Box<fancy_regex::Regex>),
}

impl Pretokenizer {
    /// Compiles `pattern`; the built-in patterns get a hand-written lexer.
    pub fn new(pattern: &str) -> Result<Self> {
        Ok(match pattern {
            R50K_PATTERN => Pretokenizer::Native(Kind::R50k),
            CL100K_PATTERN => Pretokenizer::Native(Kind::Cl100k),
            O200K_PATTERN => Pretokenizer::Native(Kind::O200k),
            _ => Self::regex(pattern)?,
        })
    }

    /// Compiles `pattern` with the generic regex engine, even for built-in patterns.
    ///
    /// With fancy-regex's default backtracking limit, as tiktoken builds its patterns: a match
    /// that backtracks past it fails here as it does there (a `ValueError`), instead of running
    /// a hundred times longer (where Ctrl-C cannot reach it) and splitting where tiktoken fails.
    pub fn regex(pattern: &str) -> Result<Self> {
        let re = fancy_regex::RegexBuilder::new(pattern)
            .build()
            .map_err(|e| Error::Pattern(e.to_string()))?;
        Ok(Pretokenizer::Regex(Box::new(re)))
    }

    /// Whether this pattern runs on a hand-written lexer.
    pub fn is_native(&self) -> bool {
        matches!(self, Pretokenizer::Native(_))
    }

    /// Calls `f(start, end)` with the byte range of each piece of `text`, in order (a custom
    /// pattern's empty matches included, as tiktoken takes them).
    ///
    /// Every [`POLL_BYTES`] of text it runs the Ctrl-C poll installed on this thread, if any
    /// ([`crate::parallel::interrupt`]), and returns [`Error::Interrupted`] when that asks to
    /// stop: a caller encoding a text of gigabytes can be interrupted.
    #[inline]
    pub fn split(&self, text: &str, mut f: impl FnMut(usize, usize)) -> Result<()> {
        match self {
            Pretokenizer::Native(kind) => {
                let mut poll_at = POLL_BYTES;
                let done = lexer::Lexer::new(*kind, text).each(|s, e| {
                    f(s, e);
                    if e >= poll_at {
                        poll_at = e + POLL_BYTES;
                        return !interrupted();
                    }
                    true
                });
                if !done {
                    return Err(Error::Interrupted);
                }
            }
            Pretokenizer::Regex(re) => {
                let mut poll_at = POLL_BYTES;
                for (i, m) in re.find_iter(text).enumerate() {
                    let m =
                        m.map_err(|e| Error::Value(format!("pattern failed on this text: {e}")))?;
                    // Empty matches too (a pattern such as `a*|...` has them): tiktoken encodes
                    // each as the empty token where the vocabulary has one.
                    f(m.start(), m.end());
                    // Also every 256 matches: a pattern may take long over each (backtracking).
                    if m.end() >= poll_at || i % 256 == 255 {
                        poll_at = m.end() + POLL_BYTES;
                        if interrupted() {
                            return Err(Error::Interrupted);
                        }
                    }
                }
            }
        }
        Ok(())
    }

    /// Like [`split`](Self::split) for the pieces of `text` that start in `from..to`, where
    /// `from` is a piece boundary. Returns the end of the last piece (`to` exactly when `to` is a
    /// piece boundary too). Only for hand-written lexers; `None` for regex patterns.
    pub fn split_range(
        &self,
        text: &str,
        from: usize,
        to: usize,
        mut f: impl FnMut(usize, usize),
    ) -> Option<usize> {
        let Pretokenizer::Native(kind) = self else {
            return None;
        };
        let mut end = from;
        for (s, e) in lexer::Lexer::starting_at(*kind, text, from) {
            if s >= to {
                break;
            }
            f(s, e);
            end = e;
        }
        Some(end)
    }

    /// The pieces of `text` as string slices.
    pub fn pieces<'t>(&self, text: &'t str) -> Result<Vec<&'t str>> {
        let mut v = Vec::new();
        self.split(text, |s, e| v.push(&text[s..e]))?;
        Ok(v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn both(pat: &str, text: &str) {
        let fast = Pretokenizer::new(pat).unwrap();
        assert!(fast.is_native());
        let slow = Pretokenizer::regex(pat).unwrap();
        assert_eq!(
            fast.pieces(text).unwrap(),
            slow.pieces(text).unwrap(),
            "text {text:?}"
        );
    }

    #[test]
    fn lexers_match_regex_on_traps() {
        let cases = [
            "Hello world",
            "  leading",
            "trailing  ",
            "a  b",
            "a \n\n b",
            "x\r\n\r\n  y",
            "it's I'LL we'Ve",
            "'ſ 'S",
            "12345 ١٢٣٤ 1a2",
            "\u{85}\u{a0}\u{3000}x",
            "HELLOworld helloWORLD ǅa",
            "e\u{301}\u{301}x",
            "\u{301}abc \u{301}ABC",
            "foo/bar//\n",
            "!!!\r\n",
            " !x",
            "日本語のテキスト",
            "😀😀 😀x",
            "\t\tx",
            "a\u{2028}b",
            "",
            " ",
            "\n",
            "don't 'tis",
            "ABCdef'S xyz'll",
            "#[derive(Debug)]\n    fn x() {}\n",
            "ǅungla Ǆ ǆ",
            "\u{1c89}\u{10d40}",
            "a\u{200d}b",
            "  \n \n  ",
            " \u{0}\u{1}",
        ];
        for p in [R50K_PATTERN, CL100K_PATTERN, O200K_PATTERN] {
            for t in cases {
                both(p, t);
            }
        }
    }

    /// Every two-byte character (which the word runs classify from bitmaps where the CPU can)
    /// inside, before, after and between words of ASCII, Cyrillic and Latin-1 letters of both
    /// cases, at two offsets, in texts long enough for the runs' 64-byte windows.
    #[test]
    fn lexers_match_regex_on_every_two_byte_char() {
        let pats = [R50K_PATTERN, CL100K_PATTERN, O200K_PATTERN];
        let lexers: Vec<_> = pats
            .iter()
            .map(|p| {
                (
                    Pretokenizer::new(p).unwrap(),
                    Pretokenizer::regex(p).unwrap(),
                )
            })
            .collect();
        for c in (0x80..0x800u32).filter_map(char::from_u32) {
            let body = format!(
                " слово{c}мир {c}Привет ВОТ{c} über{c}Été a{c}b {c}{c}x,{c} ok{c}'s ÉCOLE{c}école word"
            );
            for t in [body.clone(), format!("x{body}{body}")] {
                for (fast, slow) in &lexers {
                    assert_eq!(fast.pieces(&t).unwrap(), slow.pieces(&t).unwrap(), "{t:?}");
                }
            }
        }
    }

    #[test]
    fn lexers_match_regex_on_every_char_class_pair() {
        // Two-char and three-char strings over a set of representatives of every class.
        let reps = [
            "a", "A", "ǅ", "ʰ", "中", "\u{301}", "1", "٣", "Ⅷ", " ", "\t", "\n", "\r", "\u{a0}",
            "\u{3000}", "'", "s", "t", "/", "!", "😀", "_", "\u{85}", "ſ", "l", "v", "e", "r", "m",
            "d",
        ];
        for p in [R50K_PATTERN, CL100K_PATTERN, O200K_PATTERN] {
            let fast = Pretokenizer::new(p).unwrap();
            let slow = Pretokenizer::regex(p).unwrap();
            for a in reps {
                for b in reps {
                    for c in reps {
                        let t = format!("{a}{b}{c}{a}");
                        assert_eq!(
                            fast.pieces(&t).unwrap(),
                            slow.pieces(&t).unwrap(),
                            "{p} {t:?}"
                        );
                    }
                }
            }
        }
    }
}
