//! Row-wise kernels in plain Rust.
//!
//! **Invariant:** every kernel here computes each row (token position) with the same sequence
//! of floating-point operations whatever the number of rows in the block. Together with
//! candle's quantized matmul (which quantizes and dots each row on its own), this makes a
//! block forward over K tokens bit-identical to K single-token forwards, so speculative
//! verification and autoregressive decoding of the target pick exactly the same tokens.

/// Dot product with a fixed 8-lane accumulation order (vectorises, yet deterministic).
#[inline(always)]
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let chunks = a.len() / 8;
    for c in 0..chunks {
        let (x, y) = (&a[c * 8..c * 8 + 8], &b[c * 8..c * 8 + 8]);
        for l in 0..8 {
            acc[l] += x[l] * y[l];
        }
    }
    let mut tail = 0f32;
    for i in chunks * 8..a.len() {
        tail += a[i] * b[i];
    }
    ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7])) + tail
}

/// RMSNorm (Zhang & Sennrich 2019) of each row of `x` (`rows × w.len()`, row-major):
/// y = x / sqrt(mean(x²) + eps) ⊙ w.
pub fn rms_norm(x: &[f32], w: &[f32], eps: f32) -> Vec<f32> {
    let d = w.len();
    let mut out = vec![0f32; x.len()];
    for (xr, yr) in x.chunks_exact(d).zip(out.chunks_exact_mut(d)) {
        let ms = dot(xr, xr) / d as f32;
        let scale = 1.0 / (ms + eps).sqrt();
        for i in 0..d {
            yr[i] = xr[i] * scale * w[i];
        }
    }
    out
}

/// How RoPE pairs dimensions within a head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RopeStyle {
    /// Pairs (2i, 2i+1): llama.cpp's `LLAMA_ROPE_TYPE_NORM` (Llama GGUF files).
    Interleaved,
    /// Pairs (i, i + d/2): llama.cpp's `LLAMA_ROPE_TYPE_NEOX` (Qwen2).
    Halves,
}

/// Cosine and sine tables of rotary position embeddings (Su et al. 2021, RoFormer eq. 34)
/// for positions `start..start+len`: angle(p, i) = p · θ^(−2i/head_dim).
pub struct RopeTables {
    half: usize,
    cos: Vec<f32>,
    sin: Vec<f32>,
}

impl RopeTables {
    /// Tables for `len` positions starting at `start`.
    pub fn new(start: usize, len: usize, head_dim: usize, theta: f32) -> Self {
        let half = head_dim / 2;
        let mut cos = Vec::with_capacity(len * half);
        let mut sin = Vec::with_capacity(len * half);
        for p in start..start + len {
            for i in 0..half {
                let freq = 1.0 / theta.powf(2.0 * i as f32 / head_dim as f32);
                let a = p as f32 * freq;
                cos.push(a.cos());
                sin.push(a.sin());
            }
        }
        Self { half, cos, sin }
    }

    /// Rotates `x` (`rows × heads × head_dim`) in place; row r has position `start + r`.
    pub fn apply(&self, x: &mut [f32], heads: usize, style: RopeStyle) {
        let hd = self.half * 2;
        for (r, row) in x.chunks_exact_mut(heads * hd).enumerate() {
            let c = &self.cos[r * self.half..(r + 1) * self.half];
            let s = &self.sin[r * self.half..(r + 1) * self.half];
            for head in row.chunks_exact_mut(hd) {
                for i in 0..self.half {
                    let (a, b) = match style {
                        RopeStyle::Interleaved => (2 * i, 2 * i + 1),
                        RopeStyle::Halves => (i, i + self.half),
                    };
                    let (x0, x1) = (head[a], head[b]);
                    head[a] = x0 * c[i] - x1 * s[i];
                    head[b] = x0 * s[i] + x1 * c[i];
                }
            }
        }
    }
}

/// Causal scaled dot-product attention (Vaswani et al. 2017, eq. 1) with grouped-query heads.
///
/// `q`: `rows × heads × hd` for positions `start..start+rows`; `k`, `v`: the whole KV cache,
/// `(start+rows) × kv_heads × hd`. Query row r attends to keys `0..=start+r`.
/// Returns `rows × heads × hd`.
pub fn causal_attention(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    start: usize,
    heads: usize,
    kv_heads: usize,
    hd: usize,
) -> Vec<f32> {
    let group = heads / kv_heads;
    let kv_stride = kv_heads * hd;
    let scale = 1.0 / (hd as f32).sqrt();
    let mut out = vec![0f32; q.len()];
    let one = |(idx, o): (usize, &mut [f32])| {
        attend_one(q, k, v, (start, heads, group, hd, kv_stride, scale), idx, o)
    };
    // Each (row, head) is computed alone, so splitting over threads changes no number. The
    // calling thread takes the first share and the pool the others (one wake-up per share,
    // the caller never parks while its work waits for a worker); tiny calls stay on the caller.
    let items = q.len() / hd.max(1);
    let work = items * (start + q.len() / (heads * hd).max(1)) * hd;
    let parts = if work >= 1 << 15 {
        rayon::current_num_threads().clamp(1, items.max(1))
    } else {
        1
    };
    let per = items.div_ceil(parts).max(1);
    let mut shares: Vec<(usize, &mut [f32])> = out
        .chunks_mut(per * hd)
        .enumerate()
        .map(|(c, s)| (c * per, s))
        .collect();
    let share = |(first, s): (usize, &mut [f32])| {
        for (i, o) in s.chunks_mut(hd).enumerate() {
            one((first + i, o));
        }
    };
    match shares.len() {
        0 => {}
        1 => share(shares.pop().expect("one share")),
        _ => {
            let first = shares.remove(0);
            rayon::in_place_scope(|sc| {
                for s in shares {
                    sc.spawn(move |_| share(s));
                }
                share(first);
            });
        }
    }
    out
}

