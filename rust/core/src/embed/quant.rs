//! Per-vector symmetric int8 quantisation with an int8 residual.
//!
//! `x ~ scale * code + res_scale * res` where `code = round(x / scale)`, `scale = max|x| / 127`,
//! and `res` quantises what `code` missed the same way. The first level is what a search scans
//! (1 byte a value); the second is read only to rescore a shortlist, and the two together keep
//! about 14 bits of precision, so no float32 copy of the keys is needed.
use half::f16;

/// One vector quantised to two int8 levels.
#[derive(Clone, Debug, PartialEq)]
pub struct Quantized8 {
    pub codes: Vec<i8>,
    pub scale: f32,
    pub res: Vec<i8>,
    pub res_scale: f32,
}

/// Quantises `x` into `codes` and returns the scale (`max|x| / 127`; 0 for a zero vector, and
/// NaN if `x` holds NaN or infinity, so that such a key scores NaN and ranks last).
pub fn quantize_level(x: &[f32], codes: &mut [i8]) -> f32 {
    quantize_to(x, codes, 127)
}

/// [`quantize_level`] with codes in `-levels..=levels` (scale `max|x| / levels`).
pub(crate) fn quantize_to(x: &[f32], codes: &mut [i8], levels: i8) -> f32 {
    let mut m = 0f32;
    let mut bad = false;
    for &v in x {
        bad |= !v.is_finite();
        m = m.max(v.abs());
    }
    if bad {
        codes.fill(0);
        return f32::NAN;
    }
    if m == 0.0 {
        codes.fill(0);
        return 0.0;
    }
    let l = levels as f32;
    let s = m / l;
    let inv = l / m;
    let lim = levels as i32;
    if m >= SMALL {
        for (c, &v) in codes.iter_mut().zip(x) {
            *c = round_small(v * inv).clamp(-lim, lim) as i8;
        }
    } else {
        // `l / m` overflows (or `v * inv` loses bits) for vectors this small: scale in f64.
        let inv = levels as f64 / m as f64;
        for (c, &v) in codes.iter_mut().zip(x) {
            *c = round_small((v as f64 * inv) as f32).clamp(-lim, lim) as i8;
        }
    }
    s
}

/// Below this largest magnitude a vector is quantised in f64 (`127 / m` stays a normal f32 down
/// to about 1e-36; the margin keeps `v * inv` exact too).
const SMALL: f32 = 1e-30;

/// `x.round() as i32` (halves away from zero) for `|x| < 2^23`, without the library call that
/// `f32::round` becomes on baseline x86-64 (it was most of an index build's quantising time).
/// Truncation is exact there and so is the fraction, so the result is the same.
#[inline(always)]
pub(crate) fn round_small(x: f32) -> i32 {
    debug_assert!(x.abs() < 8_388_608.0);
    let t = x as i32;
    let f = x - t as f32;
    t + (f >= 0.5) as i32 - (f <= -0.5) as i32
}

/// Both levels of one vector, written into the given buffers; returns `(scale, res_scale)`.
pub(crate) fn quantize_into(
    x: &[f32],
    codes: &mut [i8],
    res: &mut [i8],
    tmp: &mut Vec<f32>,
) -> (f32, f32) {
    let s = quantize_level(x, codes);
    if !s.is_finite() || s == 0.0 {
        res.fill(0);
        return (s, 0.0);
    }
    tmp.clear();
    tmp.extend(x.iter().zip(codes.iter()).map(|(&v, &c)| v - s * c as f32));
    let r = quantize_level(tmp, res);
    (s, r)
}

/// Quantises one vector to int8 + int8 residual.
pub fn quantize_i8(x: &[f32]) -> Quantized8 {
    let mut codes = vec![0i8; x.len()];
    let mut res = vec![0i8; x.len()];
    let (scale, res_scale) = quantize_into(x, &mut codes, &mut res, &mut Vec::new());
    Quantized8 {
        codes,
        scale,
        res,
        res_scale,
    }
}

/// f32 -> f16 (round to nearest even), SIMD where the processor has F16C.
pub(crate) fn to_f16(src: &[f32], dst: &mut [f16]) {
    use half::slice::HalfFloatSliceExt;
    dst.convert_from_f32_slice(src);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::embed::testutil::randn;

    #[test]
    fn round_small_is_round() {
        let mut vals = vec![
            0.0f32,
            0.5,
            -0.5,
            1.5,
            -1.5,
            2.5,
            126.5,
            -126.5,
            0.49999997,
            -0.49999997,
        ];
        vals.extend(randn(10_000, 3).iter().map(|v| v * 60.0));
        for x in [0.5f32, 1.5, 126.5] {
            vals.extend([x.next_down(), x.next_up(), -x.next_down(), -x.next_up()]);
        }
        for v in vals {
            assert_eq!(round_small(v), v.round() as i32, "{v}");
        }
    }

    #[test]
    fn two_levels_reconstruct_closely() {
        let x = randn(768, 9);
        let q = quantize_i8(&x);
        let m = x.iter().fold(0f32, |a, v| a.max(v.abs()));
        assert!((q.scale - m / 127.0).abs() < 1e-7);
        for i in 0..x.len() {
            let one = q.scale * q.codes[i] as f32;
            let two = one + q.res_scale * q.res[i] as f32;
            assert!((one - x[i]).abs() <= q.scale * 0.5 + 1e-6);
            assert!((two - x[i]).abs() <= q.scale / 254.0 * 1.01 + 1e-7, "{i}");
        }
        let z = quantize_i8(&[0.0; 5]);
        assert_eq!((z.scale, z.res_scale), (0.0, 0.0));
        assert!(quantize_i8(&[1.0, f32::NAN]).scale.is_nan());
    }

    #[test]
    fn tiny_and_huge_vectors_keep_their_codes() {
        // The codes do not depend on the vector's scale, down to the smallest floats (where
        // `127 / max` overflows f32) and up to the largest.
        let x = randn(64, 3);
        let want = quantize_i8(&x);
        for scale in [1e30f32, 1e-20, 1e-30, 1e-34, 1e-37, 1e-38] {
            let y: Vec<f32> = x.iter().map(|v| v * scale).collect();
            let q = quantize_i8(&y);
            assert_eq!(q.codes, want.codes, "scale {scale}");
            let rel = q.scale / (want.scale * scale);
            assert!((rel - 1.0).abs() < 1e-3, "scale {scale}: {rel}");
            if scale >= 1e-30 {
                assert_eq!(q.res, want.res, "scale {scale}");
            }
            for (&c, &r) in q.res.iter().zip(&want.res) {
                assert!((c as i32 - r as i32).abs() <= 1, "scale {scale}");
            }
        }
    }
}
