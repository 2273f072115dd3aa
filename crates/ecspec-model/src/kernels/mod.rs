//! Quantized matrix products, written for this runtime (`std::arch`), on the GGUF block
//! formats as stored (Q8_0, Q4_1, Q5_0, Q4_K, Q6_K; others are converted at load).
//!
//! **Invariant — one canonical order of operations.** Every output element y[r][j] =
//! Σ_b (weight row j, block b) · (input row r, block b) is computed the same way on every
//! path (scalar, AVX2, NEON) and whatever the number of rows: the input row is quantized to
//! 8-bit blocks by scalar code ([`acts`]); per block, exact integer sums fill 8 lanes (lane l
//! holds the values e with (e mod 32) / 4 = l); each lane accumulates
//! fma(d_w·d_x, lane, acc) block after block; a type with a min adds fma(min_w·d_x, S, m) to a
//! ninth accumulator; the lanes reduce in one fixed tree ([`scalar::finish`]). Integer sums
//! are exact whatever their order, fused multiply-adds round once on every CPU, so a row's
//! numbers do not depend on the other rows of its block (block verification stays
//! bit-identical to one-token decoding) nor on the CPU's SIMD width: the AVX2 and NEON paths
//! equal the scalar path bit for bit (tested), so outputs are the same on every machine.
//!
//! **Row tiles.** A weight block is decoded once and dotted with up to 4 input rows, and a
//! group of weight rows is swept for every row tile while it sits in cache: a block of K + 1
//! rows reads each weight byte from memory once, not K + 1 times.
//!
//! **Threads.** The output columns (weight rows) of one or several matrices sharing an input
//! ([`matmul_many`]: q/k/v, gate/up) are split into equal-cost ranges, one per thread of the
//! rayon pool; the calling thread computes the first range and the pool's persistent workers
//! the others (`rayon::in_place_scope`: one wake-up per range, the caller never parks waiting
//! for its own work to be picked up).

pub mod acts;
pub mod formats;
pub mod scalar;

#[cfg(target_arch = "x86_64")]
mod avx2;
#[cfg(target_arch = "aarch64")]
mod neon;

use std::sync::{Arc, OnceLock};

use self::acts::QuantizedRows;
pub use self::formats::{dequantize_row, ActFormat, WeightType};

/// An instruction set the kernels can run on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Isa {
    /// Portable Rust: the reference order of operations.
    Scalar,
    /// x86-64 AVX2 + FMA + F16C (every AVX2 CPU has the other two).
    Avx2,
    /// aarch64 Advanced SIMD (NEON).
    Neon,
}

impl Isa {
    /// A short name for listings (`ecspec profile`).
    pub fn name(self) -> &'static str {
        match self {
            Isa::Scalar => "scalar",
            Isa::Avx2 => "avx2+fma",
            Isa::Neon => "neon",
        }
    }

    /// Whether this CPU can run it (detected at run time).
    pub fn supported(self) -> bool {
        match self {
            Isa::Scalar => true,
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => {
                std::arch::is_x86_feature_detected!("avx2")
                    && std::arch::is_x86_feature_detected!("fma")
                    && std::arch::is_x86_feature_detected!("f16c")
            }
            #[cfg(target_arch = "aarch64")]
            Isa::Neon => std::arch::is_aarch64_feature_detected!("neon"),
            #[allow(unreachable_patterns)]
            _ => false,
        }
    }

    /// Every path this CPU supports, the reference first.
    pub fn available() -> Vec<Isa> {
        [Isa::Scalar, Isa::Avx2, Isa::Neon]
            .into_iter()
            .filter(|i| i.supported())
            .collect()
    }
}

/// The path the runtime uses: the widest this CPU supports, or `scalar` when the environment
/// variable `ECSPEC_KERNELS=scalar` asks for the reference (detected once per process).
pub fn selected() -> Isa {
    static PICK: OnceLock<Isa> = OnceLock::new();
    *PICK.get_or_init(|| {
        if std::env::var("ECSPEC_KERNELS").is_ok_and(|v| v == "scalar") {
            return Isa::Scalar;
        }
        *Isa::available().last().unwrap_or(&Isa::Scalar)
    })
}

