//! Hand-written lexers for the split patterns of r50k/p50k, cl100k and o200k.
//!
//! Why: regex splitting is most of tiktoken's encode time. Each lexer below is a single forward
//! pass that returns, at every position, exactly the end the regex would: the alternatives are
//! tried in pattern order and every backtracking case of the pattern is resolved in closed form
//! (e.g. `\s+(?!\S)` ends before the last whitespace char of a run; `\s*[\r\n]` ends after the
//! last CR/LF of a run; o200k's `[A]*[B]+` with overlapping classes falls back to the last char of
//! the A-run that is also in B). No position is scanned more than a constant number of times, so
//! the cost is linear on any input, including million-character runs.
use super::unicode::{self, decode_at, Table, CRLF, LETTER, MARK, NUM, O200K_A, O200K_B, SPACE};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    R50k,
    Cl100k,
    O200k,
}

pub struct Lexer<'a> {
    s: &'a [u8],
    pos: usize,
    kind: Kind,
    t: &'static Table,
    /// The two-byte letters of the kind's pattern, where [`Window`] can classify them (see
    /// [`WideClasses`]); `None` on CPUs without AVX-512 VBMI.
    wide: Option<&'static WideClasses>,
}

const NOT_OTHER: u8 = SPACE | LETTER | NUM;

/// ASCII byte sets that [`ascii_run`] spans with SIMD.
const ASCII_LETTERS: u8 = 0;
const ASCII_LOWER: u8 = 1;
const ASCII_UPPER: u8 = 2;

#[inline(always)]
fn in_ascii_set<const SET: u8>(b: u8) -> bool {
    match SET {
        ASCII_LETTERS => (b | 0x20).wrapping_sub(b'a') < 26,
        ASCII_LOWER => b.wrapping_sub(b'a') < 26,
        _ => b.wrapping_sub(b'A') < 26,
    }
}

/// End of the run of bytes of an ASCII letter set from `i`: 16 bytes per step, so a word costs
/// a few instructions and one predictable branch instead of a branch per byte. Stops at the first
/// byte outside the set (a non-ASCII byte included; callers continue from there when it starts a
/// char of the Unicode class).
#[inline(always)]
fn ascii_run<const SET: u8>(s: &[u8], mut i: usize) -> usize {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::*;
        while i + 16 <= s.len() {
            // SAFETY: 16 bytes from `i` are in bounds; SSE2 is part of x86-64.
            let m = unsafe {
                let v = _mm_loadu_si128(s.as_ptr().add(i) as *const __m128i);
                let x = match SET {
                    ASCII_LETTERS => _mm_sub_epi8(
                        _mm_or_si128(v, _mm_set1_epi8(0x20)),
                        _mm_set1_epi8(b'a' as i8),
                    ),
                    ASCII_LOWER => _mm_sub_epi8(v, _mm_set1_epi8(b'a' as i8)),
                    _ => _mm_sub_epi8(v, _mm_set1_epi8(b'A' as i8)),
                };
                let ok = _mm_cmpeq_epi8(_mm_min_epu8(x, _mm_set1_epi8(25)), x);
                _mm_movemask_epi8(ok) as u32
            };
            if m != 0xFFFF {
                return i + (!m).trailing_zeros() as usize;
            }
            i += 16;
        }
    }
    while i < s.len() && in_ascii_set::<SET>(s[i]) {
        i += 1;
    }
    i
}

impl<'a> Lexer<'a> {
    /// A lexer over `text` that starts at byte `pos`, which must be a piece boundary of the
    /// whole text (the lexers only ever look forward, so this reproduces the pieces from there).
    pub fn starting_at(kind: Kind, text: &'a str, pos: usize) -> Self {
        let mut l = Self::new(kind, text);
        l.pos = pos;
        l
    }

    pub fn new(kind: Kind, text: &'a str) -> Self {
        Lexer {
            s: text.as_bytes(),
            pos: 0,
            kind,
            t: unicode::table(),
            wide: WideClasses::get(kind),
        }
    }

    #[inline(always)]
    fn cls(&self, i: usize) -> (u8, usize) {
        let b = self.s[i];
        if b < 0x80 {
            (self.t.get(b as u32), 1)
        } else {
            let (cp, l) = decode_at(self.s, i);
            (self.t.get(cp), l)
        }
    }

    /// [`run`](Self::run) for a class that holds every ASCII letter of `SET`: those are spanned
    /// 16 bytes at a time, and the general loop takes over at the first non-ASCII byte, if any.
    #[inline(always)]
    fn run_simd<const SET: u8>(&self, i: usize, mask: u8) -> usize {
        if i < self.s.len() && self.s[i] >= 0x80 {
            return self.run(i, mask);
        }
        let j = ascii_run::<SET>(self.s, i);
        if j < self.s.len() && self.s[j] >= 0x80 {
            self.run(j, mask)
        } else {
            j
        }
    }

