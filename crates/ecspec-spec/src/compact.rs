//! The compact draft distribution sent on the uplink in rejection mode.
//!
//! design.md §4; quantize-then-sample after Zhang et al., arXiv 2507.00605: the edge keeps the
//! top-k tokens of its draft distribution q, quantises their probabilities to b-bit levels, and
//! then *samples its draft token from that quantised distribution*. The cloud verifies against
//! exactly the distribution it received, so rejection sampling stays exact however coarse the
//! quantisation (coarseness only lowers acceptance).
//!
//! **Invariant:** a [`CompactDist`] always holds 1..=[`MAX_ENTRIES`] distinct ids, every level
//! is ≥ 1, and the levels sum to exactly `2^bits − 1`; its probabilities are `level / (2^bits − 1)`.

use rand::Rng;

/// Narrowest level width in bits.
pub const MIN_BITS: u8 = 1;
/// Widest level width in bits (levels are `u16`); the same range as the wire protocol's
/// `CompactDist.bits`.
pub const MAX_BITS: u8 = 16;
/// Most entries one [`CompactDist`] may hold (the count is a `u16` on the wire).
pub const MAX_ENTRIES: usize = u16::MAX as usize;

/// A top-k, b-bit quantised draft distribution over a vocabulary of V tokens.
///
/// Entry j gives token `ids[j]` the probability `levels[j] / (2^bits − 1)`; tokens not listed
/// have probability 0. Entries built by [`CompactDist::quantize`] are in rank order (probability
/// descending, ties by lowest id); decoded ones keep the order of the bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompactDist {
    ids: Vec<u32>,
    levels: Vec<u16>,
    bits: u8,
}

/// Errors of building or decoding a [`CompactDist`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CompactError {
    /// `bits` was outside [`MIN_BITS`]..=[`MAX_BITS`].
    #[error("unsupported level width {bits} bits (supported: 1 to 16)")]
    UnsupportedBits {
        /// The rejected width.
        bits: u8,
    },
    /// `top_k` was 0.
    #[error("top_k must be at least 1")]
    ZeroTopK,
    /// The draft distribution had no positive finite entry.
    #[error("draft distribution of {len} entries has no positive finite mass")]
    NoMass {
        /// Length of the distribution.
        len: usize,
    },
    /// More entries than [`MAX_ENTRIES`].
    #[error("{n} entries exceed the maximum of {max}")]
    TooManyEntries {
        /// Entries given.
        n: usize,
        /// [`MAX_ENTRIES`].
        max: usize,
    },
    /// `ids` and `levels` had different lengths.
    #[error("length mismatch: {ids} ids but {levels} levels")]
    LengthMismatch {
        /// Number of ids.
        ids: usize,
        /// Number of levels.
        levels: usize,
    },
    /// The levels did not sum to `2^bits − 1`.
    #[error("levels sum to {sum}, expected {expected}")]
    LevelSum {
        /// Actual sum.
        sum: u64,
        /// `2^bits − 1`.
        expected: u64,
    },
    /// A level was 0 (a kept token must have positive probability).
    #[error("entry {index} has level 0")]
    ZeroLevel {
        /// Entry index.
        index: usize,
    },
    /// A level did not fit in `bits` bits.
    #[error("entry {index} has level {level}, above the {bits}-bit maximum")]
    LevelTooLarge {
        /// Entry index.
        index: usize,
        /// The level.
        level: u16,
        /// The width.
        bits: u8,
    },
    /// A token id appeared twice.
    #[error("token id {id} appears more than once")]
    DuplicateId {
        /// The repeated id.
        id: u32,
    },
    /// A token id was outside the vocabulary.
    #[error("token id {id} out of range for vocabulary size {vocab}")]
    IdOutOfRange {
        /// The id.
        id: u32,
        /// Vocabulary size V.
        vocab: usize,
    },
    /// The byte string ended early.
    #[error("truncated: needed at least {needed} bytes, got {got}")]
    Truncated {
        /// Bytes needed so far.
        needed: usize,
        /// Bytes available.
        got: usize,
    },
    /// Bytes were left after the last level.
    #[error("{extra} trailing bytes after the encoded distribution")]
    TrailingBytes {
        /// Number of extra bytes.
        extra: usize,
    },
    /// A token id varint was overlong, too large for u32, or not minimally encoded.
    #[error("malformed token id varint at byte {offset}")]
    BadVarint {
        /// Offset of the varint's first byte.
        offset: usize,
    },
    /// The unused high bits of the last level byte were not zero.
    #[error("non-zero padding bits after the last level")]
    NonZeroPadding,
}

