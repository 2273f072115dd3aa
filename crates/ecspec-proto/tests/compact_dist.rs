//! Bit packing of quantized draft distributions.

use ecspec_proto::{CompactDist, DistError, MAX_DIST_BITS};

#[test]
fn four_bit_levels_pack_low_nibble_first() {
    let d =
        CompactDist::from_levels(vec![10, 11, 12, 13, 14], &[0xF, 0x0, 0x7, 0x1, 0xA], 4).unwrap();
    assert_eq!(d.probs, vec![0x0F, 0x17, 0x0A]); // 5 × 4 bits = 20 bits → 3 bytes
    assert_eq!(d.bits, 4);
    assert_eq!(d.levels().unwrap(), vec![15, 0, 7, 1, 10]);
}

#[test]
fn odd_widths_straddle_bytes() {
    // 3 levels × 3 bits, LSB first: 5 | 3 << 3 | 6 << 6 = 413 = 0x19D → bytes 0x9D, 0x01.
    let d = CompactDist::from_levels(vec![1, 2, 3], &[0b101, 0b011, 0b110], 3).unwrap();
    assert_eq!(d.probs, vec![0b1001_1101, 0b1]);
    assert_eq!(d.levels().unwrap(), vec![5, 3, 6]);
}

#[test]
fn every_width_round_trips() {
    for bits in 1..=MAX_DIST_BITS {
        let max = (1u32 << bits) - 1;
        let levels: Vec<u32> = (0..37u32)
            .map(|i| i.wrapping_mul(2_654_435_761).wrapping_add(i >> 1) & max)
            .collect();
        let ids: Vec<u32> = (0..37).collect();
        let d = CompactDist::from_levels(ids, &levels, bits).unwrap();
        assert_eq!(d.probs.len(), (37 * bits as usize).div_ceil(8));
        assert_eq!(d.levels().unwrap(), levels, "bits = {bits}");
    }
}

#[test]
fn bad_inputs_are_typed_errors() {
    assert_eq!(
        CompactDist::from_levels(vec![1], &[0], 0),
        Err(DistError::BitsOutOfRange { bits: 0, max: 16 })
    );
    assert_eq!(
        CompactDist::from_levels(vec![1], &[0], 17),
        Err(DistError::BitsOutOfRange { bits: 17, max: 16 })
    );
    assert_eq!(
        CompactDist::from_levels(vec![1, 2], &[0], 4),
        Err(DistError::LengthMismatch { ids: 2, levels: 1 })
    );
    assert_eq!(
        CompactDist::from_levels(vec![1, 2], &[3, 16], 4),
        Err(DistError::LevelTooLarge {
            index: 1,
            level: 16,
            bits: 4
        })
    );
    let d = CompactDist {
        ids: vec![1, 2, 3],
        probs: vec![0xFF],
        bits: 4,
    };
    assert_eq!(
        d.levels(),
        Err(DistError::ProbsLength {
            ids: 3,
            bits: 4,
            expected: 2,
            actual: 1
        })
    );
    let d = CompactDist {
        ids: vec![1],
        probs: vec![0xFF],
        bits: 99,
    };
    assert_eq!(
        d.levels(),
        Err(DistError::BitsOutOfRange { bits: 99, max: 16 })
    );
}
