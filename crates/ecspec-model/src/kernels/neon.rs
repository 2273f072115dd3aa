//! aarch64 NEON kernels (baseline Advanced SIMD, so every ARMv8-A phone and board runs them):
//! `smull` + pairwise adds give each 32-bit lane the sum of 4 consecutive products, the same
//! integer the scalar reference puts in that lane; the float steps are the same fused
//! multiply-adds in the same order, so results equal [`super::scalar::dot_row`] bit for bit.
//! Eight lanes are two 4-lane registers: `lo` holds values 0..16 of each 32, `hi` 16..32.

#![allow(clippy::needless_range_loop)] // index loops read like the formulas they implement

use std::arch::aarch64::*;

use super::acts::QuantizedRows;
use super::formats::{f16_at, scales_mins_k4, WeightType};
use super::scalar::finish;

/// Columns `j0..j1` of `x · wᵀ` for input rows `r0..r0 + nr` (nr 1 to 4), written to
/// `out[r · n + j]`. `w` holds the matrix, `row_len` bytes per weight row.
///
/// # Safety
/// The CPU must support NEON; `w` must hold at least `j1` rows of `a.nb` blocks of type `t`
/// (not F32); `a` at least `r0 + nr` rows; `out` at least `(r0 + nr) · n` elements, of which
/// this call alone writes the ones it computes.
#[target_feature(enable = "neon")]
#[allow(clippy::too_many_arguments)]
pub unsafe fn sweep(
    t: WeightType,
    w: &[u8],
    row_len: usize,
    (j0, j1): (usize, usize),
    a: &QuantizedRows,
    r0: usize,
    nr: usize,
    (out, n): (*mut f32, usize),
) {
    debug_assert!(w.len() >= j1 * row_len && (1..=4).contains(&nr));
    macro_rules! run {
        ($f:ident, $R:literal) => {{
            for j in j0..j1 {
                let res = $f::<$R>(&w[j * row_len..(j + 1) * row_len], a, r0);
                for i in 0..$R {
                    *out.add((r0 + i) * n + j) = res[i];
                }
            }
        }};
    }
    macro_rules! by_rows {
        ($f:ident) => {
            match nr {
                1 => run!($f, 1),
                2 => run!($f, 2),
                3 => run!($f, 3),
                _ => run!($f, 4),
            }
        };
    }
    match t {
        WeightType::Q8_0 => by_rows!(q8_0),
        WeightType::Q4_1 => by_rows!(q4_1),
        WeightType::Q5_0 => by_rows!(q5_0),
        WeightType::Q4K => by_rows!(q4k),
        WeightType::Q6K => by_rows!(q6k),
        WeightType::F32 => unreachable!("F32 weights take the dense path"),
    }
}

/// 16 signed × 16 signed bytes → 4 lanes of sums of 4 consecutive products.
#[target_feature(enable = "neon")]
#[inline]
fn dot16(w: int8x16_t, x: int8x16_t) -> int32x4_t {
    let lo = vmull_s8(vget_low_s8(w), vget_low_s8(x));
    let hi = vmull_high_s8(w, x);
    vpaddlq_s16(vpaddq_s16(lo, hi))
}

/// 16 bytes of activations of row r, block b, from offset `off` in the block.
#[target_feature(enable = "neon")]
#[inline]
unsafe fn load_x(a: &QuantizedRows, r: usize, b: usize, off: usize) -> int8x16_t {
    vld1q_s8(a.q.as_ptr().add(r * a.k + b * a.block + off))
}

#[derive(Clone, Copy)]
struct Acc {
    lo: float32x4_t,
    hi: float32x4_t,
    m: f32,
}

#[target_feature(enable = "neon")]
#[inline]
fn zero_acc() -> Acc {
    Acc {
        lo: vdupq_n_f32(0.0),
        hi: vdupq_n_f32(0.0),
        m: 0.0,
    }
}

#[target_feature(enable = "neon")]
#[inline]
fn fma_lanes(acc: &mut Acc, dd: f32, lo: int32x4_t, hi: int32x4_t) {
    let d = vdupq_n_f32(dd);
    acc.lo = vfmaq_f32(acc.lo, d, vcvtq_f32_s32(lo));
    acc.hi = vfmaq_f32(acc.hi, d, vcvtq_f32_s32(hi));
}

#[target_feature(enable = "neon")]
#[inline]
fn finish_all<const R: usize>(acc: [Acc; R]) -> [f32; R] {
    let mut out = [0f32; R];
    for i in 0..R {
        let mut l = [0f32; 8];
        // SAFETY: `l` holds 8 f32s.
        unsafe {
            vst1q_f32(l.as_mut_ptr(), acc[i].lo);
            vst1q_f32(l.as_mut_ptr().add(4), acc[i].hi);
        }
        out[i] = finish(l, acc[i].m);
    }
    out
}