    /// `\p{L}+` from `i`.
    #[inline(always)]
    fn run_letters(&self, i: usize) -> usize {
        self.run_simd::<ASCII_LETTERS>(i, LETTER)
    }

    /// o200k's `[\p{Ll}\p{Lm}\p{Lo}\p{M}]*` from `i` (class `B`).
    #[inline(always)]
    fn run_b(&self, i: usize) -> usize {
        self.run_simd::<ASCII_LOWER>(i, O200K_B)
    }

    /// End of the run of chars whose class intersects `mask`, from `i`.
    #[inline(always)]
    fn run(&self, mut i: usize, mask: u8) -> usize {
        let n = self.s.len();
        while i < n {
            let (c, l) = self.cls(i);
            if c & mask == 0 {
                break;
            }
            i += l;
        }
        i
    }

    /// End of the run of chars outside `\s`, `\p{L}`, `\p{N}`.
    #[inline(always)]
    fn run_other(&self, mut i: usize) -> usize {
        let n = self.s.len();
        while i < n {
            let (c, l) = self.cls(i);
            if c & NOT_OTHER != 0 {
                break;
            }
            i += l;
        }
        i
    }

    /// Up to three `\p{N}` chars from `i` (the first is known to be one).
    #[inline(always)]
    fn digits3(&self, mut i: usize) -> usize {
        for _ in 0..3 {
            if i >= self.s.len() {
                break;
            }
            let (c, l) = self.cls(i);
            if c & NUM == 0 {
                break;
            }
            i += l;
        }
        i
    }

    /// Scans the whitespace run from `p`: (end of run, end of last CR/LF in it, start of its last char).
    #[inline(always)]
    fn ws_run(&self, p: usize) -> (usize, Option<usize>, usize) {
        let n = self.s.len();
        let (mut i, mut last_crlf, mut last_start) = (p, None, p);
        while i < n {
            let b = self.s[i];
            if b == b'\r' || b == b'\n' {
                last_start = i;
                i += 1;
                last_crlf = Some(i);
                continue;
            }
            let (c, l) = self.cls(i);
            if c & SPACE == 0 {
                break;
            }
            last_start = i;
            i += l;
        }
        (i, last_crlf, last_start)
    }

    /// `'(?:[sdmt]|ll|ve|re)` at `p` (which holds the apostrophe); case-insensitive for cl100k.
    #[inline(always)]
    fn contraction(&self, p: usize, ci: bool) -> Option<usize> {
        let s = &self.s[p + 1..];
        let lc = |b: u8| if ci { b.to_ascii_lowercase() } else { b };
        if let Some(b's' | b'd' | b'm' | b't') = s.first().map(|&b| lc(b)) {
            return Some(p + 2);
        }
        if ci && s.starts_with("ſ".as_bytes()) {
            return Some(p + 3);
        }
        if s.len() >= 2 {
            let pair = [lc(s[0]), lc(s[1])];
            if matches!(&pair, b"ll" | b"ve" | b"re") {
                return Some(p + 3);
            }
        }
        None
    }

    /// o200k's optional `(?i:'s|'t|'re|'ve|'m|'ll|'d)` after a word ending at `e`.
    #[inline(always)]
    fn o200k_suffix(&self, e: usize) -> usize {
        if e < self.s.len() && self.s[e] == b'\'' {
            if let Some(end) = self.contraction(e, true) {
                return end;
            }
        }
        e
    }

    /// o200k `[A]*[B]+` + suffix from `q`.
    #[inline(always)]
    fn o200k_lower_word(&self, q: usize) -> Option<usize> {
        let n = self.s.len();
        // ASCII capitals are in A and not in B, so they can be skipped in bulk.
        let mut i = q;
        if self.s[q] < 0x80 {
            i = ascii_run::<ASCII_UPPER>(self.s, q);
        }
        let mut last_b_end = None;
        while i < n {
            let (c, l) = self.cls(i);
            if c & O200K_A == 0 {
                break;
            }
            i += l;
            if c & O200K_B != 0 {
                last_b_end = Some(i);
            }
        }
        let end = if i < n && self.cls(i).0 & O200K_B != 0 {
            self.run_b(i)
        } else {
            last_b_end?
        };
        Some(self.o200k_suffix(end))
    }

    /// o200k `[A]+[B]*` + suffix from `q`.
    #[inline(always)]
    fn o200k_upper_word(&self, q: usize) -> Option<usize> {
        let a = self.run_simd::<ASCII_UPPER>(q, O200K_A);
        if a == q {
            return None;
        }
        Some(self.o200k_suffix(self.run_b(a)))
    }

    #[inline(always)]
    fn next_r50k(&self, p: usize) -> usize {
        let n = self.s.len();
        let b = self.s[p];
        if b == b'\'' {
            if let Some(e) = self.contraction(p, false) {
                return e;
            }
        }
        let q = if b == b' ' && p + 1 < n { p + 1 } else { p };
        let (c, l) = self.cls(q);
        if c & LETTER != 0 {
            return self.run_letters(q);
        }
        if c & NUM != 0 {
            return self.run(q, NUM);
        }
        if c & NOT_OTHER == 0 {
            return self.run_other(q);
        }
        let (w, _, last) = self.ws_run(p);
        if w == n {
            n
        } else if last > p {
            last
        } else {
            p + if q == p { l } else { 1 }
        }
    }