fn check_bits(bits: u8) -> Result<(), CompactError> {
    if (MIN_BITS..=MAX_BITS).contains(&bits) {
        Ok(())
    } else {
        Err(CompactError::UnsupportedBits { bits })
    }
}

impl CompactDist {
    /// Keeps the `top_k` most probable tokens of `q` and quantises their probabilities to
    /// `bits`-bit levels by largest-remainder (Hamilton) rounding.
    ///
    /// With `L = 2^bits − 1` and `m` the kept mass, token i gets `floor(L·q_i/m)`; the
    /// `L − Σ floor` leftover units go one each to the largest remainders (ties: rank order).
    /// Entries rounded to level 0 are dropped; the most probable token always keeps level ≥ 1.
    /// The result's levels sum to exactly L, so its probabilities sum to exactly 1.
    ///
    /// Shapes: `q` has V entries (non-negative; need not be normalised; NaN, infinite and
    /// non-positive entries are never kept). `top_k` is clamped to [`MAX_ENTRIES`].
    ///
    /// # Errors
    /// [`CompactError::UnsupportedBits`], [`CompactError::ZeroTopK`], [`CompactError::NoMass`].
    pub fn quantize(q: &[f32], top_k: usize, bits: u8) -> Result<Self, CompactError> {
        check_bits(bits)?;
        if top_k == 0 {
            return Err(CompactError::ZeroTopK);
        }
        let rank = |a: &usize, b: &usize| q[*b].total_cmp(&q[*a]).then(a.cmp(b));
        let mut cand: Vec<usize> = (0..q.len())
            .filter(|&i| q[i].is_finite() && q[i] > 0.0)
            .collect();
        if cand.is_empty() {
            return Err(CompactError::NoMass { len: q.len() });
        }
        let k = top_k.min(MAX_ENTRIES);
        if k < cand.len() {
            cand.select_nth_unstable_by(k - 1, rank);
            cand.truncate(k);
        }
        cand.sort_unstable_by(rank);

        let total = Self::total_for(bits);
        let mass: f64 = cand.iter().map(|&i| f64::from(q[i])).sum();
        let exact: Vec<f64> = cand
            .iter()
            .map(|&i| f64::from(q[i]) / mass * f64::from(total))
            .collect();
        let mut levels: Vec<u32> = exact
            .iter()
            .map(|&x| (x.floor() as u32).min(total))
            .collect();
        let assigned: u32 = levels.iter().sum();
        // Σ floor ≤ Σ exact = L (up to rounding far below one unit), and L − Σ floor < k.
        let mut leftover = total.saturating_sub(assigned) as usize;
        let mut order: Vec<usize> = (0..cand.len()).collect();
        order.sort_by(|&a, &b| {
            let ra = exact[a] - exact[a].floor();
            let rb = exact[b] - exact[b].floor();
            rb.total_cmp(&ra).then(a.cmp(&b))
        });
        let mut j = 0;
        while leftover > 0 {
            levels[order[j % order.len()]] += 1;
            leftover -= 1;
            j += 1;
        }
        // Σ levels may exceed L only if Σ floor did, which the bound above excludes; trim from
        // the smallest entries anyway so the invariant holds unconditionally.
        let mut excess = levels.iter().sum::<u32>().saturating_sub(total);
        for &r in order.iter().rev() {
            let take = excess.min(levels[r]);
            levels[r] -= take;
            excess -= take;
        }

        let mut ids = Vec::with_capacity(cand.len());
        let mut lv = Vec::with_capacity(cand.len());
        for (&i, &l) in cand.iter().zip(&levels) {
            if l > 0 {
                ids.push(i as u32);
                lv.push(l as u16);
            }
        }
        Ok(Self {
            ids,
            levels: lv,
            bits,
        })
    }

