//! The reference kernels: the canonical order of operations every SIMD path reproduces bit
//! for bit (see the module docs of [`super`]).

#![allow(clippy::needless_range_loop)] // index loops read like the formulas they implement

use super::acts::QuantizedRows;
use super::formats::{f16_at, nibble32, q5_0_value, q6k_value, scale_min_k4, WeightType};

/// The canonical reduction of the 8 lane accumulators and the min accumulator:
/// t_i = a_i + a_{i+4}; ((t_0 + t_2) + (t_1 + t_3)) + m.
#[inline(always)]
pub(crate) fn finish(a: [f32; 8], m: f32) -> f32 {
    let t = [a[0] + a[4], a[1] + a[5], a[2] + a[6], a[3] + a[7]];
    ((t[0] + t[2]) + (t[1] + t[3])) + m
}

/// Dot product of one quantized weight row (`w`: `a.nb` blocks of type `t`) with row `r` of
/// `a`: per block, integer lane sums (lane l holds the values e with (e mod 32) / 4 = l, each
/// times its integer sub-block scale), then acc_l = fma(d_w·d_x, lane_l, acc_l) and, for types
/// with a min, m = fma(min_w·d_x, S, m); finally [`finish`].
pub fn dot_row(t: WeightType, w: &[u8], a: &QuantizedRows, r: usize) -> f32 {
    let mut acc = [0f32; 8];
    let mut accm = 0f32;
    let bb = t.block_bytes();
    for b in 0..a.nb {
        let blk = &w[b * bb..(b + 1) * bb];
        let (dx, x, sums) = a.block(r, b);
        let mut lanes = [0i32; 8];
        let (dd, min) = match t {
            WeightType::Q8_0 => {
                for e in 0..32 {
                    lanes[e / 4] += blk[2 + e] as i8 as i32 * x[e] as i32;
                }
                (f16_at(blk, 0) * dx, None)
            }
            WeightType::Q4_1 => {
                for e in 0..32 {
                    lanes[e / 4] += nibble32(&blk[4..20], e) * x[e] as i32;
                }
                (f16_at(blk, 0) * dx, Some((f16_at(blk, 2) * dx, sums[0])))
            }
            WeightType::Q5_0 => {
                for e in 0..32 {
                    lanes[e / 4] += (q5_0_value(blk, e) - 16) * x[e] as i32;
                }
                (f16_at(blk, 0) * dx, None)
            }
            WeightType::Q4K => {
                let (scales, qs) = (&blk[4..16], &blk[16..144]);
                let mut s = 0i32;
                for j in 0..8 {
                    let (sc, m) = scale_min_k4(j, scales);
                    let (c, high) = (j / 2, j % 2 == 1);
                    for l in 0..32 {
                        let q = qs[32 * c + l];
                        let q = if high { q >> 4 } else { q & 0xF } as i32;
                        lanes[l / 4] += sc as i32 * q * x[32 * j + l] as i32;
                    }
                    s -= m as i32 * sums[j];
                }
                (f16_at(blk, 0) * dx, Some((f16_at(blk, 2) * dx, s)))
            }
            WeightType::Q6K => {
                for e in 0..256 {
                    let (q, si) = q6k_value(blk, e);
                    lanes[(e % 32) / 4] += (blk[192 + si] as i8) as i32 * (q - 32) * x[e] as i32;
                }
                (f16_at(blk, 208) * dx, None)
            }
            WeightType::F32 => unreachable!("F32 weights take the dense path"),
        };
        for l in 0..8 {
            acc[l] = dd.mul_add(lanes[l] as f32, acc[l]);
        }
        if let Some((mm, s)) = min {
            accm = mm.mul_add(s as f32, accm);
        }
    }
    finish(acc, accm)
}