/// This CPU in one line: its model name (Linux `/proc/cpuinfo`) and the SIMD features the
/// kernels care about, detected at run time, e.g. `AMD EPYC (avx2 fma f16c; no avx512f)`.
pub fn cpu_summary() -> String {
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name") || l.starts_with("Model"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_string())
        })
        .unwrap_or_else(|| std::env::consts::ARCH.to_string());
    let mut have = Vec::new();
    let mut lack = Vec::new();
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::is_x86_feature_detected as has;
        for (name, on) in [
            ("avx2", has!("avx2")),
            ("fma", has!("fma")),
            ("f16c", has!("f16c")),
            ("avx512f", has!("avx512f")),
            ("avx512vnni", has!("avx512vnni")),
        ] {
            if on {
                have.push(name)
            } else {
                lack.push(name)
            }
        }
    }
    #[cfg(target_arch = "aarch64")]
    {
        use std::arch::is_aarch64_feature_detected as has;
        for (name, on) in [
            ("neon", has!("neon")),
            ("dotprod", has!("dotprod")),
            ("i8mm", has!("i8mm")),
        ] {
            if on {
                have.push(name)
            } else {
                lack.push(name)
            }
        }
    }
    let mut s = format!("{model} ({}", have.join(" "));
    if !lack.is_empty() {
        s += &format!("; no {}", lack.join(" "));
    }
    s + ")"
}

/// A weight matrix (`rows × cols`, row j = output column j of `x · Wᵀ`) in one of the
/// [`WeightType`]s: GGUF's bytes as stored, shared (cheap to clone).
#[derive(Clone)]
pub struct QWeight {
    kind: WeightType,
    rows: usize,
    cols: usize,
    data: Storage,
}

#[derive(Clone)]
enum Storage {
    Bytes(Arc<Vec<u8>>),
    F32(Arc<Vec<f32>>),
}

impl QWeight {
    /// A matrix from its stored bytes (ggml block layout, row-major).
    ///
    /// # Errors
    /// A message naming the mismatch when `cols` does not split into blocks of the type or
    /// `bytes` does not hold exactly `rows × cols` values.
    pub fn from_bytes(
        kind: WeightType,
        rows: usize,
        cols: usize,
        bytes: Vec<u8>,
    ) -> Result<Self, String> {
        if kind == WeightType::F32 {
            if bytes.len() != rows * cols * 4 {
                return Err(format!(
                    "F32 matrix {rows}×{cols}: {} bytes, expected {}",
                    bytes.len(),
                    rows * cols * 4
                ));
            }
            let v = bytes
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect();
            return Ok(Self::from_f32(rows, cols, v));
        }
        let be = kind.block_elems();
        if !cols.is_multiple_of(be) {
            return Err(format!(
                "{} matrix {rows}×{cols}: rows of {cols} values do not split into blocks of {be}",
                kind.name()
            ));
        }
        let want = rows * cols / be * kind.block_bytes();
        if bytes.len() != want {
            return Err(format!(
                "{} matrix {rows}×{cols}: {} bytes, expected {want}",
                kind.name(),
                bytes.len()
            ));
        }
        Ok(Self {
            kind,
            rows,
            cols,
            data: Storage::Bytes(Arc::new(bytes)),
        })
    }

    /// A dense f32 matrix (`values.len() == rows · cols`, row-major).
    pub fn from_f32(rows: usize, cols: usize, values: Vec<f32>) -> Self {
        debug_assert_eq!(values.len(), rows * cols);
        Self {
            kind: WeightType::F32,
            rows,
            cols,
            data: Storage::F32(Arc::new(values)),
        }
    }

    /// Its storage type.
    pub fn kind(&self) -> WeightType {
        self.kind
    }

    /// Rows (output features).
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Columns (input features).
    pub fn cols(&self) -> usize {
        self.cols
    }

    /// Bytes of weights (what one pass over the matrix reads).
    pub fn size_bytes(&self) -> usize {
        match &self.data {
            Storage::Bytes(b) => b.len(),
            Storage::F32(v) => v.len() * 4,
        }
    }

    fn row_len(&self) -> usize {
        self.cols / self.kind.block_elems() * self.kind.block_bytes()
    }

    /// Whether both handles share one memory (the same weights).
    pub fn same_memory(&self, other: &QWeight) -> bool {
        match (&self.data, &other.data) {
            (Storage::Bytes(a), Storage::Bytes(b)) => Arc::ptr_eq(a, b),
            (Storage::F32(a), Storage::F32(b)) => Arc::ptr_eq(a, b),
            _ => false,
        }
    }

    /// Row `j` dequantized into `out` (`cols` values; an embedding lookup).
    pub fn dequantize_row_into(&self, j: usize, out: &mut [f32]) {
        match &self.data {
            Storage::Bytes(b) => {
                let n = self.row_len();
                dequantize_row(self.kind, &b[j * n..(j + 1) * n], out)
            }
            Storage::F32(v) => out.copy_from_slice(&v[j * self.cols..(j + 1) * self.cols]),
        }
    }

