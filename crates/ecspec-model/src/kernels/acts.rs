//! Quantization of a matrix product's input rows (activations) to 8-bit blocks, as llama.cpp
//! does before its integer dot products (Q8_0 / Q8_K), computed the same way on every CPU:
//! scalar code, no SIMD, so the quantized bytes never depend on the kernel picked.

use super::formats::ActFormat;

/// Rows of activations quantized to 8-bit blocks of 32 ([`ActFormat::Q8x32`]) or 256
/// ([`ActFormat::Q8x256`]). Block b of row r: scale `d[r·nb + b]`, values
/// `q[r·k + b·B ..][..B]`, sums `sums[r·spb·nb + b·spb ..][..spb]` (spb = B / 32: the sum of
/// each 32 values).
pub struct QuantizedRows {
    /// Block size B: 32 or 256.
    pub block: usize,
    /// Values per row.
    pub k: usize,
    /// Blocks per row (k / B).
    pub nb: usize,
    /// Scales, `rows × nb`.
    pub d: Vec<f32>,
    /// Quantized values in −127..=127, `rows × k`.
    pub q: Vec<i8>,
    /// Sums of the quantized values, one per 32 (Q4_1's and Q4_K's min terms).
    pub sums: Vec<i32>,
}

/// Round half to even for |v| < 2²²: adding and subtracting 1.5·2²³ leaves the integer part
/// rounded by the FPU's default mode (IEEE 754 round-to-nearest-even), on every CPU.
#[inline(always)]
fn round_even(v: f32) -> f32 {
    const MAGIC: f32 = 12_582_912.0;
    (v + MAGIC) - MAGIC
}

impl QuantizedRows {
    /// Quantizes `rows` rows of `k` values (`x.len() == rows · k`, `k` a multiple of the
    /// block size): per block d = max|x| / 127, q = round-half-even(x / d) in −127..=127
    /// (symmetric, so the AVX2 sign trick never meets −128).
    pub fn quantize(format: ActFormat, x: &[f32], rows: usize, k: usize) -> Self {
        let block = match format {
            ActFormat::Q8x256 => 256,
            _ => 32,
        };
        debug_assert!(k.is_multiple_of(block) && x.len() == rows * k);
        let nb = k / block;
        let spb = block / 32;
        let mut d = Vec::with_capacity(rows * nb);
        let mut q = vec![0i8; rows * k];
        let mut sums = Vec::with_capacity(rows * nb * spb);
        for (xb, qb) in x.chunks_exact(block).zip(q.chunks_exact_mut(block)) {
            let amax = xb.iter().fold(0f32, |m, v| m.max(v.abs()));
            let scale = amax / 127.0;
            let inv = if scale != 0.0 { 1.0 / scale } else { 0.0 };
            for (o, &v) in qb.iter_mut().zip(xb) {
                // NaN and ±inf inputs saturate (`as` never panics).
                *o = round_even(v * inv).clamp(-127.0, 127.0) as i8;
            }
            d.push(scale);
            for s in qb.chunks_exact(block / spb) {
                sums.push(s.iter().map(|&v| v as i32).sum());
            }
        }
        Self {
            block,
            k,
            nb,
            d,
            q,
            sums,
        }
    }

    /// Block b of row r: its scale, values and sums.
    #[inline(always)]
    pub fn block(&self, r: usize, b: usize) -> (f32, &[i8], &[i32]) {
        let spb = self.block / 32;
        let at = r * self.k + b * self.block;
        let s = (r * self.nb + b) * spb;
        (
            self.d[r * self.nb + b],
            &self.q[at..at + self.block],
            &self.sums[s..s + spb],
        )
    }
}
