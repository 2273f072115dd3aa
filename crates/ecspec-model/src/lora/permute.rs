//! The row order of q and k: llama.cpp's converter permutes the rows of a llama model's
//! `q_proj` and `k_proj` (Hugging Face's halves RoPE → interleaved pairs); B of a q/k adapter
//! is moved between the two orders with [`hf_to_gguf_rows`] and [`gguf_to_hf_rows`].

/// HF → GGUF row permutation of llama.cpp's converter (`LlamaModel.permute`), applied to a
/// row-major matrix of `cols` columns whose rows are `heads` groups of `head_dim` rows:
/// `w.reshape(heads, 2, head_dim/2, cols).swapaxes(1, 2).reshape(rows, cols)`, i.e.
/// GGUF row `h·hd + 2j + s` = HF row `h·hd + s·hd/2 + j` (s ∈ {0, 1}, j < hd/2).
///
/// # Panics
/// If the rows do not split into `heads` groups of an even size (a caller bug: shapes are
/// validated before this is called).
pub fn hf_to_gguf_rows(w: &[f32], cols: usize, heads: usize) -> Vec<f32> {
    permute_rows(w, cols, heads, true)
}

/// The inverse of [`hf_to_gguf_rows`]: GGUF (interleaved-RoPE) row order back to HF's.
///
/// # Panics
/// As [`hf_to_gguf_rows`].
pub fn gguf_to_hf_rows(w: &[f32], cols: usize, heads: usize) -> Vec<f32> {
    permute_rows(w, cols, heads, false)
}

fn permute_rows(w: &[f32], cols: usize, heads: usize, forward: bool) -> Vec<f32> {
    let rows = w.len() / cols;
    assert!(
        rows.is_multiple_of(2 * heads) && w.len() == rows * cols,
        "rows {rows} do not split into {heads} heads of even size"
    );
    let hd = rows / heads;
    let half = hd / 2;
    let mut out = vec![0f32; w.len()];
    for h in 0..heads {
        for s in 0..2 {
            for j in 0..half {
                let hf = h * hd + s * half + j;
                let gg = h * hd + 2 * j + s;
                let (src, dst) = if forward { (hf, gg) } else { (gg, hf) };
                out[dst * cols..(dst + 1) * cols].copy_from_slice(&w[src * cols..(src + 1) * cols]);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::init::uniform;
    use crate::ops::{RopeStyle, RopeTables};

    #[test]
    fn permutation_matches_llamacpp_reshape_swapaxes() {
        // Two heads of head_dim 4, one column: reshape(2, 2, 2, 1).swapaxes(1, 2) takes each
        // head's HF rows [r0 r1 | r2 r3] (halves) to [r0 r2 r1 r3] (interleaved pairs).
        let hf: Vec<f32> = (0..8).map(|i| i as f32).collect();
        assert_eq!(
            hf_to_gguf_rows(&hf, 1, 2),
            vec![0.0, 2.0, 1.0, 3.0, 4.0, 6.0, 5.0, 7.0]
        );
        assert_eq!(
            gguf_to_hf_rows(&[0.0, 2.0, 1.0, 3.0, 4.0, 6.0, 5.0, 7.0], 1, 2),
            hf
        );
        // Printed by numpy running llama.cpp's `LlamaModel.permute` expression,
        // `w.reshape(n_head, 2, rows // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)`:
        // 3 heads of head_dim 8, one column; and 2 heads of head_dim 4, two columns.
        let w: Vec<f32> = (0..24).map(|i| i as f32).collect();
        let numpy = [
            0, 4, 1, 5, 2, 6, 3, 7, 8, 12, 9, 13, 10, 14, 11, 15, 16, 20, 17, 21, 18, 22, 19, 23,
        ];
        assert_eq!(hf_to_gguf_rows(&w, 1, 3), numpy.map(|i| i as f32).to_vec());
        let w: Vec<f32> = (0..16).map(|i| i as f32).collect();
        let numpy = [0, 1, 4, 5, 2, 3, 6, 7, 8, 9, 12, 13, 10, 11, 14, 15];
        assert_eq!(hf_to_gguf_rows(&w, 2, 2), numpy.map(|i| i as f32).to_vec());
        // Whole rows move together (3 columns).
        let w: Vec<f32> = (0..24).map(|i| i as f32).collect();
        let g = hf_to_gguf_rows(&w, 3, 2);
        assert_eq!(&g[3..6], &w[6..9], "GGUF row 1 is HF row 2");
    }

    #[test]
    fn permutation_round_trips_exactly_for_q_and_k_shapes() {
        // SmolLM2-135M: 9 query heads, 3 KV heads, head_dim 64, rank 8 columns.
        for (heads, hd) in [(9usize, 64usize), (3, 64), (4, 16), (2, 16)] {
            let w = uniform(heads as u64 * 31 + hd as u64, heads * hd * 8, 1.0);
            let g = hf_to_gguf_rows(&w, 8, heads);
            assert_ne!(g, w);
            assert_eq!(gguf_to_hf_rows(&g, 8, heads), w, "{heads} heads × {hd}");
            assert_eq!(hf_to_gguf_rows(&gguf_to_hf_rows(&w, 8, heads), 8, heads), w);
        }
    }

    #[test]
    fn permuted_rows_turn_halves_rope_into_interleaved_rope() {
        // Why the permutation exists: rotating HF-ordered q by pairs (i, i + hd/2) and then
        // permuting equals permuting first and rotating pairs (2i, 2i + 1) — exactly.
        let (heads, hd, rows) = (3, 16, 5);
        let q_hf = uniform(7, rows * heads * hd, 2.0);
        let tables = RopeTables::new(11, rows, hd, 10_000.0);
        let mut r_hf = q_hf.clone();
        tables.apply(&mut r_hf, heads, RopeStyle::Halves);
        // Each position's vector is a column of `heads · hd` rows.
        let permute = |v: &[f32]| -> Vec<f32> {
            v.chunks_exact(heads * hd)
                .flat_map(|c| hf_to_gguf_rows(c, 1, heads))
                .collect()
        };
        let mut r_gg = permute(&q_hf);
        tables.apply(&mut r_gg, heads, RopeStyle::Interleaved);
        assert_eq!(r_gg, permute(&r_hf));
    }
}
