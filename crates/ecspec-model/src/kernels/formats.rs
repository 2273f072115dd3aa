//! The GGML block formats multiplied natively, byte for byte as GGUF files store them
//! (ggml-common.h), and their dequantization (ggml-quants.c's formulas).

/// A weight matrix's storage type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WeightType {
    /// Dense f32 (matrices whose rows do not split into 32-value blocks; tiny test models).
    F32,
    /// 32 values: f16 scale `d`, 32 × i8; value = d·q.
    Q8_0,
    /// 32 values: f16 `d`, f16 `m`, 32 × u4; value = d·q + m.
    Q4_1,
    /// 32 values: f16 `d`, 32 high bits, 32 × u4; value = d·(q − 16).
    Q5_0,
    /// 256 values in 8 sub-blocks of 32 with 6-bit scales and mins; value = d·sc·q − dmin·m.
    Q4K,
    /// 256 values in 16 sub-blocks of 16 with i8 scales, 6-bit quants; value = d·sc·(q − 32).
    Q6K,
}

/// How a matrix's input rows are quantized for its kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ActFormat {
    /// Kept as f32.
    F32,
    /// Blocks of 32: f32 scale, 32 × i8 and their sum.
    Q8x32,
    /// Blocks of 256: f32 scale, 256 × i8 and the sums of each 16.
    Q8x256,
}

impl WeightType {
    /// Values per block.
    pub fn block_elems(self) -> usize {
        match self {
            WeightType::F32 => 1,
            WeightType::Q8_0 | WeightType::Q4_1 | WeightType::Q5_0 => 32,
            WeightType::Q4K | WeightType::Q6K => 256,
        }
    }

    /// Bytes per block.
    pub fn block_bytes(self) -> usize {
        match self {
            WeightType::F32 => 4,
            WeightType::Q8_0 => 34,
            WeightType::Q4_1 => 20,
            WeightType::Q5_0 => 22,
            WeightType::Q4K => 144,
            WeightType::Q6K => 210,
        }
    }

    /// The input format its kernel reads.
    pub fn act_format(self) -> ActFormat {
        match self {
            WeightType::F32 => ActFormat::F32,
            WeightType::Q8_0 | WeightType::Q4_1 | WeightType::Q5_0 => ActFormat::Q8x32,
            WeightType::Q4K | WeightType::Q6K => ActFormat::Q8x256,
        }
    }

    /// Values per block of the quantized input its kernel reads (1 for F32).
    pub fn act_block(self) -> usize {
        match self.act_format() {
            ActFormat::F32 => 1,
            ActFormat::Q8x32 => 32,
            ActFormat::Q8x256 => 256,
        }
    }

    /// GGML's name of the type.
    pub fn name(self) -> &'static str {
        match self {
            WeightType::F32 => "F32",
            WeightType::Q8_0 => "Q8_0",
            WeightType::Q4_1 => "Q4_1",
            WeightType::Q5_0 => "Q5_0",
            WeightType::Q4K => "Q4_K",
            WeightType::Q6K => "Q6_K",
        }
    }

    /// Every type, for tests and listings.
    pub const ALL: [WeightType; 6] = [
        WeightType::F32,
        WeightType::Q8_0,
        WeightType::Q4_1,
        WeightType::Q5_0,
        WeightType::Q4K,
        WeightType::Q6K,
    ];
}

/// The f16 at `b[at..at + 2]` (little-endian), as f32 (exact).
#[inline(always)]
pub(crate) fn f16_at(b: &[u8], at: usize) -> f32 {
    f16_to_f32(u16::from_le_bytes([b[at], b[at + 1]]))
}

/// IEEE binary16 → binary32, exact, inline (the `half` crate's conversion is an out-of-line
/// call with run-time CPU detection: too slow for once per 32 values).
#[inline(always)]
pub(crate) fn f16_to_f32(h: u16) -> f32 {
    let sign = ((h & 0x8000) as u32) << 16;
    let exp = ((h >> 10) & 0x1F) as u32;
    let man = (h & 0x3FF) as u32;
    let bits = if exp == 0x1F {
        sign | 0x7F80_0000 | (man << 13)
    } else if exp != 0 {
        sign | ((exp + 112) << 23) | (man << 13)
    } else {
        // Zero or subnormal: man · 2⁻²⁴, exact in f32.
        let v = man as f32 * (1.0 / 16_777_216.0);
        return if sign != 0 { -v } else { v };
    };
    f32::from_bits(bits)
}

/// Q4_K's 6-bit scale and min of sub-block `j` (0..8) from its 12 packed bytes
/// (ggml's `get_scale_min_k4`).
#[inline(always)]
pub(crate) fn scale_min_k4(j: usize, q: &[u8]) -> (u8, u8) {
    if j < 4 {
        (q[j] & 63, q[j + 4] & 63)
    } else {
        (
            (q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4),
            (q[j + 4] >> 4) | ((q[j] >> 6) << 4),
        )
    }
}

