//! The quantized matrix kernels: every SIMD path this CPU supports equals the scalar
//! reference bit for bit on random blocks of every weight type; a row's output does not depend
//! on how many rows share its block; dequantization equals candle's (ggml's formulas); and the
//! products are within the stated quantization bound of the f32 product.

use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{Device, Tensor};
use ecspec_model::kernels::{matmul_on, Isa, QWeight, WeightType};

/// SplitMix64: reproducible inputs without a dependency.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in [-1, 1).
    fn unit(&mut self) -> f32 {
        (self.next() >> 40) as f32 / (1u64 << 23) as f32 - 1.0
    }
}

fn dtype(t: WeightType) -> GgmlDType {
    match t {
        WeightType::F32 => GgmlDType::F32,
        WeightType::Q8_0 => GgmlDType::Q8_0,
        WeightType::Q4_1 => GgmlDType::Q4_1,
        WeightType::Q5_0 => GgmlDType::Q5_0,
        WeightType::Q4K => GgmlDType::Q4K,
        WeightType::Q6K => GgmlDType::Q6K,
    }
}

/// A random `rows × cols` matrix quantized by candle to `t` (real, valid blocks; values with
/// a spread of magnitudes per row so scales and mins vary), and candle's dequantization.
fn weight(t: WeightType, rows: usize, cols: usize, rng: &mut Rng) -> (QWeight, Vec<f32>) {
    let vals: Vec<f32> = (0..rows * cols)
        .map(|i| rng.unit() * (1.0 + (i % 97) as f32 / 10.0) + if i % 7 == 0 { 0.3 } else { 0.0 })
        .collect();
    let q = QTensor::quantize(
        &Tensor::from_vec(vals, (rows, cols), &Device::Cpu).unwrap(),
        dtype(t),
    )
    .unwrap();
    let deq = q
        .dequantize(&Device::Cpu)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    let w = QWeight::from_bytes(t, rows, cols, q.data().unwrap().into_owned()).unwrap();
    (w, deq)
}