/// 16 packed bytes → (low nibbles: values 0..16, high nibbles: values 16..32).
#[target_feature(enable = "neon")]
#[inline]
unsafe fn nibbles(p: *const u8) -> (int8x16_t, int8x16_t) {
    let b = vld1q_u8(p);
    (
        vreinterpretq_s8_u8(vandq_u8(b, vdupq_n_u8(0xF))),
        vreinterpretq_s8_u8(vshrq_n_u8(b, 4)),
    )
}

#[target_feature(enable = "neon")]
unsafe fn q8_0<const R: usize>(w: &[u8], a: &QuantizedRows, r0: usize) -> [f32; R] {
    let mut acc = [zero_acc(); R];
    for b in 0..a.nb {
        let blk = &w[b * 34..b * 34 + 34];
        let dw = f16_at(blk, 0);
        let w0 = vld1q_s8(blk.as_ptr().add(2) as *const i8);
        let w1 = vld1q_s8(blk.as_ptr().add(18) as *const i8);
        for i in 0..R {
            let r = r0 + i;
            let lo = dot16(w0, load_x(a, r, b, 0));
            let hi = dot16(w1, load_x(a, r, b, 16));
            fma_lanes(&mut acc[i], dw * a.d[r * a.nb + b], lo, hi);
        }
    }
    finish_all(acc)
}

#[target_feature(enable = "neon")]
unsafe fn q4_1<const R: usize>(w: &[u8], a: &QuantizedRows, r0: usize) -> [f32; R] {
    let mut acc = [zero_acc(); R];
    for b in 0..a.nb {
        let blk = &w[b * 20..b * 20 + 20];
        let (dw, mw) = (f16_at(blk, 0), f16_at(blk, 2));
        let (w0, w1) = nibbles(blk.as_ptr().add(4));
        for i in 0..R {
            let r = r0 + i;
            let lo = dot16(w0, load_x(a, r, b, 0));
            let hi = dot16(w1, load_x(a, r, b, 16));
            let dx = a.d[r * a.nb + b];
            fma_lanes(&mut acc[i], dw * dx, lo, hi);
            acc[i].m = (mw * dx).mul_add(a.sums[r * a.nb + b] as f32, acc[i].m);
        }
    }
    finish_all(acc)
}

/// Byte e of the result = 0x10 where bit e of `bits` (16 bits) is set.
#[target_feature(enable = "neon")]
#[inline]
fn high_bits16(bits: u16) -> uint8x16_t {
    let bytes = vcombine_u8(vdup_n_u8(bits as u8), vdup_n_u8((bits >> 8) as u8));
    let mask: [u8; 16] = [1, 2, 4, 8, 16, 32, 64, 128, 1, 2, 4, 8, 16, 32, 64, 128];
    // SAFETY: `mask` holds 16 bytes.
    let m = unsafe { vld1q_u8(mask.as_ptr()) };
    vandq_u8(vtstq_u8(bytes, m), vdupq_n_u8(0x10))
}

#[target_feature(enable = "neon")]
unsafe fn q5_0<const R: usize>(w: &[u8], a: &QuantizedRows, r0: usize) -> [f32; R] {
    let mut acc = [zero_acc(); R];
    let sixteen = vdupq_n_s8(16);
    for b in 0..a.nb {
        let blk = &w[b * 22..b * 22 + 22];
        let dw = f16_at(blk, 0);
        let qh = u32::from_le_bytes([blk[2], blk[3], blk[4], blk[5]]);
        let (l4, h4) = nibbles(blk.as_ptr().add(6));
        let w0 = vsubq_s8(
            vreinterpretq_s8_u8(vorrq_u8(vreinterpretq_u8_s8(l4), high_bits16(qh as u16))),
            sixteen,
        );
        let w1 = vsubq_s8(
            vreinterpretq_s8_u8(vorrq_u8(
                vreinterpretq_u8_s8(h4),
                high_bits16((qh >> 16) as u16),
            )),
            sixteen,
        );
        for i in 0..R {
            let r = r0 + i;
            let lo = dot16(w0, load_x(a, r, b, 0));
            let hi = dot16(w1, load_x(a, r, b, 16));
            fma_lanes(&mut acc[i], dw * a.d[r * a.nb + b], lo, hi);
        }
    }
    finish_all(acc)
}