    /// The whole matrix dequantized, row-major.
    pub fn dequantize(&self) -> Vec<f32> {
        let mut out = vec![0f32; self.rows * self.cols];
        for (j, o) in out.chunks_exact_mut(self.cols.max(1)).enumerate() {
            self.dequantize_row_into(j, o);
        }
        out
    }

    /// The matrix of rows `ids` (in that order), their bytes copied unchanged. Callers check
    /// `ids` < rows.
    pub fn gather(&self, ids: &[u32]) -> Self {
        let data = match &self.data {
            Storage::Bytes(b) => {
                let n = self.row_len();
                let mut out = Vec::with_capacity(ids.len() * n);
                for &j in ids {
                    out.extend_from_slice(&b[j as usize * n..(j as usize + 1) * n]);
                }
                Storage::Bytes(Arc::new(out))
            }
            Storage::F32(v) => {
                let c = self.cols;
                let mut out = Vec::with_capacity(ids.len() * c);
                for &j in ids {
                    out.extend_from_slice(&v[j as usize * c..(j as usize + 1) * c]);
                }
                Storage::F32(Arc::new(out))
            }
        };
        Self {
            kind: self.kind,
            rows: ids.len(),
            cols: self.cols,
            data,
        }
    }
}

/// `x` (`rows × w.cols()`, row-major) times `wᵀ` → `rows × w.rows()`, on the selected
/// kernels ([`selected`]) and the current rayon pool.
pub fn matmul(w: &QWeight, x: &[f32], rows: usize) -> Vec<f32> {
    matmul_many(&[w], x, rows).pop().unwrap_or_default()
}

/// Several matrices with the same input (`x`: `rows × cols`, every `ws[i].cols() == cols`):
/// the input is quantized once per format and all products run in one parallel region.
/// Returns one `rows × ws[i].rows()` output per matrix.
pub fn matmul_many(ws: &[&QWeight], x: &[f32], rows: usize) -> Vec<Vec<f32>> {
    matmul_many_on(selected(), ws, x, rows)
}

/// [`matmul`] on a given path (tests compare every supported path with the scalar one).
///
/// # Panics
/// If `isa` is not supported by this CPU ([`Isa::supported`]).
pub fn matmul_on(isa: Isa, w: &QWeight, x: &[f32], rows: usize) -> Vec<f32> {
    matmul_many_on(isa, &[w], x, rows).pop().unwrap_or_default()
}

/// A raw output pointer shared by the threads of one call; each writes disjoint columns.
#[derive(Clone, Copy)]
struct OutPtr(*mut f32);
// SAFETY: the threads of one `matmul_many_on` call write disjoint elements (their own column
// ranges) of buffers that outlive the parallel region.
unsafe impl Send for OutPtr {}
unsafe impl Sync for OutPtr {}

/// Weight rows swept per row tile while they stay in cache.
const COLS_PER_SWEEP: usize = 16;
/// Input rows dotted with one decoded weight block.
const ROW_TILE: usize = 4;

fn matmul_many_on(isa: Isa, ws: &[&QWeight], x: &[f32], rows: usize) -> Vec<Vec<f32>> {
    assert!(
        isa.supported(),
        "kernel path {} is not supported by this CPU",
        isa.name()
    );
    let Some(cols) = ws.first().map(|w| w.cols) else {
        return Vec::new();
    };
    assert!(ws.iter().all(|w| w.cols == cols) && x.len() == rows * cols);
    let q32 = ws
        .iter()
        .any(|w| w.kind.act_format() == ActFormat::Q8x32)
        .then(|| QuantizedRows::quantize(ActFormat::Q8x32, x, rows, cols));
    let q256 = ws
        .iter()
        .any(|w| w.kind.act_format() == ActFormat::Q8x256)
        .then(|| QuantizedRows::quantize(ActFormat::Q8x256, x, rows, cols));
    let mut outs: Vec<Vec<f32>> = ws.iter().map(|w| vec![0f32; rows * w.rows]).collect();
    let ptrs: Vec<OutPtr> = outs.iter_mut().map(|o| OutPtr(o.as_mut_ptr())).collect();
    // Split the concatenated output columns into equal-cost ranges.
    let cost: Vec<usize> = ws.iter().map(|w| w.row_len().max(1)).collect();
    let total: usize = ws.iter().zip(&cost).map(|(w, c)| w.rows * c).sum();
    let work = total * rows.max(1);
    // Below ~64 KiB of weight-row bytes × rows a second thread costs more than it saves.
    let threads = if work < 1 << 16 {
        1
    } else {
        rayon::current_num_threads().max(1)
    };
    let ranges = split_columns(ws, &cost, total, threads);
    let run = |part: &Vec<(usize, usize, usize)>| {
        for &(wi, j0, j1) in part {
            let w = ws[wi];
            let acts = match w.kind.act_format() {
                ActFormat::Q8x32 => q32.as_ref(),
                ActFormat::Q8x256 => q256.as_ref(),
                ActFormat::F32 => None,
            };
            // SAFETY: this part owns columns j0..j1 of output wi.
            unsafe { sweep(isa, w, x, acts, rows, j0, j1, ptrs[wi]) };
        }
    };
    match ranges.split_first() {
        None => {}
        Some((first, [])) => run(first),
        // The calling thread computes the first range itself and hands the others to the pool:
        // one wake-up per call, not an injection that parks the caller while every range
        // waits for a worker (the caller is usually outside the pool: a tokio task, `main`).
        Some((first, rest)) => rayon::in_place_scope(|s| {
            for part in rest {
                s.spawn(move |_| run(part));
            }
            run(first);
        }),
    }
    outs
}