    #[inline(always)]
    fn next_cl100k(&self, p: usize) -> usize {
        let n = self.s.len();
        let b = self.s[p];
        if b == b'\'' {
            if let Some(e) = self.contraction(p, true) {
                return e;
            }
        }
        let (c, l) = self.cls(p);
        if c & LETTER != 0 {
            return self.run_letters(p);
        }
        if c & (CRLF | NUM) == 0 && p + l < n && self.cls(p + l).0 & LETTER != 0 {
            return self.run_letters(p + l);
        }
        if c & NUM != 0 {
            return self.digits3(p);
        }
        let q = if b == b' ' { p + 1 } else { p };
        if q < n && self.cls(q).0 & NOT_OTHER == 0 {
            let mut e = self.run_other(q);
            while e < n && (self.s[e] == b'\r' || self.s[e] == b'\n') {
                e += 1;
            }
            return e;
        }
        let (w, last_crlf, last) = self.ws_run(p);
        if w == n {
            n
        } else if let Some(k) = last_crlf {
            k
        } else if last > p {
            last
        } else {
            p + l
        }
    }

    /// o200k's word alternatives at `q` when the word is decided by ASCII letters alone:
    /// capitals then lowercase (`[A]*[B]+`), or capitals only (`[A]+[B]*` with no B), plus the
    /// contraction suffix. `None` when the letters run into a non-ASCII byte or past 16 bytes
    /// (the general path decides then) or `q` starts no ASCII letter.
    #[inline(always)]
    fn o200k_ascii_word(&self, q: usize) -> Option<usize> {
        #[cfg(target_arch = "x86_64")]
        {
            use std::arch::x86_64::*;
            let s = self.s;
            if q + 16 > s.len() {
                return None;
            }
            // SAFETY: 16 bytes from `q` are in bounds; SSE2 is part of x86-64.
            let (upper, lower, high) = unsafe {
                let v = _mm_loadu_si128(s.as_ptr().add(q) as *const __m128i);
                let in26 = |x: __m128i| _mm_cmpeq_epi8(_mm_min_epu8(x, _mm_set1_epi8(25)), x);
                let up = in26(_mm_sub_epi8(v, _mm_set1_epi8(b'A' as i8)));
                let lo = in26(_mm_sub_epi8(v, _mm_set1_epi8(b'a' as i8)));
                (
                    _mm_movemask_epi8(up) as u32,
                    _mm_movemask_epi8(lo) as u32,
                    _mm_movemask_epi8(v) as u32,
                )
            };
            let u = (!upper).trailing_zeros() as usize;
            let l = u + (!(lower >> u)).trailing_zeros() as usize;
            // The run must end inside the window, on an ASCII byte.
            if l >= 16 || (high >> l) & 1 != 0 || l == 0 {
                return None;
            }
            return Some(self.o200k_suffix(q + l));
        }
        #[allow(unreachable_code)]
        None
    }

    #[inline(always)]
    fn next_o200k(&self, p: usize) -> usize {
        let n = self.s.len();
        let b = self.s[p];
        // ASCII whitespace followed by ASCII whitespace (or the end): no letter, digit or
        // punctuation can start here, with or without the optional one-character prefix, so only
        // the whitespace alternatives are left (indentation and blank lines in code).
        let ascii_space = |x: u8| x < 0x80 && self.t.get(x as u32) & SPACE != 0;
        if ascii_space(b) && self.s.get(p + 1).is_none_or(|&x| ascii_space(x)) {
            return self.o200k_ws(p);
        }
        // An ASCII digit is in `\p{N}`, so it can neither start a word nor be its prefix.
        if b.is_ascii_digit() {
            return self.digits3(p);
        }
        if b < 0x80 && p + 1 < n {
            // The common case, ` word` or `Word`: decided without the class table.
            let q = if in_ascii_set::<ASCII_LETTERS>(b) {
                p
            } else if !matches!(b, b'\r' | b'\n') {
                p + 1
            } else {
                n
            };
            if q < n && in_ascii_set::<ASCII_LETTERS>(self.s[q]) {
                if let Some(e) = self.o200k_ascii_word(q) {
                    return e;
                }
            }
            // ASCII punctuation (after an optional space) that no letter follows: both word
            // alternatives fail, so it is ` ?[^\s\p{L}\p{N}]+[\r\n/]*`.
            let o = if b == b' ' { p + 1 } else { p };
            let next = o + 1;
            if next < n
                && self.s[o] < 0x80
                && self.t.get(self.s[o] as u32) & NOT_OTHER == 0
                && self.s[next] < 0x80
                && !in_ascii_set::<ASCII_LETTERS>(self.s[next])
            {
                let mut e = self.run_other(o);
                while e < n && matches!(self.s[e], b'\r' | b'\n' | b'/') {
                    e += 1;
                }
                return e;
            }
        }
        let (c, l) = self.cls(p);
        if c & LETTER != 0 {
            if let Some(e) = self.o200k_lower_word(p) {
                return e;
            }
            if let Some(e) = self.o200k_upper_word(p) {
                return e;
            }
        } else if c & (CRLF | NUM) == 0 {
            // `[^\r\n\p{L}\p{N}]?` prefix: with it first, then (for a mark, which is in both
            // letter classes) without it.
            let q = p + l;
            if q < n {
                if let Some(e) = self.o200k_lower_word(q) {
                    return e;
                }
            }
            if c & MARK != 0 {
                if let Some(e) = self.o200k_lower_word(p) {
                    return e;
                }
            }
            if q < n {
                if let Some(e) = self.o200k_upper_word(q) {
                    return e;
                }
            }
            if c & MARK != 0 {
                if let Some(e) = self.o200k_upper_word(p) {
                    return e;
                }
            }
        }
        if c & NUM != 0 {
            return self.digits3(p);
        }
        let q = if b == b' ' { p + 1 } else { p };
        if q < n && self.cls(q).0 & NOT_OTHER == 0 {
            let mut e = self.run_other(q);
            while e < n && matches!(self.s[e], b'\r' | b'\n' | b'/') {
                e += 1;
            }
            return e;
        }
        self.o200k_ws(p)
    }

