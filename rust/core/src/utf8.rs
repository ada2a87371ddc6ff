//! The code points of a Python string (Latin-1, UCS-2 or UCS-4 storage) to UTF-8.
//!
//! Why: CPython keeps a `str` with any non-ASCII character as one, two or four bytes per code
//! point, and its own UTF-8 encoder goes one character at a time into a new bytes object, which
//! is then copied again. On Russian text that took as long as the lexer. Here blocks of 16 code
//! points that are all below U+0800 (ASCII, Latin, Greek, Cyrillic, Hebrew, Arabic: one or two
//! UTF-8 bytes each) are converted with AVX2: each code point becomes its two UTF-8 bytes, and a
//! byte shuffle chosen by which code points are ASCII drops the unused second byte of those.
//! Other blocks, and CPUs without AVX2, take a scalar loop.
//!
//! Surrogate code points (U+D800 to U+DFFF) have no UTF-8: the converters then return `false`,
//! leaving `out` as it was, and the caller decides (Python raises `UnicodeEncodeError`).

/// Appends the UTF-8 of Latin-1 text (code points U+0000 to U+00FF) to `out`.
pub fn from_latin1(src: &[u8], out: &mut Vec<u8>) {
    // SAFETY: room for 2 bytes per code point (+ SLACK, see `append`).
    unsafe { append(out, src.len() * 2, |d| Some(latin1_raw(src, d))) };
}

/// Appends the UTF-8 of UCS-2 text to `out`; `false` (and `out` unchanged) if it holds a
/// surrogate.
pub fn from_ucs2(src: &[u16], out: &mut Vec<u8>) -> bool {
    // SAFETY: room for 3 bytes per code point (+ SLACK).
    unsafe { append(out, src.len() * 3, |d| ucs2_raw(src, d)) }
}

/// Appends the UTF-8 of UCS-4 text to `out`; `false` (and `out` unchanged) if it holds a
/// surrogate or a value above U+10FFFF.
pub fn from_ucs4(src: &[u32], out: &mut Vec<u8>) -> bool {
    // SAFETY: room for 4 bytes per code point (+ SLACK).
    unsafe { append(out, src.len() * 4, |d| ucs4_raw(src, d)) }
}

/// Reserves `max` + [`SLACK`] bytes past the end of `out`, lets `write` fill them from the
/// start, and keeps the length it returns (`None`: nothing is kept).
///
/// # Safety
/// `write` must write at most `max` bytes, plus at most [`SLACK`] past its returned length
/// (the SIMD stores' unused tail), and the bytes up to its returned length must be UTF-8.
#[inline(always)]
unsafe fn append(
    out: &mut Vec<u8>,
    max: usize,
    write: impl FnOnce(*mut u8) -> Option<usize>,
) -> bool {
    let start = out.len();
    out.reserve(max + SLACK);
    match write(out.as_mut_ptr().add(start)) {
        Some(n) => {
            out.set_len(start + n);
            true
        }
        None => false,
    }
}

/// Bytes the SIMD paths may store past the end of their output.
const SLACK: usize = 32;

/// Writes the UTF-8 of `c` (not a surrogate, at most U+10FFFF) at `d`; returns its length.
///
/// # Safety
/// `d` must have room for 4 bytes.
#[inline(always)]
unsafe fn put(c: u32, d: *mut u8) -> usize {
    if c < 0x80 {
        *d = c as u8;
        1
    } else if c < 0x800 {
        *d = 0xC0 | (c >> 6) as u8;
        *d.add(1) = 0x80 | (c & 0x3F) as u8;
        2
    } else if c < 0x10000 {
        *d = 0xE0 | (c >> 12) as u8;
        *d.add(1) = 0x80 | ((c >> 6) & 0x3F) as u8;
        *d.add(2) = 0x80 | (c & 0x3F) as u8;
        3
    } else {
        *d = 0xF0 | (c >> 18) as u8;
        *d.add(1) = 0x80 | ((c >> 12) & 0x3F) as u8;
        *d.add(2) = 0x80 | ((c >> 6) & 0x3F) as u8;
        *d.add(3) = 0x80 | (c & 0x3F) as u8;
        4
    }
}