/// Per thread, the (matrix, first column, end column) ranges it computes: `threads` ranges of
/// nearly equal cost over the matrices' columns laid end to end.
fn split_columns(
    ws: &[&QWeight],
    cost: &[usize],
    total: usize,
    threads: usize,
) -> Vec<Vec<(usize, usize, usize)>> {
    let mut parts = vec![Vec::new(); threads];
    let mut at = 0usize; // cost before the current column
    for (wi, w) in ws.iter().enumerate() {
        let mut j = 0;
        while j < w.rows {
            let p = (at * threads / total.max(1)).min(threads - 1);
            // Columns left for part p: up to its boundary.
            let end_cost = (p + 1) * total / threads;
            let fit = end_cost.saturating_sub(at).div_ceil(cost[wi]).max(1);
            let j1 = (j + fit).min(w.rows);
            parts[p].push((wi, j, j1));
            at += (j1 - j) * cost[wi];
            j = j1;
        }
    }
    parts.retain(|p| !p.is_empty());
    parts
}

/// Columns `j0..j1` of `w` for every input row, written to `out[r · w.rows + j]`.
///
/// # Safety
/// `out` points to `rows × w.rows` f32s of which this call alone writes columns `j0..j1`;
/// `isa` is supported; `acts` is the input in `w`'s format (None only for F32 weights).
#[allow(clippy::too_many_arguments)]
unsafe fn sweep(
    isa: Isa,
    w: &QWeight,
    x: &[f32],
    acts: Option<&QuantizedRows>,
    rows: usize,
    j0: usize,
    j1: usize,
    out: OutPtr,
) {
    let n = w.rows;
    match (&w.data, acts) {
        (Storage::F32(v), _) => {
            let c = w.cols;
            for r in 0..rows {
                let xr = &x[r * c..(r + 1) * c];
                for j in j0..j1 {
                    *out.0.add(r * n + j) = crate::ops::dot(xr, &v[j * c..(j + 1) * c]);
                }
            }
        }
        (Storage::Bytes(b), Some(a)) => {
            let len = w.row_len();
            for jb in (j0..j1).step_by(COLS_PER_SWEEP) {
                let je = (jb + COLS_PER_SWEEP).min(j1);
                for r0 in (0..rows).step_by(ROW_TILE) {
                    let nr = ROW_TILE.min(rows - r0);
                    tile(isa, w.kind, b, len, (jb, je), a, r0, nr, (out.0, n));
                }
            }
        }
        (Storage::Bytes(_), None) => unreachable!("quantized weights come with quantized input"),
    }
}

/// Columns `j0..j1` for input rows `r0..r0 + nr` on path `isa` (see `avx2::sweep`).
#[allow(clippy::too_many_arguments)]
#[inline]
unsafe fn tile(
    isa: Isa,
    t: WeightType,
    w: &[u8],
    row_len: usize,
    cols: (usize, usize),
    a: &QuantizedRows,
    r0: usize,
    nr: usize,
    out: (*mut f32, usize),
) {
    match isa {
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => avx2::sweep(t, w, row_len, cols, a, r0, nr, out),
        #[cfg(target_arch = "aarch64")]
        Isa::Neon => neon::sweep(t, w, row_len, cols, a, r0, nr, out),
        _ => {
            for j in cols.0..cols.1 {
                let wr = &w[j * row_len..(j + 1) * row_len];
                for i in 0..nr {
                    *out.0.add((r0 + i) * out.1 + j) = scalar::dot_row(t, wr, a, r0 + i);
                }
            }
        }
    }
}