#[target_feature(enable = "neon")]
unsafe fn q4k<const R: usize>(w: &[u8], a: &QuantizedRows, r0: usize) -> [f32; R] {
    let mut acc = [zero_acc(); R];
    for b in 0..a.nb {
        let blk = &w[b * 144..b * 144 + 144];
        let (d, dmin) = (f16_at(blk, 0), f16_at(blk, 2));
        let sm = scales_mins_k4(&blk[4..16]);
        let sc: [i32; 8] = std::array::from_fn(|j| sm[j] as i32);
        let mins: [i32; 8] = std::array::from_fn(|j| sm[8 + j] as i32);
        let mut lanes = [(vdupq_n_s32(0), vdupq_n_s32(0)); R];
        for c in 0..4 {
            let p = blk.as_ptr().add(16 + 32 * c);
            let (l0, h0) = nibbles(p);
            let (l1, h1) = nibbles(p.add(16));
            for i in 0..R {
                let r = r0 + i;
                let (lo, hi) = &mut lanes[i];
                *lo = vmlaq_n_s32(*lo, dot16(l0, load_x(a, r, b, 64 * c)), sc[2 * c]);
                *hi = vmlaq_n_s32(*hi, dot16(l1, load_x(a, r, b, 64 * c + 16)), sc[2 * c]);
                *lo = vmlaq_n_s32(*lo, dot16(h0, load_x(a, r, b, 64 * c + 32)), sc[2 * c + 1]);
                *hi = vmlaq_n_s32(*hi, dot16(h1, load_x(a, r, b, 64 * c + 48)), sc[2 * c + 1]);
            }
        }
        for i in 0..R {
            let (dx, _, sums) = a.block(r0 + i, b);
            let mut s = 0i32;
            for j in 0..8 {
                s -= mins[j] * sums[j];
            }
            fma_lanes(&mut acc[i], d * dx, lanes[i].0, lanes[i].1);
            acc[i].m = (dmin * dx).mul_add(s as f32, acc[i].m);
        }
    }
    finish_all(acc)
}

#[target_feature(enable = "neon")]
unsafe fn q6k<const R: usize>(w: &[u8], a: &QuantizedRows, r0: usize) -> [f32; R] {
    let mut acc = [zero_acc(); R];
    let low = vdupq_n_u8(0xF);
    let m32 = vdupq_n_s8(32);
    for b in 0..a.nb {
        let blk = &w[b * 210..b * 210 + 210];
        let d = f16_at(blk, 208);
        let mut lanes = [(vdupq_n_s32(0), vdupq_n_s32(0)); R];
        for h in 0..2 {
            let p = blk.as_ptr();
            for half in 0..2 {
                // Values l = 16·half .. 16·half + 16 of each quarter of this 128.
                let b1 = vld1q_u8(p.add(64 * h + 16 * half));
                let b2 = vld1q_u8(p.add(64 * h + 32 + 16 * half));
                let bh = vld1q_u8(p.add(128 + 32 * h + 16 * half));
                let q = [
                    vorrq_u8(
                        vandq_u8(b1, low),
                        vshlq_n_u8(vandq_u8(bh, vdupq_n_u8(0x03)), 4),
                    ),
                    vorrq_u8(
                        vandq_u8(b2, low),
                        vshlq_n_u8(vandq_u8(bh, vdupq_n_u8(0x0C)), 2),
                    ),
                    vorrq_u8(vshrq_n_u8(b1, 4), vandq_u8(bh, vdupq_n_u8(0x30))),
                    vorrq_u8(
                        vshrq_n_u8(b2, 4),
                        vshrq_n_u8(vandq_u8(bh, vdupq_n_u8(0xC0)), 2),
                    ),
                ];
                for (qq, &qv) in q.iter().enumerate() {
                    let wv = vsubq_s8(vreinterpretq_s8_u8(qv), m32);
                    let s = blk[192 + 8 * h + 2 * qq + half] as i8 as i32;
                    for i in 0..R {
                        let x = load_x(a, r0 + i, b, 128 * h + 32 * qq + 16 * half);
                        let (lo, hi) = &mut lanes[i];
                        if half == 0 {
                            *lo = vmlaq_n_s32(*lo, dot16(wv, x), s);
                        } else {
                            *hi = vmlaq_n_s32(*hi, dot16(wv, x), s);
                        }
                    }
                }
            }
        }
        for i in 0..R {
            let dx = a.d[(r0 + i) * a.nb + b];
            fma_lanes(&mut acc[i], d * dx, lanes[i].0, lanes[i].1);
        }
    }
    finish_all(acc)
}