#[inline(always)]
fn is_surrogate(c: u32) -> bool {
    c & 0xFFFF_F800 == 0xD800
}

/// Scalar conversion of code points; `None` on a surrogate or a value past U+10FFFF.
///
/// # Safety
/// `d` must have room for the output (4 bytes per code point at most).
#[inline(always)]
unsafe fn scalar(src: impl Iterator<Item = u32>, d: *mut u8) -> Option<usize> {
    let mut w = 0;
    for c in src {
        if is_surrogate(c) || c > 0x10FFFF {
            return None;
        }
        w += put(c, d.add(w));
    }
    Some(w)
}

/// # Safety
/// `d` must have room for `2 * src.len() + SLACK` bytes.
unsafe fn latin1_raw(src: &[u8], d: *mut u8) -> usize {
    #[cfg(target_arch = "x86_64")]
    {
        if std::is_x86_feature_detected!("avx2") {
            return avx2::latin1(src, d);
        }
    }
    scalar(src.iter().map(|&b| b as u32), d).unwrap_or(0)
}

/// # Safety
/// `d` must have room for `3 * src.len() + SLACK` bytes.
unsafe fn ucs2_raw(src: &[u16], d: *mut u8) -> Option<usize> {
    #[cfg(target_arch = "x86_64")]
    {
        if std::is_x86_feature_detected!("avx2") {
            return avx2::ucs2(src, d);
        }
    }
    scalar(src.iter().map(|&c| c as u32), d)
}