/// All 8 of Q4_K's 6-bit scales and mins at once from their 12 packed bytes (llama.cpp's
/// `utmp` trick: a dozen 32-bit operations instead of eight [`scale_min_k4`] calls): bytes
/// 0..8 of the result are the scales, 8..16 the mins.
#[inline(always)]
pub(crate) fn scales_mins_k4(q: &[u8]) -> [u8; 16] {
    const M1: u32 = 0x3f3f_3f3f;
    const M2: u32 = 0x0f0f_0f0f;
    const M3: u32 = 0x0303_0303;
    let u = |i: usize| u32::from_le_bytes([q[4 * i], q[4 * i + 1], q[4 * i + 2], q[4 * i + 3]]);
    let (u0, u1, u2) = (u(0), u(1), u(2));
    let sc_hi = (u2 & M2) | (((u0 >> 6) & M3) << 4);
    let m_hi = ((u2 >> 4) & M2) | (((u1 >> 6) & M3) << 4);
    let mut out = [0u8; 16];
    out[0..4].copy_from_slice(&(u0 & M1).to_le_bytes());
    out[4..8].copy_from_slice(&sc_hi.to_le_bytes());
    out[8..12].copy_from_slice(&(u1 & M1).to_le_bytes());
    out[12..16].copy_from_slice(&m_hi.to_le_bytes());
    out
}

/// Q6_K's 6-bit quant (0..64) and scale index (0..16) of value `e` (0..256) of a block.
#[inline(always)]
pub(crate) fn q6k_value(b: &[u8], e: usize) -> (i32, usize) {
    let (ql, qh) = (&b[..128], &b[128..192]);
    let (h, w) = (e / 128, e % 128);
    let (quarter, l) = (w / 32, w % 32);
    let (ql, qh) = (&ql[64 * h..], &qh[32 * h..]);
    let low = match quarter {
        0 => ql[l] & 0xF,
        1 => ql[l + 32] & 0xF,
        2 => ql[l] >> 4,
        _ => ql[l + 32] >> 4,
    };
    let high = (qh[l] >> (2 * quarter)) & 3;
    ((low | (high << 4)) as i32, 8 * h + 2 * quarter + l / 16)
}

/// Q5_0's 5-bit quant (0..32) of value `e` (0..32) of a block.
#[inline(always)]
pub(crate) fn q5_0_value(b: &[u8], e: usize) -> i32 {
    let qh = u32::from_le_bytes([b[2], b[3], b[4], b[5]]);
    let qs = &b[6..22];
    let low = if e < 16 { qs[e] & 0xF } else { qs[e - 16] >> 4 };
    (low as i32) | ((((qh >> e) & 1) as i32) << 4)
}

/// Q4_1's / Q4_K's 4-bit quant of value `e` of 32 packed in `qs` (16 bytes: low nibbles are
/// values 0..16, high nibbles 16..32).
#[inline(always)]
pub(crate) fn nibble32(qs: &[u8], e: usize) -> i32 {
    (if e < 16 { qs[e] & 0xF } else { qs[e - 16] >> 4 }) as i32
}

/// Dequantizes one row (`out.len()` values, a multiple of the block size) from its bytes,
/// with ggml's formulas (`dequantize_row_*`), so an embedding lookup returns what llama.cpp
/// and candle return.
pub fn dequantize_row(t: WeightType, bytes: &[u8], out: &mut [f32]) {
    let be = t.block_elems();
    for (b, o) in bytes
        .chunks_exact(t.block_bytes())
        .zip(out.chunks_exact_mut(be))
    {
        match t {
            WeightType::F32 => o[0] = f32::from_le_bytes([b[0], b[1], b[2], b[3]]),
            WeightType::Q8_0 => {
                let d = f16_at(b, 0);
                for (e, v) in o.iter_mut().enumerate() {
                    *v = b[2 + e] as i8 as f32 * d;
                }
            }
            WeightType::Q4_1 => {
                let (d, m) = (f16_at(b, 0), f16_at(b, 2));
                for (e, v) in o.iter_mut().enumerate() {
                    *v = nibble32(&b[4..20], e) as f32 * d + m;
                }
            }
            WeightType::Q5_0 => {
                let d = f16_at(b, 0);
                for (e, v) in o.iter_mut().enumerate() {
                    *v = (q5_0_value(b, e) - 16) as f32 * d;
                }
            }
            WeightType::Q4K => {
                let (d, dmin) = (f16_at(b, 0), f16_at(b, 2));
                let (scales, qs) = (&b[4..16], &b[16..144]);
                for c in 0..4 {
                    for half in 0..2 {
                        let (sc, m) = scale_min_k4(2 * c + half, scales);
                        let (d1, m1) = (d * sc as f32, dmin * m as f32);
                        for l in 0..32 {
                            let q = qs[32 * c + l];
                            let q = if half == 0 { q & 0xF } else { q >> 4 };
                            o[64 * c + 32 * half + l] = d1 * q as f32 - m1;
                        }
                    }
                }
            }
            WeightType::Q6K => {
                let d = f16_at(b, 208);
                for (e, v) in o.iter_mut().enumerate() {
                    let (q, s) = q6k_value(b, e);
                    *v = d * (b[192 + s] as i8) as f32 * (q - 32) as f32;
                }
            }
        }
    }
}