    /// o200k's whitespace alternatives at `p`: `\s*[\r\n]+`, `\s+(?!\S)`, `\s+`.
    #[inline(always)]
    fn o200k_ws(&self, p: usize) -> usize {
        let (w, last_crlf, last) = self.ws_run(p);
        if let Some(k) = last_crlf {
            k
        } else if w == self.s.len() || last == p {
            w
        } else {
            last
        }
    }
}

impl Lexer<'_> {
    /// Calls `f(start, end)` for each piece from the current position until `f` returns
    /// `false`; `false` then. One loop per pattern with its lexer inlined, so that a piece costs
    /// no call and no dispatch on the pattern.
    pub fn each(&self, f: impl FnMut(usize, usize) -> bool) -> bool {
        match self.kind {
            Kind::R50k => self.each_with::<R50K>(f),
            Kind::Cl100k => self.each_with::<CL100K>(f),
            Kind::O200k => self.each_with::<O200K>(f),
        }
    }

    /// The loop of [`each`](Self::each): runs of ASCII words ([`word_run`](Self::word_run))
    /// are split with bit masks from a classification of [`WINDOW`] bytes (kept while the
    /// pieces stay inside it), everything else by the pattern's `next_*`, one piece at a time.
    /// `KIND` is the pattern's [`Kind`] as a number.
    #[inline(always)]
    fn each_with<const KIND: u8>(&self, mut f: impl FnMut(usize, usize) -> bool) -> bool {
        let (mut p, n) = (self.pos, self.s.len());
        let mut win = Window::NONE;
        while p < n {
            if p + WINDOW <= n && self.starts_word::<KIND>(p) {
                if p < win.at || p - win.at > WINDOW - MIN_LEFT {
                    win = Window::at(self.s, p, self.wide);
                }
                if let Some((starts, end)) = self.word_run::<KIND>(&win, p) {
                    // Each piece ends where the next starts; the last one at `end`.
                    let (mut m, mut s) = (starts & (starts - 1), p);
                    while m != 0 {
                        let e = p + m.trailing_zeros() as usize;
                        if !f(s, e) {
                            return false;
                        }
                        s = e;
                        m &= m - 1;
                    }
                    if !f(s, end) {
                        return false;
                    }
                    p = end;
                    continue;
                }
            }
            // Called by name: a function passed in was not inlined, and the loop ran 30% slower.
            let e = match KIND {
                R50K => self.next_r50k(p),
                CL100K => self.next_cl100k(p),
                _ => self.next_o200k(p),
            };
            debug_assert!(e > p);
            if !f(p, e) {
                return false;
            }
            p = e;
        }
        true
    }

    /// Whether the piece at `p` starts with an ASCII word: a letter, or a byte that
    /// [`Window::prefix`] allows before one.
    ///
    /// Where the windows classify two-byte letters too, a lead byte of a two-byte character
    /// of a script with letters counts as a letter here (Latin-1 and beyond, Greek, Cyrillic,
    /// Armenian; for r50k and cl100k also Hebrew, Arabic and the rest to U+07FF, whose letters
    /// are `\p{Lo}`, which o200k's runs leave to the general path);
    /// [`word_run`](Self::word_run) decides whether it is one.
    #[inline(always)]
    fn starts_word<const KIND: u8>(&self, p: usize) -> bool {
        let (b, c) = (self.s[p], self.s[p + 1]);
        let wide = self.wide.is_some();
        let last_lead = if KIND == O200K { 0xD5 } else { 0xDF };
        let letter =
            |x: u8| in_ascii_set::<ASCII_LETTERS>(x) || (wide && (0xC3..=last_lead).contains(&x));
        letter(b)
            || (letter(c)
                && if KIND == R50K {
                    b == b' '
                } else {
                    b < 0x80 && self.t.get(b as u32) & (LETTER | NUM | CRLF) == 0 && b != b'\''
                })
    }

    /// The pieces of a run of ASCII words from the piece boundary `p`, which holds a letter or
    /// a prefix byte before one (see [`starts_word`](Self::starts_word)); `win` must hold `p`.
    ///
    /// In a stretch of ASCII letters, of prefix bytes that precede a letter and of lone
    /// punctuation bytes (between a letter and a space before a letter, as in `word, word`:
    /// `[^\s\p{L}\p{N}]+` takes the byte alone), every prefix byte after the first byte follows
    /// a letter or a lone punctuation byte (two prefix bytes in a row would need the first to
    /// precede a letter), so the piece before ends at it; and it starts a piece: it is the
    /// optional prefix of the word alternative (`[^\r\n\p{L}\p{N}]?`, or ` ?` for r50k),
    /// which comes before every alternative that could take it otherwise, the apostrophe's
    /// contractions excepted (so the apostrophe is no prefix byte here). For o200k a capital
    /// that follows a lowercase letter starts a piece too (`[A]*[B]+` ends before it). The last
    /// word ends where the stretch does, at an ASCII byte that is no letter (then a contraction
    /// may follow it, for o200k). Two-byte letters count as ASCII ones where the window classifies
    /// them ([`WideClasses`]), and a two-byte character that no word continues ends the last word
    /// as an ASCII non-letter does. Where the stretch reaches any other byte of 0x80 or more (which
    /// may be a letter or a mark that continues the word) or the end of the window, the run stops
    /// at its last piece start instead.
    ///
    /// Returns `(starts, end)`: bit `k` of `starts` set where a piece starts at `p + k` (bit 0
    /// always), the last piece ending at `end`; `None` when not even one piece is decided.
    #[inline(always)]
    fn word_run<const KIND: u8>(&self, win: &Window, p: usize) -> Option<(u64, usize)> {
        let d = p - win.at;
        let valid = WINDOW - d;
        let (upper, lower) = (win.upper >> d, win.lower >> d);
        let prefix = if KIND == R50K {
            win.space >> d
        } else {
            win.prefix >> d
        };
        let letters = upper | lower;
        let prefixed = prefix & (letters >> 1);
        // A punctuation byte between a letter and a space before a letter (`word, word`) is a
        // piece of its own: `[^\s\p{L}\p{N}]+` ends at the space.
        let lone = (win.punct >> d) & (letters << 1) & ((win.space >> d) >> 1) & (letters >> 2);
        let stretch = letters | prefixed | lone;
        // The stretch's length: its first byte outside (`valid` at most, as the shifts bring
        // in zeros).
        let r = (!stretch).trailing_zeros() as usize;
        if r == 0 {
            return None;
        }
        let mut starts = prefixed | lone;
        if KIND == O200K {
            starts |= upper & (lower << 1);
        }
        if r < WINDOW {
            starts &= (1u64 << r) - 1;
        }
        starts |= 1;
        // A byte of 0x80 or more ends the last word only where it starts a two-byte character
        // that no word continues (`win.ends`); any other may continue it (a mark, a letter of
        // another class, a longer character).
        if r >= valid || ((win.high & !win.ends) >> d >> r) & 1 != 0 {
            let last = 63 - starts.leading_zeros() as usize;
            if last == 0 {
                return None;
            }
            return Some((starts & !(1u64 << last), p + last));
        }
        let end = p + r;
        Some((
            starts,
            if KIND == O200K {
                self.o200k_suffix(end)
            } else {
                end
            },
        ))
    }
}