/// # Safety
/// `d` must have room for `4 * src.len() + SLACK` bytes.
unsafe fn ucs4_raw(src: &[u32], d: *mut u8) -> Option<usize> {
    #[cfg(target_arch = "x86_64")]
    {
        if std::is_x86_feature_detected!("avx2") {
            return avx2::ucs4(src, d);
        }
    }
    scalar(src.iter().copied(), d)
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use super::scalar;
    use std::arch::x86_64::*;

    /// For each set of ASCII lanes among 8 (bit j: lane j is ASCII), the byte shuffle that keeps
    /// both bytes of the other lanes and the first byte of the ASCII ones, in order.
    static SHUFFLES: [[u8; 16]; 256] = {
        let mut t = [[0x80u8; 16]; 256];
        let mut m = 0;
        while m < 256 {
            let (mut k, mut j) = (0, 0);
            while j < 8 {
                t[m][k] = 2 * j as u8;
                k += 1;
                if m >> j & 1 == 0 {
                    t[m][k] = 2 * j as u8 + 1;
                    k += 1;
                }
                j += 1;
            }
            m += 1;
        }
        t
    };

    /// Writes the UTF-8 of 8 code points below U+0800 (16-bit lanes of `c`) at `d`: 8 to 16
    /// bytes, 16 stored. Returns the length.
    #[target_feature(enable = "avx2")]
    #[inline]
    unsafe fn two_byte_8(c: __m128i, d: *mut u8) -> usize {
        let lead = _mm_or_si128(_mm_srli_epi16::<6>(c), _mm_set1_epi16(0xC0));
        let cont = _mm_or_si128(_mm_and_si128(c, _mm_set1_epi16(0x3F)), _mm_set1_epi16(0x80));
        let two = _mm_or_si128(lead, _mm_slli_epi16::<8>(cont));
        let ascii = _mm_cmpeq_epi16(
            _mm_and_si128(c, _mm_set1_epi16(0xFF80u16 as i16)),
            _mm_setzero_si128(),
        );
        let t = _mm_blendv_epi8(two, c, ascii);
        let m = _mm_movemask_epi8(_mm_packs_epi16(ascii, _mm_setzero_si128())) as usize & 0xFF;
        let shuf = _mm_loadu_si128(SHUFFLES[m].as_ptr() as *const __m128i);
        _mm_storeu_si128(d as *mut __m128i, _mm_shuffle_epi8(t, shuf));
        16 - m.count_ones() as usize
    }

    /// Writes the UTF-8 of 16 code points below U+0800 (the 16-bit lanes of `v`) at `d`;
    /// returns its length.
    #[target_feature(enable = "avx2")]
    #[inline]
    unsafe fn below_800_16(v: __m256i, d: *mut u8) -> usize {
        let n = two_byte_8(_mm256_castsi256_si128(v), d);
        n + two_byte_8(_mm256_extracti128_si256::<1>(v), d.add(n))
    }

    #[target_feature(enable = "avx2")]
    pub unsafe fn latin1(src: &[u8], d: *mut u8) -> usize {
        let (mut i, mut w) = (0, 0);
        while i + 32 <= src.len() {
            let v = _mm256_loadu_si256(src.as_ptr().add(i) as *const __m256i);
            let high = _mm256_movemask_epi8(v);
            if high == 0 {
                _mm256_storeu_si256(d.add(w) as *mut __m256i, v);
                w += 32;
            } else {
                let lo = _mm256_cvtepu8_epi16(_mm256_castsi256_si128(v));
                let hi = _mm256_cvtepu8_epi16(_mm256_extracti128_si256::<1>(v));
                w += below_800_16(lo, d.add(w));
                w += below_800_16(hi, d.add(w));
            }
            i += 32;
        }
        w + scalar(src[i..].iter().map(|&b| b as u32), d.add(w)).unwrap_or(0)
    }

    #[target_feature(enable = "avx2")]
    pub unsafe fn ucs2(src: &[u16], d: *mut u8) -> Option<usize> {
        let (mut i, mut w) = (0, 0);
        while i + 16 <= src.len() {
            let v = _mm256_loadu_si256(src.as_ptr().add(i) as *const __m256i);
            if _mm256_testz_si256(v, _mm256_set1_epi16(0xFF80u16 as i16)) == 1 {
                let packed =
                    _mm_packus_epi16(_mm256_castsi256_si128(v), _mm256_extracti128_si256::<1>(v));
                _mm_storeu_si128(d.add(w) as *mut __m128i, packed);
                w += 16;
            } else if _mm256_testz_si256(v, _mm256_set1_epi16(0xF800u16 as i16)) == 1 {
                w += below_800_16(v, d.add(w));
            } else {
                w += scalar(src[i..i + 16].iter().map(|&c| c as u32), d.add(w))?;
            }
            i += 16;
        }
        Some(w + scalar(src[i..].iter().map(|&c| c as u32), d.add(w))?)
    }

    #[target_feature(enable = "avx2")]
    pub unsafe fn ucs4(src: &[u32], d: *mut u8) -> Option<usize> {
        let (mut i, mut w) = (0, 0);
        while i + 16 <= src.len() {
            let p = src.as_ptr().add(i) as *const __m256i;
            let (a, b) = (_mm256_loadu_si256(p), _mm256_loadu_si256(p.add(1)));
            let any = _mm256_or_si256(a, b);
            if _mm256_testz_si256(any, _mm256_set1_epi32(!0x7FF)) == 1 {
                // Both halves fit 16 bits: pack them (packus works within 128-bit lanes, so
                // put the quarters back in order after) and convert as UCS-2.
                let v = _mm256_permute4x64_epi64::<0b11_01_10_00>(_mm256_packus_epi32(a, b));
                w += below_800_16(v, d.add(w));
            } else {
                w += scalar(src[i..i + 16].iter().copied(), d.add(w))?;
            }
            i += 16;
        }
        Some(w + scalar(src[i..].iter().copied(), d.add(w))?)
    }
}

/// How CPython stores a string: by its largest code point (ASCII, Latin-1, UCS-2, UCS-4).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Ascii,
    Latin1,
    Ucs2,
    Ucs4,
}

impl Kind {
    /// The largest code point the kind holds (what `PyUnicode_New` takes).
    pub fn max_char(self) -> u32 {
        match self {
            Kind::Ascii => 0x7F,
            Kind::Latin1 => 0xFF,
            Kind::Ucs2 => 0xFFFF,
            Kind::Ucs4 => 0x10FFFF,
        }
    }
}