    /// Builds a distribution from its parts, checking every invariant (for callers that carry
    /// ids and levels in their own types).
    ///
    /// # Errors
    /// [`CompactError::UnsupportedBits`], [`CompactError::LengthMismatch`],
    /// [`CompactError::TooManyEntries`], [`CompactError::ZeroLevel`],
    /// [`CompactError::LevelTooLarge`], [`CompactError::IdOutOfRange`] (`id ≥ vocab`),
    /// [`CompactError::DuplicateId`], [`CompactError::LevelSum`] (sum ≠ `2^bits − 1`).
    pub fn from_parts(
        ids: Vec<u32>,
        levels: Vec<u16>,
        bits: u8,
        vocab: usize,
    ) -> Result<Self, CompactError> {
        check_bits(bits)?;
        if ids.len() != levels.len() {
            return Err(CompactError::LengthMismatch {
                ids: ids.len(),
                levels: levels.len(),
            });
        }
        if ids.len() > MAX_ENTRIES {
            return Err(CompactError::TooManyEntries {
                n: ids.len(),
                max: MAX_ENTRIES,
            });
        }
        let total = Self::total_for(bits);
        for (index, &level) in levels.iter().enumerate() {
            if level == 0 {
                return Err(CompactError::ZeroLevel { index });
            }
            if u32::from(level) > total {
                return Err(CompactError::LevelTooLarge { index, level, bits });
            }
        }
        for &id in &ids {
            if id as usize >= vocab {
                return Err(CompactError::IdOutOfRange { id, vocab });
            }
        }
        let mut sorted = ids.clone();
        sorted.sort_unstable();
        if let Some(w) = sorted.windows(2).find(|w| w[0] == w[1]) {
            return Err(CompactError::DuplicateId { id: w[0] });
        }
        let sum: u64 = levels.iter().map(|&l| u64::from(l)).sum();
        if sum != u64::from(total) {
            return Err(CompactError::LevelSum {
                sum,
                expected: u64::from(total),
            });
        }
        Ok(Self { ids, levels, bits })
    }

    /// `2^bits − 1`: the sum of the levels, the denominator of every probability.
    pub fn total(&self) -> u32 {
        Self::total_for(self.bits)
    }

    fn total_for(bits: u8) -> u32 {
        (1u32 << bits) - 1
    }

    /// Token ids of the entries.
    pub fn ids(&self) -> &[u32] {
        &self.ids
    }

    /// Quantised levels of the entries, each in `1..=2^bits − 1`.
    pub fn levels(&self) -> &[u16] {
        &self.levels
    }

    /// Level width in bits (1..=16).
    pub fn bits(&self) -> u8 {
        self.bits
    }

    /// Number of entries (≥ 1).
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    /// Always false: a valid distribution has at least one entry.
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// The exact quantised distribution: `(id, level / (2^bits − 1))` per entry, in entry order.
    /// The probabilities sum to 1 (exactly in rationals; within f64 rounding as floats).
    pub fn probs(&self) -> Vec<(u32, f64)> {
        let t = f64::from(self.total());
        self.ids
            .iter()
            .zip(&self.levels)
            .map(|(&id, &l)| (id, f64::from(l) / t))
            .collect()
    }

    /// Quantised probability of `id` (0 if not kept). Linear in the number of entries.
    pub fn prob_of(&self, id: u32) -> f64 {
        self.ids
            .iter()
            .position(|&x| x == id)
            .map_or(0.0, |j| f64::from(self.levels[j]) / f64::from(self.total()))
    }

    /// Draws a token from the quantised distribution: one uniform integer in `0..2^bits − 1`,
    /// mapped through the cumulative levels, so the draw is exact (no float rounding). This is
    /// how the edge picks its draft token in rejection mode.
    pub fn sample(&self, rng: &mut impl Rng) -> u32 {
        let r = rng.random_range(0..self.total());
        let mut cum = 0u32;
        for (&id, &l) in self.ids.iter().zip(&self.levels) {
            cum += u32::from(l);
            if r < cum {
                return id;
            }
        }
        // Levels sum to total > r, so the loop has returned; keep a total function regardless.
        self.ids[self.ids.len() - 1]
    }