/// One (row, head) of [`causal_attention`] into `o` (`hd` values), on AVX2 when the CPU has
/// it. The code has no fused multiply-adds and fixes its summation order ([`dot`]'s 8 lanes),
/// and the compiler never reassociates floats, so the AVX2 build of it computes the very same
/// numbers as the baseline one, only wider.
fn attend_one(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    dims: (usize, usize, usize, usize, usize, f32),
    idx: usize,
    o: &mut [f32],
) {
    #[cfg(target_arch = "x86_64")]
    {
        #[target_feature(enable = "avx2")]
        fn wide(
            q: &[f32],
            k: &[f32],
            v: &[f32],
            dims: (usize, usize, usize, usize, usize, f32),
            idx: usize,
            o: &mut [f32],
        ) {
            attend_body(q, k, v, dims, idx, o)
        }
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU supports AVX2 (checked just above).
            return unsafe { wide(q, k, v, dims, idx, o) };
        }
    }
    attend_body(q, k, v, dims, idx, o)
}

#[inline(always)]
fn attend_body(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    (start, heads, group, hd, kv_stride, scale): (usize, usize, usize, usize, usize, f32),
    idx: usize,
    o: &mut [f32],
) {
    {
        let (r, h) = (idx / heads, idx % heads);
        let g = h / group;
        let qv = &q[idx * hd..(idx + 1) * hd];
        let n = start + r + 1;
        let mut scores = Vec::with_capacity(n);
        let mut max = f32::NEG_INFINITY;
        for j in 0..n {
            let kj = &k[j * kv_stride + g * hd..j * kv_stride + (g + 1) * hd];
            let s = dot(qv, kj) * scale;
            max = max.max(s);
            scores.push(s);
        }
        let mut sum = 0f32;
        for s in scores.iter_mut() {
            *s = (*s - max).exp();
            sum += *s;
        }
        let inv = 1.0 / sum;
        for (j, s) in scores.iter().enumerate() {
            let w = s * inv;
            let vj = &v[j * kv_stride + g * hd..j * kv_stride + (g + 1) * hd];
            for d in 0..hd {
                o[d] += w * vj[d];
            }
        }
    }
}

/// SwiGLU gating (Shazeer 2020): silu(gate) ⊙ up, in place into `gate`.
pub fn silu_mul(gate: &mut [f32], up: &[f32]) {
    for (g, u) in gate.iter_mut().zip(up) {
        *g = *g / (1.0 + (-*g).exp()) * u;
    }
}

/// `x += y` elementwise.
pub fn add_assign(x: &mut [f32], y: &[f32]) {
    for (a, b) in x.iter_mut().zip(y) {
        *a += b;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dot_matches_naive_on_integers() {
        let a: Vec<f32> = (0..19).map(|i| i as f32).collect();
        let b: Vec<f32> = (0..19).map(|i| (i % 3) as f32).collect();
        let naive: f32 = a.iter().zip(&b).map(|(x, y)| x * y).sum();
        assert_eq!(dot(&a, &b), naive);
    }

    #[test]
    fn rms_norm_exact_for_constant_row() {
        // mean(x²) = 4 → scale = 1/sqrt(4 + 0) = 0.5.
        let y = rms_norm(&[2.0, -2.0, 2.0, -2.0], &[1.0, 2.0, 3.0, 4.0], 0.0);
        assert_eq!(y, vec![1.0, -2.0, 3.0, -4.0]);
    }

    #[test]
    fn attention_single_key_returns_value() {
        // One position: softmax over one key is 1, output = v.
        let out = causal_attention(&[1.0, 0.0], &[0.5, 0.5], &[3.0, -1.0], 0, 1, 1, 2);
        assert_eq!(out, vec![3.0, -1.0]);
    }

    #[test]
    fn attention_rows_do_not_depend_on_block_size() {
        let (heads, kvh, hd, n) = (4, 2, 8, 6);
        let f = |i: usize| ((i * 7919) % 101) as f32 / 50.0 - 1.0;
        let q: Vec<f32> = (0..n * heads * hd).map(f).collect();
        let k: Vec<f32> = (0..n * kvh * hd).map(|i| f(i + 3)).collect();
        let v: Vec<f32> = (0..n * kvh * hd).map(|i| f(i + 11)).collect();
        let block = causal_attention(&q, &k, &v, 0, heads, kvh, hd);
        for r in 0..n {
            let qr = &q[r * heads * hd..(r + 1) * heads * hd];
            let one = causal_attention(
                qr,
                &k[..(r + 1) * kvh * hd],
                &v[..(r + 1) * kvh * hd],
                r,
                heads,
                kvh,
                hd,
            );
            assert_eq!(
                one,
                block[r * heads * hd..(r + 1) * heads * hd].to_vec(),
                "row {r}"
            );
        }
    }

    #[test]
    fn rope_position_zero_is_identity_and_rotation_preserves_norm() {
        let t = RopeTables::new(0, 2, 4, 10_000.0);
        let mut x = vec![1.0, 2.0, 3.0, 4.0, 1.0, 2.0, 3.0, 4.0];
        t.apply(&mut x, 1, RopeStyle::Halves);
        assert_eq!(&x[..4], &[1.0, 2.0, 3.0, 4.0]);
        let n0: f32 = [1.0f32, 2.0, 3.0, 4.0].iter().map(|v| v * v).sum();
        let n1: f32 = x[4..].iter().map(|v| v * v).sum();
        assert!((n0 - n1).abs() < 1e-4);
    }
}