/// The number of code points in `s` and the storage CPython gives them.
///
/// In valid UTF-8 the largest byte tells the kind: a text with only ASCII has none above 0x7F,
/// and otherwise the largest is a lead byte (continuation bytes are 0x80-0xBF, leads 0xC2 and
/// up): 0xC2-0xC3 start U+0080-U+00FF, 0xC4-0xEF up to U+FFFF, 0xF0-0xF4 the rest.
pub fn measure(s: &str) -> (usize, Kind) {
    // A loop the compiler vectorises, and the standard library's (vectorised) count.
    let max = s.bytes().fold(0u8, |m, c| m.max(c));
    let kind = match max {
        0..=0x7F => Kind::Ascii,
        0x80..=0xC3 => Kind::Latin1,
        0xC4..=0xEF => Kind::Ucs2,
        _ => Kind::Ucs4,
    };
    (s.chars().count(), kind)
}

/// A code unit of CPython's string storage.
pub trait Unit: Copy {
    /// `c`, which the caller knows fits (see [`measure`]).
    fn of(c: u32) -> Self;
}

impl Unit for u8 {
    #[inline(always)]
    fn of(c: u32) -> Self {
        c as u8
    }
}

impl Unit for u16 {
    #[inline(always)]
    fn of(c: u32) -> Self {
        c as u16
    }
}

impl Unit for u32 {
    #[inline(always)]
    fn of(c: u32) -> Self {
        c
    }
}