    /// Encoded size in bytes of [`CompactDist::to_bytes`].
    pub fn encoded_len(&self) -> usize {
        let ids: usize = self.ids.iter().map(|&id| varint_len(id)).sum();
        3 + ids + levels_len(self.levels.len(), self.bits)
    }

    /// Encodes the distribution.
    ///
    /// Layout (little-endian):
    /// - byte 0: `bits` (1..=16);
    /// - bytes 1..3: entry count n as `u16`;
    /// - n token ids, each an unsigned LEB128 varint (minimal, ≤ 5 bytes; 3 bytes for ids
    ///   below 2^21, which covers 49k- and 152k-token vocabularies);
    /// - the n levels packed by [`CompactDist::packed_levels`] in `ceil(n·bits/8)` bytes.
    ///
    /// Size: [`CompactDist::encoded_len`], e.g. k = 8 ids below 2^21 at 8 bits → 35 bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.encoded_len());
        out.push(self.bits);
        out.extend_from_slice(&(self.ids.len() as u16).to_le_bytes());
        for &id in &self.ids {
            let mut v = id;
            loop {
                let byte = (v & 0x7f) as u8;
                v >>= 7;
                if v == 0 {
                    out.push(byte);
                    break;
                }
                out.push(byte | 0x80);
            }
        }
        out.extend_from_slice(&self.packed_levels());
        out
    }

    /// The levels packed least-significant bit first: level i occupies bits
    /// `i·bits .. (i+1)·bits` of the stream, bit j being bit `j % 8` of byte `j / 8`; the
    /// unused high bits of the last byte are zero. `ceil(n·bits/8)` bytes. For 4 bits this puts
    /// entry 2j in the low nibble of byte j; for 16 bits each level is a little-endian `u16`.
    ///
    /// This is the layout of the wire protocol's `CompactDist.probs` (ecspec-proto), so the
    /// same bytes can be carried there.
    pub fn packed_levels(&self) -> Vec<u8> {
        pack_levels(&self.levels, self.bits)
    }

    /// Builds a distribution from ids and levels packed as by [`CompactDist::packed_levels`]
    /// (the wire protocol's `CompactDist { ids, probs, bits }`), checking everything
    /// [`CompactDist::from_parts`] checks.
    ///
    /// # Errors
    /// [`CompactError::UnsupportedBits`], [`CompactError::Truncated`] (`packed` is not exactly
    /// `ceil(ids.len()·bits/8)` bytes), [`CompactError::NonZeroPadding`], and the errors of
    /// [`CompactDist::from_parts`].
    pub fn from_packed(
        ids: Vec<u32>,
        packed: &[u8],
        bits: u8,
        vocab: usize,
    ) -> Result<Self, CompactError> {
        check_bits(bits)?;
        if ids.len() > MAX_ENTRIES {
            return Err(CompactError::TooManyEntries {
                n: ids.len(),
                max: MAX_ENTRIES,
            });
        }
        let levels = Self::unpack_levels(packed, ids.len(), bits)?;
        Self::from_parts(ids, levels, bits, vocab)
    }

    /// Inverse of [`pack_levels`]: n levels of `bits` bits from exactly `ceil(n·bits/8)` bytes
    /// (`bits` already checked).
    fn unpack_levels(packed: &[u8], n: usize, bits: u8) -> Result<Vec<u16>, CompactError> {
        let need = levels_len(n, bits);
        if packed.len() != need {
            return Err(CompactError::Truncated {
                needed: need,
                got: packed.len(),
            });
        }
        let bits = u32::from(bits);
        let mask = (1u32 << bits) - 1;
        let mut levels = Vec::with_capacity(n);
        let mut bytes = packed.iter();
        let (mut acc, mut avail) = (0u32, 0u32);
        for _ in 0..n {
            while avail < bits {
                // `packed` holds exactly enough bytes for n levels.
                let Some(&b) = bytes.next() else {
                    return Err(CompactError::Truncated {
                        needed: need,
                        got: packed.len(),
                    });
                };
                acc |= u32::from(b) << avail;
                avail += 8;
            }
            levels.push((acc & mask) as u16);
            acc >>= bits;
            avail -= bits;
        }
        if acc != 0 {
            return Err(CompactError::NonZeroPadding);
        }
        Ok(levels)
    }

    /// Decodes [`CompactDist::to_bytes`] output and checks every invariant against a vocabulary
    /// of `vocab` tokens. Allocation is bounded by the input length.
    ///
    /// # Errors
    /// [`CompactError::Truncated`], [`CompactError::TrailingBytes`] (length mismatch),
    /// [`CompactError::UnsupportedBits`], [`CompactError::BadVarint`],
    /// [`CompactError::NonZeroPadding`], and everything [`CompactDist::from_parts`] reports
    /// (level sum ≠ total, zero level, duplicate id, id ≥ vocab).
    pub fn from_bytes(bytes: &[u8], vocab: usize) -> Result<Self, CompactError> {
        if bytes.len() < 3 {
            return Err(CompactError::Truncated {
                needed: 3,
                got: bytes.len(),
            });
        }
        let bits = bytes[0];
        check_bits(bits)?;
        let n = usize::from(u16::from_le_bytes([bytes[1], bytes[2]]));
        let mut pos = 3;
        // Every id takes at least one byte: check before allocating.
        let min_len = 3 + n + levels_len(n, bits);
        if bytes.len() < min_len {
            return Err(CompactError::Truncated {
                needed: min_len,
                got: bytes.len(),
            });
        }
        let mut ids = Vec::with_capacity(n);
        for _ in 0..n {
            let start = pos;
            let mut v: u64 = 0;
            let mut shift = 0;
            loop {
                let Some(&byte) = bytes.get(pos) else {
                    return Err(CompactError::Truncated {
                        needed: pos + 1,
                        got: bytes.len(),
                    });
                };
                pos += 1;
                v |= u64::from(byte & 0x7f) << shift;
                if byte & 0x80 == 0 {
                    // A zero final byte after the first is a non-minimal encoding.
                    if byte == 0 && pos - start > 1 {
                        return Err(CompactError::BadVarint { offset: start });
                    }
                    break;
                }
                shift += 7;
                if pos - start >= 5 {
                    return Err(CompactError::BadVarint { offset: start });
                }
            }
            let id = u32::try_from(v).map_err(|_| CompactError::BadVarint { offset: start })?;
            ids.push(id);
        }
        let need = pos + levels_len(n, bits);
        if bytes.len() < need {
            return Err(CompactError::Truncated {
                needed: need,
                got: bytes.len(),
            });
        }
        if bytes.len() > need {
            return Err(CompactError::TrailingBytes {
                extra: bytes.len() - need,
            });
        }
        let levels = Self::unpack_levels(&bytes[pos..need], n, bits)?;
        Self::from_parts(ids, levels, bits, vocab)
    }
}