const R50K: u8 = 0;
const CL100K: u8 = 1;
const O200K: u8 = 2;

/// The bytes that [`Window`] classifies at once.
const WINDOW: usize = 64;

/// The fewest bytes of a [`Window`] left after the position where a word run starts; fewer, and
/// the window is classified again from there.
const MIN_LEFT: usize = 24;

/// Bit masks of the [`WINDOW`] bytes from `at` (bit `k` for byte `at + k`).
struct Window {
    at: usize,
    /// Capitals and lowercase letters: ASCII ones, and with [`WideClasses`] both bytes of the
    /// two-byte ones (for r50k and cl100k, whose words are `\p{L}+`, every letter is in
    /// `lower`).
    upper: u64,
    lower: u64,
    /// Spaces (0x20): r50k's word prefix.
    space: u64,
    /// ASCII bytes that may precede a word as cl100k's and o200k's `[^\r\n\p{L}\p{N}]?`
    /// (no letter, digit, CR, LF), except the apostrophe (whose contractions come first).
    prefix: u64,
    /// Bytes of 0x80 or more.
    high: u64,
    /// ASCII bytes that are no letter, digit, whitespace or apostrophe.
    punct: u64,
    /// Lead bytes of two-byte characters that no word continues (with [`WideClasses`]).
    ends: u64,
}