/// Writes the code points of `s` to the start of `out`, one unit each, and returns how many.
/// Every code point of `s` must fit in `T` (see [`measure`]); `out` must have room for them
/// all (it panics otherwise).
///
/// Runs of eight ASCII bytes are widened in one step; the rest is decoded a character at a
/// time (`s` is valid UTF-8, so the lead byte tells the length).
pub fn to_units<T: Unit>(s: &str, out: &mut [T]) -> usize {
    let b = s.as_bytes();
    let (mut i, mut o) = (0, 0);
    while i < b.len() {
        if let (Some(w), Some(d)) = (b.get(i..i + 8), out.get_mut(o..o + 8)) {
            let word = u64::from_le_bytes(w.try_into().unwrap());
            if word & 0x8080_8080_8080_8080 == 0 {
                for (d, &c) in d.iter_mut().zip(w) {
                    *d = T::of(c as u32);
                }
                i += 8;
                o += 8;
                continue;
            }
        }
        let c = b[i] as u32;
        let (cp, n) = if c < 0x80 {
            (c, 1)
        } else if c < 0xE0 {
            (((c & 0x1F) << 6) | (b[i + 1] as u32 & 0x3F), 2)
        } else if c < 0xF0 {
            let cp =
                ((c & 0x0F) << 12) | ((b[i + 1] as u32 & 0x3F) << 6) | (b[i + 2] as u32 & 0x3F);
            (cp, 3)
        } else {
            let cp = ((c & 0x07) << 18)
                | ((b[i + 1] as u32 & 0x3F) << 12)
                | ((b[i + 2] as u32 & 0x3F) << 6)
                | (b[i + 3] as u32 & 0x3F);
            (cp, 4)
        };
        out[o] = T::of(cp);
        i += n;
        o += 1;
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn reference(cps: &[u32]) -> Option<Vec<u8>> {
        let s: Option<String> = cps.iter().map(|&c| char::from_u32(c)).collect();
        s.map(String::into_bytes)
    }

    /// Code points (no surrogates: `a_surrogate_anywhere_is_refused` has those) from every
    /// range the paths tell apart, up to 200 of them, so the SIMD blocks (16 and 32 code points)
    /// end at every offset.
    fn code_points(max: u32) -> impl Strategy<Value = Vec<u32>> {
        let one = prop_oneof![
            4 => 0u32..0x80,
            3 => 0x80u32..0x100,
            3 => 0x100u32..0x800,
            2 => (0x800u32..0xF800).prop_map(|c| if c >= 0xD800 { c + 0x800 } else { c }),
            1 => 0x10000u32..0x110000,
        ]
        .prop_map(move |c| c.min(max));
        prop::collection::vec(one, 0..200)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(3000))]

        #[test]
        fn latin1_equals_reference(cps in code_points(0xFF), prefix in "[a-z]{0,3}") {
            let src: Vec<u8> = cps.iter().map(|&c| c as u8).collect();
            let mut out = prefix.clone().into_bytes();
            from_latin1(&src, &mut out);
            let mut want = prefix.into_bytes();
            want.extend(reference(&cps).unwrap());
            prop_assert_eq!(out, want);
        }

        #[test]
        fn ucs2_equals_reference(cps in code_points(0xFFFF)) {
            let src: Vec<u16> = cps.iter().map(|&c| c as u16).collect();
            let mut out = Vec::new();
            let ok = from_ucs2(&src, &mut out);
            prop_assert!(ok);
            prop_assert_eq!(out, reference(&cps).unwrap());
        }

        #[test]
        fn ucs4_equals_reference(cps in code_points(0x10FFFF)) {
            let mut out = Vec::new();
            prop_assert!(from_ucs4(&cps, &mut out));
            prop_assert_eq!(out, reference(&cps).unwrap());
        }
    }

    #[test]
    fn a_surrogate_anywhere_is_refused() {
        for n in [1, 15, 16, 17, 31, 32, 33, 100] {
            for at in 0..n {
                let mut u: Vec<u16> = (0..n).map(|i| 0x430 + (i % 32) as u16).collect();
                for s in [0xD800u16, 0xDBFF, 0xDC00, 0xDFFF] {
                    u[at] = s;
                    let mut out = b"kept".to_vec();
                    assert!(!from_ucs2(&u, &mut out), "{n} {at} {s:x}");
                    assert_eq!(out, b"kept");
                    let w: Vec<u32> = u.iter().map(|&c| c as u32).collect();
                    assert!(!from_ucs4(&w, &mut out));
                    assert_eq!(out, b"kept");
                }
            }
        }
        let mut out = Vec::new();
        assert!(!from_ucs4(&[0x41, 0x110000], &mut out));
        assert!(out.is_empty());
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(3000))]

        /// `measure` and `to_units` give the code points, and the kind CPython would pick.
        #[test]
        fn units_equal_the_code_points(cps in code_points(0x10FFFF), prefix in "[a-z]{0,9}") {
            let s: String = prefix.chars().chain(cps.iter().map(|&c| char::from_u32(c).unwrap())).collect();
            let want: Vec<u32> = s.chars().map(|c| c as u32).collect();
            let (n, kind) = measure(&s);
            prop_assert_eq!(n, want.len());
            let top = want.iter().copied().max().unwrap_or(0);
            let expected = match top {
                0..=0x7F => Kind::Ascii,
                0x80..=0xFF => Kind::Latin1,
                0x100..=0xFFFF => Kind::Ucs2,
                _ => Kind::Ucs4,
            };
            prop_assert_eq!(kind, expected);
            prop_assert!(top <= kind.max_char());
            let mut out = vec![0u32; n];
            prop_assert_eq!(to_units(&s, &mut out), n);
            prop_assert_eq!(&out, &want);
            if top <= 0xFFFF {
                let mut out = vec![0u16; n];
                prop_assert_eq!(to_units(&s, &mut out), n);
                prop_assert!(out.iter().zip(&want).all(|(&a, &b)| a as u32 == b));
            }
            if top <= 0xFF {
                let mut out = vec![0u8; n];
                prop_assert_eq!(to_units(&s, &mut out), n);
                prop_assert!(out.iter().zip(&want).all(|(&a, &b)| a as u32 == b));
            }
        }
    }

    #[test]
    fn long_cyrillic_and_mixed_text() {
        let s = "Аппетит приходит... и уходит, а кушать хочется всегда. ÿ 中文 😀 ".repeat(50);
        let u: Vec<u16> = s.encode_utf16().collect();
        let cps: Vec<u32> = s.chars().map(|c| c as u32).collect();
        let mut out = Vec::new();
        // Astral characters are two UTF-16 units: UCS-2 storage never holds them.
        assert!(!from_ucs2(&u, &mut out));
        assert!(from_ucs4(&cps, &mut out));
        assert_eq!(out, s.as_bytes());
        let bmp: String = s.chars().filter(|&c| (c as u32) < 0x10000).collect();
        let u: Vec<u16> = bmp.encode_utf16().collect();
        out.clear();
        assert!(from_ucs2(&u, &mut out));
        assert_eq!(out, bmp.as_bytes());
    }
}