fn varint_len(id: u32) -> usize {
    match id {
        0..=0x7f => 1,
        0x80..=0x3fff => 2,
        0x4000..=0x1f_ffff => 3,
        0x20_0000..=0x0fff_ffff => 4,
        _ => 5,
    }
}

/// Packs `bits`-bit levels least-significant bit first (see [`CompactDist::packed_levels`]).
fn pack_levels(levels: &[u16], bits: u8) -> Vec<u8> {
    let width = u32::from(bits);
    let mut out = Vec::with_capacity(levels_len(levels.len(), bits));
    // `pending < 8` between levels, so `pending + width ≤ 23` fits in `acc`.
    let (mut acc, mut pending) = (0u32, 0u32);
    for &level in levels {
        acc |= u32::from(level) << pending;
        pending += width;
        while pending >= 8 {
            out.push(acc as u8);
            acc >>= 8;
            pending -= 8;
        }
    }
    if pending > 0 {
        out.push(acc as u8);
    }
    out
}

fn levels_len(n: usize, bits: u8) -> usize {
    (n * usize::from(bits)).div_ceil(8)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sampling::{rng_for, EDGE_STREAM};

    #[test]
    fn quantize_largest_remainder() {
        // q = 0.5, 0.3, 0.15, 0.05 (+ a zero); top-3 keeps mass 0.95.
        let q = [0.5f32, 0.3, 0.0, 0.15, 0.05];
        let c = CompactDist::quantize(&q, 3, 8).unwrap();
        // exact: 255·(0.5, 0.3, 0.15)/0.95 = 134.21, 80.53, 40.26 → floors 134, 80, 40 (254),
        // one unit left → largest remainder (0.53) → 134, 81, 40.
        assert_eq!(c.ids(), &[0, 1, 3]);
        assert_eq!(c.levels(), &[134, 81, 40]);
        assert_eq!(c.total(), 255);
        let sum: f64 = c.probs().iter().map(|p| p.1).sum();
        assert!((sum - 1.0).abs() < 1e-12);
        assert_eq!(c.prob_of(1), 81.0 / 255.0);
        assert_eq!(c.prob_of(2), 0.0);
        // 4 bits: 15·(0.5, 0.3, 0.15)/0.95 = 7.89, 4.74, 2.37 → 7, 4, 2 (13) + 2 units to the
        // largest remainders (0.89, 0.74) → 8, 5, 2.
        let c = CompactDist::quantize(&q, 3, 4).unwrap();
        assert_eq!(c.levels(), &[8, 5, 2]);
    }

    #[test]
    fn quantize_drops_zero_levels_and_keeps_the_top_token() {
        // 4 bits, 20 equal tokens: 15 units for 20 tokens → the 15 lowest ids get 1, 5 dropped.
        let q = vec![1.0f32; 20];
        let c = CompactDist::quantize(&q, 20, 4).unwrap();
        assert_eq!(c.len(), 15);
        assert_eq!(c.ids(), (0..15).collect::<Vec<u32>>().as_slice());
        assert!(c.levels().iter().all(|&l| l == 1));
        // A dominant token with a long tail: tail tokens round to 0 and vanish.
        let mut q = vec![1e-6f32; 10];
        q[7] = 1.0;
        let c = CompactDist::quantize(&q, 10, 8).unwrap();
        assert_eq!((c.ids(), c.levels()), (&[7u32][..], &[255u16][..]));
        assert!(CompactDist::quantize(&[0.0, f32::NAN, -1.0], 2, 8).is_err());
        assert_eq!(
            CompactDist::quantize(&[1.0], 0, 8),
            Err(CompactError::ZeroTopK)
        );
        assert_eq!(
            CompactDist::quantize(&[1.0], 1, 0),
            Err(CompactError::UnsupportedBits { bits: 0 })
        );
        assert_eq!(
            CompactDist::quantize(&[1.0], 1, 17),
            Err(CompactError::UnsupportedBits { bits: 17 })
        );
        // 1 bit: total 1, one-hot on the top token.
        let c = CompactDist::quantize(&[0.2, 0.5, 0.3], 3, 1).unwrap();
        assert_eq!((c.ids(), c.levels()), (&[1u32][..], &[1u16][..]));
    }

    #[test]
    fn sample_is_exact_in_levels() {
        let c = CompactDist::from_parts(vec![9, 2, 5], vec![10, 4, 1], 4, 10).unwrap();
        let mut rng = rng_for(3, EDGE_STREAM);
        let mut counts = [0u32; 10];
        let n = 150_000;
        for _ in 0..n {
            counts[c.sample(&mut rng) as usize] += 1;
        }
        assert_eq!(counts.iter().sum::<u32>(), n);
        assert_eq!(counts[9] + counts[2] + counts[5], n);
        // Expected 100k, 40k, 10k; sd ≤ 183.
        assert!((counts[9] as i64 - 100_000).abs() < 1000, "{counts:?}");
        assert!((counts[2] as i64 - 40_000).abs() < 1000, "{counts:?}");
        assert!((counts[5] as i64 - 10_000).abs() < 600, "{counts:?}");
    }

    #[test]
    fn bytes_round_trip() {
        let q: Vec<f32> = (0..200_000)
            .map(|i| ((i * 7919) % 1000) as f32 + 1.0)
            .collect();
        for bits in MIN_BITS..=MAX_BITS {
            for k in [1usize, 2, 7, 8, 33] {
                let c = CompactDist::quantize(&q, k, bits).unwrap();
                let b = c.to_bytes();
                assert_eq!(b.len(), c.encoded_len());
                assert_eq!(CompactDist::from_bytes(&b, q.len()).unwrap(), c);
            }
        }
        // Ids spanning every varint length, 4-bit with an odd count.
        let ids = vec![0, 127, 128, 16_383, 16_384, 2_097_151, 2_097_152, u32::MAX];
        let c = CompactDist::from_parts(ids.clone(), vec![1, 1, 1, 1, 1, 1, 1, 8], 4, usize::MAX)
            .unwrap();
        let b = c.to_bytes();
        assert_eq!(b.len(), 3 + (1 + 1 + 2 + 2 + 3 + 3 + 4 + 5) + 4);
        assert_eq!(CompactDist::from_bytes(&b, usize::MAX).unwrap(), c);
        let c =
            CompactDist::from_parts(vec![151_935, 3, 40_000], vec![7, 5, 3], 4, 151_936).unwrap();
        let b = c.to_bytes();
        assert_eq!(
            b,
            vec![4, 3, 0, 0xff, 0xa2, 0x09, 3, 0xc0, 0xb8, 0x02, 0x57, 0x03]
        );
        assert_eq!(CompactDist::from_bytes(&b, 151_936).unwrap(), c);
    }

    #[test]
    fn malformed_bytes_are_rejected() {
        let c = CompactDist::from_parts(vec![5, 1, 3], vec![200, 50, 5], 8, 6).unwrap();
        let good = c.to_bytes();
        assert_eq!(good, vec![8, 3, 0, 5, 1, 3, 200, 50, 5]);
        let dec = |b: &[u8]| CompactDist::from_bytes(b, 6);
        assert!(dec(&good).is_ok());
        assert!(matches!(
            dec(&good[..2]),
            Err(CompactError::Truncated { .. })
        ));
        assert!(matches!(
            dec(&good[..8]),
            Err(CompactError::Truncated { .. })
        ));
        let mut b = good.clone();
        b.push(0);
        assert_eq!(dec(&b), Err(CompactError::TrailingBytes { extra: 1 }));
        let mut b = good.clone();
        b[0] = 17;
        assert_eq!(dec(&b), Err(CompactError::UnsupportedBits { bits: 17 }));
        let mut b = good.clone();
        b[8] = 6;
        assert_eq!(
            dec(&b),
            Err(CompactError::LevelSum {
                sum: 256,
                expected: 255
            })
        );
        let mut b = good.clone();
        b[5] = 5;
        assert_eq!(dec(&b), Err(CompactError::DuplicateId { id: 5 }));
        let mut b = good.clone();
        b[3] = 6;
        assert_eq!(dec(&b), Err(CompactError::IdOutOfRange { id: 6, vocab: 6 }));
        let mut b = good.clone();
        b[7] = 0;
        b[6] = 250;
        assert_eq!(dec(&b), Err(CompactError::ZeroLevel { index: 1 }));
        // Count says 3 but the payload holds fewer bytes than 3 ids + 3 levels.
        assert!(matches!(
            dec(&[8, 3, 0, 1, 2]),
            Err(CompactError::Truncated { .. })
        ));
        // A huge count is refused before allocating.
        assert!(matches!(
            dec(&[8, 0xff, 0xff, 1]),
            Err(CompactError::Truncated { .. })
        ));
        // Empty distribution: sum 0 ≠ 255.
        assert_eq!(
            dec(&[8, 0, 0]),
            Err(CompactError::LevelSum {
                sum: 0,
                expected: 255
            })
        );
        // Non-minimal varint (0x80 0x00 encodes 0 in two bytes) and a 6-byte varint.
        assert_eq!(
            CompactDist::from_bytes(&[8, 1, 0, 0x80, 0x00, 255], 6),
            Err(CompactError::BadVarint { offset: 3 })
        );
        assert!(matches!(
            CompactDist::from_bytes(
                &[8, 1, 0, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01, 255],
                usize::MAX
            ),
            Err(CompactError::BadVarint { offset: 3 })
        ));
        // 5-byte varint above u32::MAX.
        assert!(matches!(
            CompactDist::from_bytes(&[8, 1, 0, 0xff, 0xff, 0xff, 0xff, 0x1f, 255], usize::MAX),
            Err(CompactError::BadVarint { offset: 3 })
        ));
        // 4-bit padding nibble must be zero.
        let c4 = CompactDist::from_parts(vec![0], vec![15], 4, 6).unwrap();
        assert_eq!(c4.to_bytes(), vec![4, 1, 0, 0, 0x0f]);
        assert_eq!(
            CompactDist::from_bytes(&[4, 1, 0, 0, 0x1f], 6),
            Err(CompactError::NonZeroPadding)
        );
    }

    #[test]
    fn packing_matches_the_wire_protocol() {
        // The vectors of ecspec-proto's tests/compact_dist.rs (CompactDist.probs layout).
        assert_eq!(
            pack_levels(&[0xF, 0x0, 0x7, 0x1, 0xA], 4),
            vec![0x0F, 0x17, 0x0A]
        );
        assert_eq!(
            pack_levels(&[0b101, 0b011, 0b110], 3),
            vec![0b1001_1101, 0b1]
        );
        assert_eq!(
            pack_levels(&[0x1234, 0xfffe], 16),
            vec![0x34, 0x12, 0xfe, 0xff]
        );
        assert_eq!(
            CompactDist::unpack_levels(&[0b1001_1101, 0b1], 3, 3),
            Ok(vec![5, 3, 6])
        );
        // Every width round-trips through from_packed.
        for bits in MIN_BITS..=MAX_BITS {
            let total = (1u32 << bits) - 1;
            let n = 37usize.min(total as usize);
            let ids: Vec<u32> = (0..n as u32).map(|i| i * 3).collect();
            let mut levels = vec![1u16; n];
            levels[0] = (total - (n as u32 - 1)) as u16;
            let c = CompactDist::from_parts(ids.clone(), levels, bits, 200).unwrap();
            let packed = c.packed_levels();
            assert_eq!(packed.len(), (n * bits as usize).div_ceil(8));
            assert_eq!(
                CompactDist::from_packed(ids, &packed, bits, 200).unwrap(),
                c,
                "bits {bits}"
            );
        }
        let c = CompactDist::from_parts(vec![4, 2, 0], vec![5, 1, 1], 3, 6).unwrap();
        assert_eq!(c.packed_levels(), vec![0b0100_1101, 0b0]);
        assert_eq!(
            CompactDist::from_packed(vec![4, 2, 0], &[0b0100_1101, 0b10], 3, 6),
            Err(CompactError::NonZeroPadding)
        );
        assert!(matches!(
            CompactDist::from_packed(vec![4, 2, 0], &[0b0100_1101], 3, 6),
            Err(CompactError::Truncated { .. })
        ));
    }

    #[test]
    fn from_parts_checks() {
        assert_eq!(
            CompactDist::from_parts(vec![1, 2], vec![255], 8, 6),
            Err(CompactError::LengthMismatch { ids: 2, levels: 1 })
        );
        assert_eq!(
            CompactDist::from_parts(vec![1], vec![16], 4, 6),
            Err(CompactError::LevelTooLarge {
                index: 0,
                level: 16,
                bits: 4
            })
        );
        assert_eq!(
            CompactDist::from_parts(vec![1, 1], vec![65_000, 535], 16, 6),
            Err(CompactError::DuplicateId { id: 1 })
        );
        assert!(CompactDist::from_parts(vec![1, 0], vec![65_000, 535], 16, 6).is_ok());
    }
}
