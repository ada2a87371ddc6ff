//! Character classes for the hand-written lexers, taken from `regex-syntax`'s own Unicode tables
//! so that the lexers and the regex path can never disagree about what `\p{L}` or `\s` means.
//! The table is one byte per code point (1.1 MB), built once on first use in about a millisecond.
use regex_syntax::hir::{Class, HirKind};
use std::sync::OnceLock;

pub const LETTER: u8 = 1; // \p{L}
pub const UPPER: u8 = 2; // \p{Lu} | \p{Lt}
pub const LOWER: u8 = 4; // \p{Ll}
pub const LMO: u8 = 8; // \p{Lm} | \p{Lo}
pub const MARK: u8 = 16; // \p{M}
pub const NUM: u8 = 32; // \p{N}
pub const SPACE: u8 = 64; // \s (White_Space)
pub const CRLF: u8 = 128; // '\r' or '\n'

/// o200k's `[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]`.
pub const O200K_A: u8 = UPPER | LMO | MARK;
/// o200k's `[\p{Ll}\p{Lm}\p{Lo}\p{M}]`.
pub const O200K_B: u8 = LOWER | LMO | MARK;

fn ranges(pattern: &str) -> Vec<(u32, u32)> {
    let hir = regex_syntax::Parser::new()
        .parse(pattern)
        .expect("valid class");
    match hir.kind() {
        HirKind::Class(Class::Unicode(c)) => c
            .ranges()
            .iter()
            .map(|r| (r.start() as u32, r.end() as u32))
            .collect(),
        _ => unreachable!("not a unicode class: {pattern}"),
    }
}

pub struct Table {
    cls: Box<[u8]>,
}

impl Table {
    #[inline(always)]
    pub fn get(&self, cp: u32) -> u8 {
        // SAFETY: the table covers every scalar value (0..=0x10FFFF).
        unsafe { *self.cls.get_unchecked(cp as usize) }
    }
}

pub fn table() -> &'static Table {
    static T: OnceLock<Table> = OnceLock::new();
    T.get_or_init(|| {
        let mut cls = vec![0u8; 0x110000].into_boxed_slice();
        for (pat, bits) in [
            (r"\p{L}", LETTER),
            (r"[\p{Lu}\p{Lt}]", UPPER),
            (r"\p{Ll}", LOWER),
            (r"[\p{Lm}\p{Lo}]", LMO),
            (r"\p{M}", MARK),
            (r"\p{N}", NUM),
            (r"\s", SPACE),
            (r"[\r\n]", CRLF),
        ] {
            for (a, b) in ranges(pat) {
                for c in &mut cls[a as usize..=b as usize] {
                    *c |= bits;
                }
            }
        }
        Table { cls }
    })
}

/// Decodes the char at byte `i` of valid UTF-8 `s`: `(code point, byte length)`.
#[inline(always)]
pub fn decode_at(s: &[u8], i: usize) -> (u32, usize) {
    let b0 = s[i] as u32;
    if b0 < 0x80 {
        (b0, 1)
    } else if b0 < 0xE0 {
        (((b0 & 0x1F) << 6) | (s[i + 1] as u32 & 0x3F), 2)
    } else if b0 < 0xF0 {
        (
            ((b0 & 0x0F) << 12) | ((s[i + 1] as u32 & 0x3F) << 6) | (s[i + 2] as u32 & 0x3F),
            3,
        )
    } else {
        (
            ((b0 & 0x07) << 18)
                | ((s[i + 1] as u32 & 0x3F) << 12)
                | ((s[i + 2] as u32 & 0x3F) << 6)
                | (s[i + 3] as u32 & 0x3F),
            4,
        )
    }
}
