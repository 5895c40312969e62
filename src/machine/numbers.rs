//! Exact numeric helpers shared by the rules: integer-to-float conversions that cannot lose
//! precision, and the block arithmetic of the original validator.

/// Largest integer an f64 holds exactly (2^53).
const F64_EXACT_MAX: u64 = 1 << 53;

/// Converts a count to f64. Counts in this project (matches, blocks) stay far below 2^53, where
/// the conversion is exact; above it the value saturates at 2^53 rather than rounding silently.
pub fn exact_f64(value: u64) -> f64 {
    let clamped = value.min(F64_EXACT_MAX);
    // Exact: `clamped` ≤ 2^53 fits the 53-bit significand, and u32 halves convert losslessly.
    let high = u32::try_from(clamped >> 32).unwrap_or(u32::MAX);
    let low = u32::try_from(clamped & 0xFFFF_FFFF).unwrap_or(u32::MAX);
    f64::from(high) * 4_294_967_296.0 + f64::from(low)
}

/// N's `nearest_tempo(start, tempo, block)`: the last tempo boundary strictly before `block`,
/// counting boundaries from `start + tempo`. Python's `//` floors, hence `div_euclid`.
///
/// Returns `None` when `tempo` is 0 (N would raise `ZeroDivisionError`).
pub fn nearest_tempo(block_start: i64, tempo: i64, block: i64) -> Option<i64> {
    if tempo == 0 {
        return None;
    }
    let start = block_start.checked_add(tempo)?;
    let intervals = block.checked_sub(start)?.checked_div_euclid(tempo)?;
    let nearest = start.checked_add(intervals.checked_mul(tempo)?)?;
    if nearest >= block {
        nearest.checked_sub(tempo)
    } else {
        Some(nearest)
    }
}

/// The successor's `get_sync_block(block, cadence, genesis)`: `(b - g) // c * c + g`.
pub fn sync_block(block: i64, cadence: i64, genesis: i64) -> Option<i64> {
    let offset = block.checked_sub(genesis)?.checked_div_euclid(cadence)?;
    offset.checked_mul(cadence)?.checked_add(genesis)
}

/// The successor's `get_next_sync_block`: the sync block after `block`'s (a block on the
/// grid waits a whole cadence).
pub fn next_sync_block(block: i64, cadence: i64, genesis: i64) -> Option<i64> {
    sync_block(block, cadence, genesis)?.checked_add(cadence)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_f64_is_exact_below_2_pow_53() {
        for value in [0u64, 1, 2, 1 << 32, (1 << 32) + 7, (1 << 53) - 1, 1 << 53] {
            assert_eq!(exact_f64(value), value as f64);
        }
        assert_eq!(exact_f64(u64::MAX), (1u64 << 53) as f64);
    }

    #[test]
    fn nearest_tempo_matches_python_floor_division() {
        // Hand-computed with N's formula (Python):
        // nearest_tempo(2225782, 360, 3000000 - 360): start=2226142,
        // (2999640-2226142)//360 = 2148, 2226142 + 2148*360 = 2999422 < 2999640.
        assert_eq!(
            nearest_tempo(2_225_782, 360, 3_000_000 - 360),
            Some(2_999_422)
        );
        // A block exactly on a boundary steps back one tempo.
        assert_eq!(nearest_tempo(0, 10, 30), Some(20));
        // Blocks before the first boundary: Python floors toward -inf.
        assert_eq!(nearest_tempo(100, 10, 105), Some(100));
        assert_eq!(nearest_tempo(100, 10, 95), Some(90));
        assert_eq!(nearest_tempo(0, 0, 95), None);
    }

    #[test]
    fn sync_block_matches_the_successors_tests() {
        for block in 1_234_511..1_234_611 {
            assert_eq!(sync_block(block, 100, 1_111_111), Some(1_234_511));
        }
        assert_eq!(sync_block(1_234_611, 100, 1_111_111), Some(1_234_611));
        for block in 1_234_511..1_234_611 {
            assert_eq!(next_sync_block(block, 100, 1_111_111), Some(1_234_611));
        }
        assert_eq!(next_sync_block(1_234_611, 100, 1_111_111), Some(1_234_711));
        // Competition 4's grid (genesis 3,138,611, cadence 360) at its first block.
        assert_eq!(sync_block(5_158_632, 360, 3_138_611), Some(5_158_571));
        // Python's `//` floors below genesis.
        assert_eq!(sync_block(1_111_110, 100, 1_111_111), Some(1_111_011));
    }
}