impl Window {
    /// No window yet (every position is before it).
    const NONE: Window = Window {
        at: usize::MAX,
        upper: 0,
        lower: 0,
        space: 0,
        prefix: 0,
        high: 0,
        punct: 0,
        ends: 0,
    };

    #[inline(always)]
    fn at(s: &[u8], i: usize, wide: Option<&WideClasses>) -> Self {
        let mut w = Self::at_ascii(s, i);
        if let Some(c) = wide {
            if w.high != 0 {
                #[cfg(target_arch = "x86_64")]
                // SAFETY: `wide` is only ever set where the CPU has the features (`WideClasses::get`);
                // the 64 bytes from `i` are in bounds (asserted in `at_ascii`).
                let (upper, lower, ends) = unsafe { c.leads_avx512(s.as_ptr().add(i)) };
                #[cfg(not(target_arch = "x86_64"))]
                let (upper, lower, ends) = c.leads_portable(&s[i..i + WINDOW]);
                w.add_wide(upper, lower, ends);
            }
        }
        w
    }

    /// Adds the two-byte characters whose lead bytes are in `upper`, `lower` and `ends`.
    #[inline(always)]
    fn add_wide(&mut self, upper: u64, lower: u64, ends: u64) {
        self.upper |= upper | (upper << 1);
        self.lower |= lower | (lower << 1);
        self.ends = ends;
    }

    /// [`at`](Self::at) without the two-byte characters.
    #[inline(always)]
    fn at_ascii(s: &[u8], i: usize) -> Self {
        assert!(i + WINDOW <= s.len());
        #[cfg(not(target_arch = "x86_64"))]
        return Self::at_portable(s, i, None);
        #[cfg(target_arch = "x86_64")]
        {
            use std::arch::x86_64::*;
            let mut w = Window {
                at: i,
                ..Window::NONE
            };
            for k in 0..WINDOW / 16 {
                // SAFETY: the 64 bytes from `i` are in bounds (asserted); SSE2 is part of x86-64.
                unsafe {
                    let v = _mm_loadu_si128(s.as_ptr().add(i + 16 * k) as *const __m128i);
                    let below = |x: __m128i, n: i8| {
                        _mm_cmpeq_epi8(_mm_min_epu8(x, _mm_set1_epi8(n - 1)), x)
                    };
                    let eq = |c: u8| _mm_cmpeq_epi8(v, _mm_set1_epi8(c as i8));
                    let u = below(_mm_sub_epi8(v, _mm_set1_epi8(b'A' as i8)), 26);
                    let l = below(_mm_sub_epi8(v, _mm_set1_epi8(b'a' as i8)), 26);
                    let digit = below(_mm_sub_epi8(v, _mm_set1_epi8(b'0' as i8)), 10);
                    let not_prefix = _mm_or_si128(
                        _mm_or_si128(_mm_or_si128(u, l), _mm_or_si128(digit, eq(b'\''))),
                        _mm_or_si128(eq(b'\r'), eq(b'\n')),
                    );
                    let mask = |x: __m128i| (_mm_movemask_epi8(x) as u16 as u64) << (16 * k);
                    w.upper |= mask(u);
                    w.lower |= mask(l);
                    w.space |= mask(eq(b' '));
                    w.high |= mask(v);
                    // Bytes of 0x80 or more are not prefix bytes either.
                    let not_prefix = _mm_or_si128(not_prefix, v);
                    w.prefix |= mask(not_prefix) ^ (0xFFFF << (16 * k));
                    // Whitespace: `\t`..`\r` and the space.
                    let ws = _mm_or_si128(below(_mm_sub_epi8(v, _mm_set1_epi8(9)), 5), eq(b' '));
                    w.punct |= mask(_mm_or_si128(not_prefix, ws)) ^ (0xFFFF << (16 * k));
                }
            }
            w
        }
    }

    /// [`at`](Self::at) one byte at a time (for other architectures, and to check the SIMD).
    #[cfg_attr(target_arch = "x86_64", allow(dead_code))]
    fn at_portable(s: &[u8], i: usize, wide: Option<&WideClasses>) -> Self {
        let mut w = Window {
            at: i,
            ..Window::NONE
        };
        for (k, &b) in s[i..i + WINDOW].iter().enumerate() {
            w.upper |= (b.is_ascii_uppercase() as u64) << k;
            w.lower |= (b.is_ascii_lowercase() as u64) << k;
            w.space |= ((b == b' ') as u64) << k;
            w.high |= ((b >= 0x80) as u64) << k;
            let prefix = b < 0x80 && !b.is_ascii_alphanumeric() && !b"\r\n'".contains(&b);
            w.prefix |= (prefix as u64) << k;
            let punct = prefix && !b"\t\x0b\x0c ".contains(&b);
            w.punct |= (punct as u64) << k;
        }
        if let Some(c) = wide {
            let (upper, lower, ends) = c.leads_portable(&s[i..i + WINDOW]);
            w.add_wide(upper, lower, ends);
        }
        w
    }
}