fn input(rows: usize, cols: usize, rng: &mut Rng) -> Vec<f32> {
    (0..rows * cols)
        .map(|i| rng.unit() * if i % 13 == 0 { 4.0 } else { 1.0 })
        .collect()
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

#[test]
fn every_simd_path_equals_the_scalar_path_bit_for_bit() {
    let paths = Isa::available();
    println!("kernel paths on this CPU: {paths:?}");
    let mut rng = Rng(7);
    for t in WeightType::ALL {
        for (rows_w, cols) in [(37, 256), (16, 512), (5, 768)] {
            let (w, _) = weight(t, rows_w, cols, &mut rng);
            for rows in [1, 2, 3, 4, 5, 9, 17] {
                let x = input(rows, cols, &mut rng);
                let reference = matmul_on(Isa::Scalar, &w, &x, rows);
                for &isa in &paths {
                    let y = matmul_on(isa, &w, &x, rows);
                    assert_eq!(
                        bits(&y),
                        bits(&reference),
                        "{} {rows_w}×{cols}, {rows} rows: {} differs from scalar",
                        t.name(),
                        isa.name()
                    );
                }
            }
        }
    }
}

#[test]
fn a_row_is_computed_the_same_alone_and_in_any_block() {
    let mut rng = Rng(11);
    for t in WeightType::ALL {
        let (w, _) = weight(t, 24, 512, &mut rng);
        let x = input(33, 512, &mut rng);
        for &isa in &Isa::available() {
            let block = matmul_on(isa, &w, &x, 33);
            for r in 0..33 {
                let alone = matmul_on(isa, &w, &x[r * 512..(r + 1) * 512], 1);
                assert_eq!(
                    bits(&alone),
                    bits(&block[r * 24..(r + 1) * 24]),
                    "{} on {}: row {r} alone differs from row {r} of a 33-row block",
                    t.name(),
                    isa.name()
                );
            }
        }
    }
}

#[test]
fn dequantization_equals_candles() {
    let mut rng = Rng(3);
    for t in WeightType::ALL {
        let (w, deq) = weight(t, 9, 512, &mut rng);
        assert_eq!(bits(&w.dequantize()), bits(&deq), "{}", t.name());
    }
}

/// |y − ŷ| ≤ Σ_i |w_i| · |x_i − x̂_i| + float error, with |x_i − x̂_i| ≤ d_x / 2 = max|x_block|
/// / 254 (8-bit symmetric rounding of the input); the weights are the dequantized ones, so
/// only the input's quantization and f32 rounding separate the two.
#[test]
fn products_are_within_the_input_quantization_bound_of_the_f32_product() {
    let mut rng = Rng(5);
    for t in WeightType::ALL {
        let cols = 512;
        let (w, deq) = weight(t, 20, cols, &mut rng);
        let x = input(3, cols, &mut rng);
        let y = matmul_on(Isa::Scalar, &w, &x, 3);
        let block = t.act_block();
        for r in 0..3 {
            let xr = &x[r * cols..(r + 1) * cols];
            for j in 0..20 {
                let wr = &deq[j * cols..(j + 1) * cols];
                let exact: f64 = wr.iter().zip(xr).map(|(&a, &b)| a as f64 * b as f64).sum();
                let mut bound = 0f64;
                for (wb, xb) in wr.chunks(block).zip(xr.chunks(block)) {
                    let amax = xb.iter().fold(0f32, |m, v| m.max(v.abs())) as f64;
                    bound += wb.iter().map(|v| v.abs() as f64).sum::<f64>() * amax / 254.0;
                }
                bound = bound * 1.001
                    + 1e-4
                        * wr.iter()
                            .zip(xr)
                            .map(|(a, b)| (a * b).abs() as f64)
                            .sum::<f64>();
                let got = y[r * 20 + j] as f64;
                assert!(
                    (got - exact).abs() <= bound,
                    "{} row {r} col {j}: {got} vs {exact}, bound {bound}",
                    t.name()
                );
            }
        }
    }
}

#[test]
fn gathered_rows_multiply_like_the_full_matrix() {
    let mut rng = Rng(9);
    for t in WeightType::ALL {
        let (w, _) = weight(t, 30, 256, &mut rng);
        let ids = [29u32, 0, 17, 3];
        let g = w.gather(&ids);
        let x = input(2, 256, &mut rng);
        let full = matmul_on(Isa::Scalar, &w, &x, 2);
        let part = matmul_on(Isa::Scalar, &g, &x, 2);
        for r in 0..2 {
            for (i, &id) in ids.iter().enumerate() {
                assert_eq!(
                    part[r * 4 + i].to_bits(),
                    full[r * 30 + id as usize].to_bits()
                );
            }
        }
    }
}

#[test]
fn malformed_weights_are_refused_with_the_reason() {
    let e = QWeight::from_bytes(WeightType::Q4K, 2, 300, vec![0; 10])
        .err()
        .unwrap();
    assert!(e.contains("blocks of 256"), "{e}");
    let e = QWeight::from_bytes(WeightType::Q8_0, 2, 64, vec![0; 135])
        .err()
        .unwrap();
    assert!(e.contains("135 bytes, expected 136"), "{e}");
}

/// Every f16 block scale converts exactly (the kernels' inline conversion against `half`'s).
#[test]
fn every_f16_scale_converts_exactly() {
    for h in 0..=u16::MAX {
        let mut block = vec![0u8; 34];
        block[..2].copy_from_slice(&h.to_le_bytes());
        block[2] = 1;
        let mut out = [0f32; 32];
        ecspec_model::kernels::dequantize_row(WeightType::Q8_0, &block, &mut out);
        let want = half::f16::from_bits(h).to_f32();
        if want.is_nan() {
            assert!(out[0].is_nan(), "f16 {h:#06x}: {} is not NaN", out[0]);
        } else {
            assert_eq!(out[0].to_bits(), want.to_bits(), "f16 {h:#06x}");
        }
    }
}

/// Splitting a product or attention over threads changes no number: 1, 2 and 3 threads give
/// the same bits (the caller computes one share, the pool's workers the others).
#[test]
fn threads_change_no_number() {
    let pool = |n: usize| {
        rayon::ThreadPoolBuilder::new()
            .num_threads(n)
            .build()
            .unwrap()
    };
    let mut rng = Rng(13);
    let (w, _) = weight(WeightType::Q4K, 96, 1024, &mut rng);
    let (w2, _) = weight(WeightType::Q4_1, 40, 1024, &mut rng);
    let x = input(5, 1024, &mut rng);
    let run = || ecspec_model::kernels::matmul_many(&[&w, &w2], &x, 5);
    let one = pool(1).install(run);
    for n in [2, 3] {
        assert_eq!(pool(n).install(run), one, "{n} threads, inside the pool");
    }
    // From a thread outside any pool (a tokio task, `main`): the global pool's workers help.
    assert_eq!(run(), one, "outside the pool");

    let (heads, kv_heads, hd, start, rows) = (8, 2, 64, 150, 3);
    let q = input(rows * heads, hd, &mut rng);
    let k = input((start + rows) * kv_heads, hd, &mut rng);
    let v = input((start + rows) * kv_heads, hd, &mut rng);
    let att = || ecspec_model::ops::causal_attention(&q, &k, &v, start, heads, kv_heads, hd);
    let one = pool(1).install(att);
    for n in [2, 3] {
        assert_eq!(
            bits(&pool(n).install(att)),
            bits(&one),
            "attention on {n} threads"
        );
    }
}
