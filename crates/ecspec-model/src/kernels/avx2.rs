//! x86-64 AVX2 + FMA kernels: llama.cpp's integer tricks (`maddubs` on unsigned × signed
//! bytes, `madd` to 32-bit lanes), arranged so that each lane holds exactly the integer sum
//! the scalar reference puts there and the float steps are the same fused multiply-adds in the
//! same order: results equal [`super::scalar::dot_row`] bit for bit. A tile is J weight rows ×
//! R input rows (4 × 1 for decoding, 1 × 4 for blocks): each weight block is decoded once for
//! all R rows, and J·R independent accumulator chains keep the FMA units busy.

#![allow(clippy::needless_range_loop)] // index loops read like the formulas they implement

use std::arch::x86_64::*;

use super::acts::QuantizedRows;
use super::formats::{scales_mins_k4, WeightType};
use super::scalar::finish;

/// Columns `j0..j1` of `x · wᵀ` for input rows `r0..r0 + nr` (nr 1 to 4), written to
/// `out[r · n + j]`. `w` holds the matrix, `row_len` bytes per weight row.
///
/// # Safety
/// The CPU must support AVX2, FMA and F16C; `w` must hold at least `j1` rows of `a.nb` blocks
/// of type `t` (not F32); `a` at least `r0 + nr` rows; `out` at least `(r0 + nr) · n`
/// elements, of which this call alone writes the ones it computes.
#[target_feature(enable = "avx2,fma,f16c")]
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
    let wp = w.as_ptr();
    macro_rules! run {
        ($f:ident, $J:literal, $R:literal) => {{
            let mut j = j0;
            #[allow(clippy::int_plus_one)]
            while j + $J <= j1 {
                let res = $f::<$J, $R>(std::array::from_fn(|jj| wp.add((j + jj) * row_len)), a, r0);
                for jj in 0..$J {
                    for i in 0..$R {
                        *out.add((r0 + i) * n + j + jj) = res[jj][i];
                    }
                }
                j += $J;
            }
            while j < j1 {
                let res = $f::<1, $R>([wp.add(j * row_len)], a, r0);
                for i in 0..$R {
                    *out.add((r0 + i) * n + j) = res[0][i];
                }
                j += 1;
            }
        }};
    }
    macro_rules! by_rows {
        ($f:ident) => {
            match nr {
                1 => run!($f, 4, 1),
                2 => run!($f, 2, 2),
                3 => run!($f, 1, 3),
                _ => run!($f, 1, 4),
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

#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
fn lanes_to_array(v: __m256) -> [f32; 8] {
    let mut a = [0f32; 8];
    // SAFETY: `a` is 8 f32s; storeu has no alignment requirement.
    unsafe { _mm256_storeu_ps(a.as_mut_ptr(), v) };
    a
}

#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
fn finish_all<const J: usize, const R: usize>(
    acc: [[__m256; R]; J],
    accm: [[f32; R]; J],
) -> [[f32; R]; J] {
    let mut out = [[0f32; R]; J];
    for jj in 0..J {
        for i in 0..R {
            out[jj][i] = finish(lanes_to_array(acc[jj][i]), accm[jj][i]);
        }
    }
    out
}

/// The sum of 8 i32 lanes (exact: integer).
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
fn hsum_i32(v: __m256i) -> i32 {
    let x = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
    let x = _mm_add_epi32(x, _mm_unpackhi_epi64(x, x));
    let x = _mm_add_epi32(x, _mm_shuffle_epi32(x, 0b01));
    _mm_cvtsi128_si32(x)
}

/// Signed × signed bytes → 8 lanes of sums of 4 products, given `aw` = |w| (computed once per
/// weight block for all rows). `w` may hold −128 (|−128| reads as 128 unsigned); `x` never does.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
fn dot_signed(w: __m256i, aw: __m256i, x: __m256i) -> __m256i {
    let sx = _mm256_sign_epi8(x, w);
    _mm256_madd_epi16(_mm256_maddubs_epi16(aw, sx), _mm256_set1_epi16(1))
}

/// 16 packed bytes → 32 nibbles: low nibbles in bytes 0..16, high nibbles in 16..32.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
unsafe fn nibbles32(p: *const u8) -> __m256i {
    let tmp = _mm_loadu_si128(p as *const __m128i);
    _mm256_and_si256(
        _mm256_set_m128i(_mm_srli_epi16(tmp, 4), tmp),
        _mm256_set1_epi8(0xF),
    )
}

/// Byte e = 0xFF where bit e of `x` is set (llama.cpp's `bytes_from_bits_32`).
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
fn bytes_from_bits(x: u32) -> __m256i {
    let shuf = _mm256_set_epi64x(
        0x0303030303030303,
        0x0202020202020202,
        0x0101010101010101,
        0x0000000000000000,
    );
    let bytes = _mm256_shuffle_epi8(_mm256_set1_epi32(x as i32), shuf);
    let bytes = _mm256_or_si256(bytes, _mm256_set1_epi64x(0x7fbfdfeff7fbfdfe));
    _mm256_cmpeq_epi8(bytes, _mm256_set1_epi64x(-1))
}

/// Per row of the tile: its quantized values, scales and sums (row starts).
struct Rows<const R: usize> {
    q: [*const i8; R],
    d: [*const f32; R],
    s: [*const i32; R],
}

impl<const R: usize> Rows<R> {
    #[inline(always)]
    fn new(a: &QuantizedRows, r0: usize) -> Self {
        let spb = a.block / 32;
        Self {
            q: std::array::from_fn(|i| a.q[(r0 + i) * a.k..].as_ptr()),
            d: std::array::from_fn(|i| a.d[(r0 + i) * a.nb..].as_ptr()),
            s: std::array::from_fn(|i| a.sums[(r0 + i) * a.nb * spb..].as_ptr()),
        }
    }
}

/// f16 → f32 with F16C (exact, like every other path's conversion).
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
unsafe fn f16(p: *const u8) -> f32 {
    let h = u16::from_le_bytes([*p, *p.add(1)]);
    _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(h as i32)))
}

#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
unsafe fn load(p: *const i8) -> __m256i {
    _mm256_loadu_si256(p as *const __m256i)
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn q8_0<const J: usize, const R: usize>(
    w: [*const u8; J],
    a: &QuantizedRows,
    r0: usize,
) -> [[f32; R]; J] {
    let x = Rows::<R>::new(a, r0);
    let mut acc = [[_mm256_setzero_ps(); R]; J];
    for b in 0..a.nb {
        let dx: [f32; R] = std::array::from_fn(|i| *x.d[i].add(b));
        let xs: [__m256i; R] = std::array::from_fn(|i| load(x.q[i].add(32 * b)));
        for jj in 0..J {
            let blk = w[jj].add(b * 34);
            let dw = f16(blk);
            let qw = load(blk.add(2) as *const i8);
            let aw = _mm256_sign_epi8(qw, qw);
            for i in 0..R {
                let lanes = dot_signed(qw, aw, xs[i]);
                let dd = _mm256_set1_ps(dw * dx[i]);
                acc[jj][i] = _mm256_fmadd_ps(dd, _mm256_cvtepi32_ps(lanes), acc[jj][i]);
            }
        }
    }
    finish_all(acc, [[0.0; R]; J])
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn q4_1<const J: usize, const R: usize>(
    w: [*const u8; J],
    a: &QuantizedRows,
    r0: usize,
) -> [[f32; R]; J] {
    let x = Rows::<R>::new(a, r0);
    let mut acc = [[_mm256_setzero_ps(); R]; J];
    let mut accm = [[0f32; R]; J];
    let ones = _mm256_set1_epi16(1);
    for b in 0..a.nb {
        let dx: [f32; R] = std::array::from_fn(|i| *x.d[i].add(b));
        let sx: [f32; R] = std::array::from_fn(|i| *x.s[i].add(b) as f32);
        let xs: [__m256i; R] = std::array::from_fn(|i| load(x.q[i].add(32 * b)));
        for jj in 0..J {
            let blk = w[jj].add(b * 20);
            let (dw, mw) = (f16(blk), f16(blk.add(2)));
            let q = nibbles32(blk.add(4));
            for i in 0..R {
                let lanes = _mm256_madd_epi16(_mm256_maddubs_epi16(q, xs[i]), ones);
                let dd = _mm256_set1_ps(dw * dx[i]);
                acc[jj][i] = _mm256_fmadd_ps(dd, _mm256_cvtepi32_ps(lanes), acc[jj][i]);
                accm[jj][i] = (mw * dx[i]).mul_add(sx[i], accm[jj][i]);
            }
        }
    }
    finish_all(acc, accm)
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn q5_0<const J: usize, const R: usize>(
    w: [*const u8; J],
    a: &QuantizedRows,
    r0: usize,
) -> [[f32; R]; J] {
    let x = Rows::<R>::new(a, r0);
    let mut acc = [[_mm256_setzero_ps(); R]; J];
    for b in 0..a.nb {
        let dx: [f32; R] = std::array::from_fn(|i| *x.d[i].add(b));
        let xs: [__m256i; R] = std::array::from_fn(|i| load(x.q[i].add(32 * b)));
        for jj in 0..J {
            let blk = w[jj].add(b * 22);
            let dw = f16(blk);
            let qh = u32::from_le_bytes([*blk.add(2), *blk.add(3), *blk.add(4), *blk.add(5)]);
            let q4 = nibbles32(blk.add(6));
            let hi = _mm256_and_si256(bytes_from_bits(qh), _mm256_set1_epi8(0x10));
            let qw = _mm256_sub_epi8(_mm256_or_si256(q4, hi), _mm256_set1_epi8(16));
            let aw = _mm256_sign_epi8(qw, qw);
            for i in 0..R {
                let lanes = dot_signed(qw, aw, xs[i]);
                let dd = _mm256_set1_ps(dw * dx[i]);
                acc[jj][i] = _mm256_fmadd_ps(dd, _mm256_cvtepi32_ps(lanes), acc[jj][i]);
            }
        }
    }
    finish_all(acc, [[0.0; R]; J])
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn q4k<const J: usize, const R: usize>(
    w: [*const u8; J],
    a: &QuantizedRows,
    r0: usize,
) -> [[f32; R]; J] {
    let x = Rows::<R>::new(a, r0);
    let mut acc = [[_mm256_setzero_ps(); R]; J];
    let mut accm = [[0f32; R]; J];
    let low = _mm256_set1_epi8(0xF);
    for b in 0..a.nb {
        let dx: [f32; R] = std::array::from_fn(|i| *x.d[i].add(b));
        for jj in 0..J {
            let blk = w[jj].add(b * 144);
            let (d, dmin) = (f16(blk), f16(blk.add(2)));
            let sm = scales_mins_k4(std::slice::from_raw_parts(blk.add(4), 12));
            let sc: [i16; 8] = std::array::from_fn(|j| sm[j] as i16);
            let mins = _mm256_cvtepu8_epi32(_mm_loadl_epi64(sm.as_ptr().add(8) as *const __m128i));
            let mut lanes = [_mm256_setzero_si256(); R];
            for c in 0..4 {
                let bits = _mm256_loadu_si256(blk.add(16 + 32 * c) as *const __m256i);
                let lo = _mm256_and_si256(bits, low);
                let hi = _mm256_and_si256(_mm256_srli_epi16(bits, 4), low);
                let s_lo = _mm256_set1_epi16(sc[2 * c]);
                let s_hi = _mm256_set1_epi16(sc[2 * c + 1]);
                for i in 0..R {
                    let xp = x.q[i].add(256 * b + 64 * c);
                    let p_lo = _mm256_maddubs_epi16(lo, load(xp));
                    let p_hi = _mm256_maddubs_epi16(hi, load(xp.add(32)));
                    let s = _mm256_add_epi32(
                        _mm256_madd_epi16(p_lo, s_lo),
                        _mm256_madd_epi16(p_hi, s_hi),
                    );
                    lanes[i] = _mm256_add_epi32(lanes[i], s);
                }
            }
            for i in 0..R {
                // S = −Σ_j min_j · (sum of the 32 inputs of sub-block j): exact in i32.
                let sums = _mm256_loadu_si256(x.s[i].add(8 * b) as *const __m256i);
                let s = -hsum_i32(_mm256_mullo_epi32(mins, sums));
                let dd = _mm256_set1_ps(d * dx[i]);
                acc[jj][i] = _mm256_fmadd_ps(dd, _mm256_cvtepi32_ps(lanes[i]), acc[jj][i]);
                accm[jj][i] = (dmin * dx[i]).mul_add(s as f32, accm[jj][i]);
            }
        }
    }
    finish_all(acc, accm)
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn q6k<const J: usize, const R: usize>(
    w: [*const u8; J],
    a: &QuantizedRows,
    r0: usize,
) -> [[f32; R]; J] {
    let x = Rows::<R>::new(a, r0);
    let mut acc = [[_mm256_setzero_ps(); R]; J];
    let low = _mm256_set1_epi8(0xF);
    let m32 = _mm256_set1_epi8(32);
    for b in 0..a.nb {
        let dx: [f32; R] = std::array::from_fn(|i| *x.d[i].add(b));
        for jj in 0..J {
            let blk = w[jj].add(b * 210);
            let d = f16(blk.add(208));
            let mut lanes = [_mm256_setzero_si256(); R];
            for h in 0..2 {
                let b1 = _mm256_loadu_si256(blk.add(64 * h) as *const __m256i);
                let b2 = _mm256_loadu_si256(blk.add(64 * h + 32) as *const __m256i);
                let bh = _mm256_loadu_si256(blk.add(128 + 32 * h) as *const __m256i);
                let q = [
                    _mm256_or_si256(
                        _mm256_and_si256(b1, low),
                        _mm256_slli_epi16(_mm256_and_si256(bh, _mm256_set1_epi8(0x03)), 4),
                    ),
                    _mm256_or_si256(
                        _mm256_and_si256(b2, low),
                        _mm256_slli_epi16(_mm256_and_si256(bh, _mm256_set1_epi8(0x0C)), 2),
                    ),
                    _mm256_or_si256(
                        _mm256_and_si256(_mm256_srli_epi16(b1, 4), low),
                        _mm256_and_si256(bh, _mm256_set1_epi8(0x30)),
                    ),
                    _mm256_or_si256(
                        _mm256_and_si256(_mm256_srli_epi16(b2, 4), low),
                        _mm256_srli_epi16(_mm256_and_si256(bh, _mm256_set1_epi8(0xC0u8 as i8)), 2),
                    ),
                ];
                for (qq, &qv) in q.iter().enumerate() {
                    let s0 = *blk.add(192 + 8 * h + 2 * qq) as i8 as i16;
                    let s1 = *blk.add(192 + 8 * h + 2 * qq + 1) as i8 as i16;
                    let scale = _mm256_set_m128i(_mm_set1_epi16(s1), _mm_set1_epi16(s0));
                    for i in 0..R {
                        let xv = load(x.q[i].add(256 * b + 128 * h + 32 * qq));
                        let prod = _mm256_sub_epi16(
                            _mm256_maddubs_epi16(qv, xv),
                            _mm256_maddubs_epi16(m32, xv),
                        );
                        lanes[i] = _mm256_add_epi32(lanes[i], _mm256_madd_epi16(prod, scale));
                    }
                }
            }
            for i in 0..R {
                let dd = _mm256_set1_ps(d * dx[i]);
                acc[jj][i] = _mm256_fmadd_ps(dd, _mm256_cvtepi32_ps(lanes[i]), acc[jj][i]);
            }
        }
    }
    finish_all(acc, [[0.0; R]; J])
}