/// The two-byte characters (U+0080 to U+07FF: Latin-1 and Latin extended letters, Greek,
/// Cyrillic, Armenian, Hebrew, Arabic, ...) by the part they play in a word run of one pattern,
/// as bitmaps by code point (bit `cp % 8` of byte `cp / 8`), so that [`Window`] classifies all of
/// a window's at once.
///
/// Why: in Russian or Greek text every word starts with a two-byte letter, so without these the
/// word runs never start and every piece takes the general path, a class-table lookup per
/// character and a dispatch per piece: the lexer ran at about a third of its speed on English.
///
/// For o200k, `upper` is `\p{Lu}`/`\p{Lt}` (its `[A]` without `[B]`) and `lower` `\p{Ll}`
/// (`[B]` without `[A]`); for r50k and cl100k (`\p{L}+`) `lower` is every letter. Characters in
/// both o200k classes (`\p{Lm}`, `\p{Lo}`, marks) are in neither: a run stops before them and
/// the general path decides. `ends`: characters that no word continues (no letter, nor for o200k
/// a mark), where the last word of a run ends as at an ASCII non-letter.
#[repr(C, align(64))]
pub(super) struct WideClasses {
    upper: [u8; 256],
    lower: [u8; 256],
    ends: [u8; 256],
}

impl WideClasses {
    /// The classes of `kind`'s pattern, where this CPU can classify a window with them
    /// (AVX-512 VBMI); `None` elsewhere, or when `BYTEPAIR_NO_WIDE_RUNS` is set (read once; for
    /// comparing the two paths).
    fn get(kind: Kind) -> Option<&'static WideClasses> {
        #[cfg(target_arch = "x86_64")]
        {
            use std::sync::OnceLock;
            static HAS: OnceLock<bool> = OnceLock::new();
            let has = *HAS.get_or_init(|| {
                std::is_x86_feature_detected!("avx512f")
                    && std::is_x86_feature_detected!("avx512bw")
                    && std::is_x86_feature_detected!("avx512vbmi")
                    && std::env::var_os("BYTEPAIR_NO_WIDE_RUNS").is_none()
            });
            if !has {
                return None;
            }
            Some(Self::of(kind))
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            let _ = kind;
            None
        }
    }

    /// The classes of `kind`'s pattern, built on first use from the class table.
    pub(super) fn of(kind: Kind) -> &'static WideClasses {
        use std::sync::OnceLock;
        static LETTERS: OnceLock<WideClasses> = OnceLock::new();
        static O200K: OnceLock<WideClasses> = OnceLock::new();
        let o200k = kind == Kind::O200k;
        let cell = if o200k { &O200K } else { &LETTERS };
        cell.get_or_init(|| {
            let t = unicode::table();
            let mut w = WideClasses {
                upper: [0; 256],
                lower: [0; 256],
                ends: [0; 256],
            };
            for cp in 0x80..0x800u32 {
                let c = t.get(cp);
                let (upper, lower, ends) = if o200k {
                    (
                        c & O200K_A != 0 && c & O200K_B == 0,
                        c & O200K_B != 0 && c & O200K_A == 0,
                        c & (LETTER | MARK) == 0,
                    )
                } else {
                    (false, c & LETTER != 0, c & LETTER == 0)
                };
                let (byte, bit) = ((cp / 8) as usize, 1u8 << (cp % 8));
                for (set, map) in [
                    (upper, &mut w.upper),
                    (lower, &mut w.lower),
                    (ends, &mut w.ends),
                ] {
                    if set {
                        map[byte] |= bit;
                    }
                }
            }
            w
        })
    }

    /// Lead-byte masks `(upper, lower, ends)` of the two-byte characters in `s` (64 bytes):
    /// a lead byte 0xC2-0xDF followed by a continuation byte, not at the last position.
    fn leads_portable(&self, s: &[u8]) -> (u64, u64, u64) {
        let (mut upper, mut lower, mut ends) = (0, 0, 0);
        for k in 0..WINDOW - 1 {
            let (a, b) = (s[k], s[k + 1]);
            if !(0xC2..=0xDF).contains(&a) || b & 0xC0 != 0x80 {
                continue;
            }
            let cp = ((a as usize & 0x1F) << 6) | (b as usize & 0x3F);
            let has = |map: &[u8; 256]| ((map[cp / 8] >> (cp % 8)) & 1) as u64;
            upper |= has(&self.upper) << k;
            lower |= has(&self.lower) << k;
            ends |= has(&self.ends) << k;
        }
        (upper, lower, ends)
    }

    /// [`leads_portable`](Self::leads_portable) of the 64 bytes at `p`, all at once: each
    /// position's code point (with the next byte), its byte of each bitmap (two 128-byte table
    /// lookups) and bit.
    ///
    /// # Safety
    /// The CPU has AVX-512 F, BW and VBMI; 64 bytes from `p` are readable.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f,avx512bw,avx512vbmi")]
    unsafe fn leads_avx512(&self, p: *const u8) -> (u64, u64, u64) {
        use std::arch::x86_64::*;
        let v = _mm512_loadu_si512(p as *const __m512i);
        // Each position's next byte (the last position's wraps around; it is left out below).
        let next_idx = _mm512_add_epi8(
            _mm512_set_epi64(
                0x3F3E_3D3C_3B3A_3938,
                0x3736_3534_3332_3130,
                0x2F2E_2D2C_2B2A_2928,
                0x2726_2524_2322_2120,
                0x1F1E_1D1C_1B1A_1918,
                0x1716_1514_1312_1110,
                0x0F0E_0D0C_0B0A_0908,
                0x0706_0504_0302_0100,
            ),
            _mm512_set1_epi8(1),
        );
        let nx = _mm512_permutexvar_epi8(next_idx, v);
        let lead = _mm512_cmple_epu8_mask(
            _mm512_sub_epi8(v, _mm512_set1_epi8(0xC2u8 as i8)),
            _mm512_set1_epi8(0x1D),
        );
        let cont = _mm512_cmpeq_epi8_mask(
            _mm512_and_si512(nx, _mm512_set1_epi8(0xC0u8 as i8)),
            _mm512_set1_epi8(0x80u8 as i8),
        );
        let lead = lead & cont & !(1u64 << 63);
        if lead == 0 {
            return (0, 0, 0);
        }
        // Byte index cp / 8 = (lead & 0x1F) << 3 | (next & 0x3F) >> 3; the 16-bit shifts bring
        // in the neighbouring byte's bits, which the masks drop.
        let idx = _mm512_or_si512(
            _mm512_and_si512(_mm512_slli_epi16(v, 3), _mm512_set1_epi8(0xF8u8 as i8)),
            _mm512_and_si512(_mm512_srli_epi16(nx, 3), _mm512_set1_epi8(0x07)),
        );
        let high_half = _mm512_movepi8_mask(idx);
        // Bit cp % 8 = next & 7 of the byte.
        let bit = _mm512_shuffle_epi8(
            _mm512_set1_epi64(0x8040_2010_0804_0201u64 as i64),
            _mm512_and_si512(nx, _mm512_set1_epi8(7)),
        );
        let lookup = |map: &[u8; 256]| {
            let m = map.as_ptr() as *const __m512i;
            let lo =
                _mm512_permutex2var_epi8(_mm512_loadu_si512(m), idx, _mm512_loadu_si512(m.add(1)));
            let hi = _mm512_permutex2var_epi8(
                _mm512_loadu_si512(m.add(2)),
                idx,
                _mm512_loadu_si512(m.add(3)),
            );
            _mm512_test_epi8_mask(_mm512_mask_blend_epi8(high_half, lo, hi), bit) & lead
        };
        (lookup(&self.upper), lookup(&self.lower), lookup(&self.ends))
    }
}

