//! Times the quantized matrix kernels on one matrix: `cargo run --release -p ecspec-model
//! --example kernel_speed -- [TYPE] [ROWS_OUT] [COLS] [ISA] [MACS] [ROWS,…]` (defaults: Q4_1 1536 576,
//! the selected path, 2·10⁸ multiply-adds per row count; a small MACS suits
//! `valgrind --tool=callgrind`, which counts instructions whatever the machine's load). Prints, per input-row count, the time of one product and the weight bytes
//! read per second.

use std::time::Instant;

use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{Device, Tensor};
use ecspec_model::kernels::{matmul_on, selected, Isa, QWeight, WeightType};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let t = match args.first().map(String::as_str).unwrap_or("Q4_1") {
        "Q8_0" => (WeightType::Q8_0, GgmlDType::Q8_0),
        "Q5_0" => (WeightType::Q5_0, GgmlDType::Q5_0),
        "Q4_K" => (WeightType::Q4K, GgmlDType::Q4K),
        "Q6_K" => (WeightType::Q6K, GgmlDType::Q6K),
        _ => (WeightType::Q4_1, GgmlDType::Q4_1),
    };
    let n: usize = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(1536);
    let k: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(576);
    let isa = match args.get(3).map(String::as_str) {
        Some("scalar") => Isa::Scalar,
        _ => selected(),
    };
    let vals: Vec<f32> = (0..n * k)
        .map(|i| ((i * 7919 % 1000) as f32 - 500.0) / 500.0)
        .collect();
    let q = QTensor::quantize(&Tensor::from_vec(vals, (n, k), &Device::Cpu).unwrap(), t.1).unwrap();
    let w = QWeight::from_bytes(t.0, n, k, q.data().unwrap().into_owned()).unwrap();
    println!(
        "{} {n}×{k} ({} KiB) on {}",
        t.0.name(),
        w.size_bytes() / 1024,
        isa.name()
    );
    let counts: Vec<usize> = args
        .get(5)
        .map(|s| s.split(',').filter_map(|v| v.parse().ok()).collect())
        .unwrap_or_else(|| vec![1, 2, 5, 9, 17, 33, 65]);
    for rows in counts {
        let x: Vec<f32> = (0..rows * k)
            .map(|i| ((i * 31 % 200) as f32 - 100.0) / 100.0)
            .collect();
        let budget: usize = args
            .get(4)
            .and_then(|s| s.parse().ok())
            .unwrap_or(200_000_000);
        let reps = (budget / (n * k * rows)).max(1);
        let _ = matmul_on(isa, &w, &x, rows);
        let t0 = Instant::now();
        for _ in 0..reps {
            std::hint::black_box(matmul_on(isa, &w, &x, rows));
        }
        let s = t0.elapsed().as_secs_f64() / reps as f64;
        println!(
            "rows {rows:>3}: {:>9.1} µs  {:>6.2} GB/s weights  {:>7.1} µs/row",
            s * 1e6,
            w.size_bytes() as f64 / s / 1e9,
            s * 1e6 / rows as f64
        );
    }
}