impl Iterator for Lexer<'_> {
    /// `(start, end)` byte offsets of the next piece.
    type Item = (usize, usize);

    #[inline]
    fn next(&mut self) -> Option<(usize, usize)> {
        let p = self.pos;
        if p >= self.s.len() {
            return None;
        }
        let e = match self.kind {
            Kind::R50k => self.next_r50k(p),
            Kind::Cl100k => self.next_cl100k(p),
            Kind::O200k => self.next_o200k(p),
        };
        debug_assert!(e > p);
        self.pos = e;
        Some((p, e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every byte value, and every two-byte character, at every position of the window
    /// classifies as byte by byte.
    #[test]
    fn window_masks_equal_portable() {
        let mut s: Vec<u8> = (0..=255u8).chain(0..=255u8).collect();
        s.rotate_left(7);
        // Every two-byte character, with ASCII bytes between some so that they start at both
        // even and odd offsets; and a lead byte cut off by the window's end.
        let mut wide = String::new();
        for (k, c) in (0x80..0x800u32).filter_map(char::from_u32).enumerate() {
            wide.push(c);
            if k % 5 == 0 {
                wide.push(' ');
            }
            if k % 7 == 0 {
                wide.push('a');
            }
        }
        s.extend_from_slice(wide.as_bytes());
        for i in 0..s.len() - WINDOW {
            for wide in [
                None,
                WideClasses::get(Kind::Cl100k),
                WideClasses::get(Kind::O200k),
            ] {
                let (a, b) = (Window::at(&s, i, wide), Window::at_portable(&s, i, wide));
                assert_eq!(
                    (a.at, a.upper, a.lower, a.space, a.prefix, a.high, a.punct, a.ends),
                    (b.at, b.upper, b.lower, b.space, b.prefix, b.high, b.punct, b.ends),
                    "window at {i}"
                );
            }
        }
    }
}
