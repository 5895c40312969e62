//! N's weight update in float32, operation for operation as PyTorch's CPU kernels compute it.
//!
//! N keeps `self.weights` as a float32 tensor and updates it with `torch.softmax`, a
//! `sum()`, a reciprocal and elementwise products. Done in f64 instead, the vector drifts from
//! N's, and a u16 weight on chain can differ by one. This module repeats N's float32 steps in
//! the order the kernels take them, so the vector is N's bit for bit:
//!
//! - `softmax` over the participants: the maximum, `exp(x - max)` by SLEEF's `expf_u10` (the
//!   vectorised exponential ATen uses; it is not correctly rounded, so libm's would differ), the
//!   sum as ATen's `reduce_all` takes it (in order below one vector's width, else lane-wise then
//!   folded by halves), then a product with the reciprocal of the sum;
//! - `Tensor.sum()` over the metagraph-sized vector: ATen's cascade sum (four interleaved
//!   partial sums of 8-lane vectors, chunked by levels, the scalar tail first at the end);
//! - `scale / s` is `s.reciprocal() * scale` (how `Tensor.__rtruediv__` is written), and a
//!   Python float meets a float32 tensor as a float32.
//!
//! The widths are those of x86-64 builds: ATen registers its AVX-512 softmax kernel (16 lanes)
//! but not an AVX-512 sum, which runs the AVX2 kernel (8 lanes). Tests compare the whole update
//! with torch over random histories (`fixtures/torch_f32/`).

/// Lanes of the vector `softmax` reduces with (AVX-512 float32).
pub const SOFTMAX_LANES: usize = 16;
/// Lanes of the vector `sum` reduces with (AVX2 float32).
pub const SUM_LANES: usize = 8;

/// `f32(x)`, as torch and Python narrow a double: round to nearest, ties to even.
#[allow(clippy::cast_possible_truncation)]
pub fn narrow(value: f64) -> f32 {
    value as f32
}

/// SLEEF's `expf_u10` (the FMA build ATen's `Vectorized<float>::exp` calls), one lane.
pub fn exp_sleef_u10(d: f32) -> f32 {
    // SLEEF's constants, written as their float32 bits so that none is rounded on the way.
    let log2_e = f32::from_bits(0x3fb8_aa3b);
    let ln2_upper = f32::from_bits(0x3f31_7200);
    let ln2_lower = f32::from_bits(0x35bf_be8e);
    let poly = [
        0x3950_2bda,
        0x3ab6_96c9,
        0x3c08_88a6,
        0x3d2a_aa7a,
        0x3e2a_aaab,
        0x3f00_0000,
    ]
    .map(f32::from_bits);
    if d.is_nan() {
        return d;
    }
    let q = libm::rintf(d * log2_e);
    let s = libm::fmaf(q, -ln2_upper, d);
    let s = libm::fmaf(q, -ln2_lower, s);
    let u = poly
        .iter()
        .skip(1)
        .fold(poly.first().copied().unwrap_or(0.0), |u, c| {
            libm::fmaf(u, s, *c)
        });
    let u = 1.0 + libm::fmaf(s * s, u, s);
    let u = ldexp2(u, q);
    if d < -104.0 {
        0.0
    } else if d > 100.0 {
        f32::INFINITY
    } else {
        u
    }
}

/// SLEEF's `vldexp2`: `u · 2^(q >> 1) · 2^(q − (q >> 1))`, each power built from its bits.
#[allow(clippy::cast_possible_truncation)]
fn ldexp2(u: f32, q: f32) -> f32 {
    // `q` is an integer; |q| stays under 2^8 for every input that is not clamped afterwards.
    let q = q.clamp(-1024.0, 1024.0) as i32;
    let half = q >> 1;
    u * pow2(half) * pow2(q.saturating_sub(half))
}

/// `2^e` as SLEEF builds it, `(e + 127) << 23`, for the exponents `ldexp2` meets.
#[allow(clippy::cast_sign_loss)]
fn pow2(e: i32) -> f32 {
    let biased = e.saturating_add(127).clamp(0, 255) as u32;
    f32::from_bits(biased << 23)
}

/// ATen's `reduce_all` with `+` over `values` for vectors of `lanes` lanes.
fn reduce_all_sum(values: &[f32], lanes: usize) -> f32 {
    if values.len() < lanes {
        let first = values.first().copied().unwrap_or(0.0);
        return values
            .iter()
            .skip(1)
            .fold(first, |total, value| total + value);
    }
    let mut chunks = values.chunks(lanes);
    let mut acc: Vec<f32> = chunks.next().map(<[f32]>::to_vec).unwrap_or_default();
    // Whole vectors add lane by lane; the last partial one adds into its first lanes only.
    for chunk in chunks {
        add_lanes(&mut acc, chunk);
    }
    // Folded by halves: lane i meets lane i ^ half, for half = lanes/2, …, 1.
    let mut half = lanes / 2;
    while half >= 1 {
        let folded: Vec<f32> = (0..lanes)
            .map(|i| {
                let a = acc.get(i).copied().unwrap_or(0.0);
                let b = acc.get(i ^ half).copied().unwrap_or(0.0);
                a + b
            })
            .collect();
        acc = folded;
        half /= 2;
    }
    acc.first().copied().unwrap_or(0.0)
}

/// `torch.softmax(torch.tensor(rates, dtype=float32) / temperature, dim=0)`.
pub fn softmax(rates: &[f64], temperature: f64) -> Vec<f32> {
    let temperature = narrow(temperature);
    let scaled: Vec<f32> = rates.iter().map(|r| narrow(*r) / temperature).collect();
    let maximum = scaled.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let exponentials: Vec<f32> = scaled.iter().map(|x| exp_sleef_u10(x - maximum)).collect();
    let inverse = 1.0 / reduce_all_sum(&exponentials, SOFTMAX_LANES);
    exponentials.iter().map(|e| e * inverse).collect()
}

/// Adds `b` into `a`, lane by lane (the shorter decides how many lanes).
fn add_lanes(a: &mut [f32], b: &[f32]) {
    for (x, y) in a.iter_mut().zip(b) {
        *x += y;
    }
}

/// Adds `from` into `into`, row by row, and zeroes `from` when `clear` is set.
fn carry(into: &mut [Vec<f32>], from: &mut [Vec<f32>], clear: bool) {
    for (sum, carried) in into.iter_mut().zip(from.iter_mut()) {
        add_lanes(sum, carried);
        if clear {
            carried.fill(0.0);
        }
    }
}

/// ATen's `multi_row_sum`: `rows` interleaved partial sums over `size` items of `width` lanes
/// (`item(i, k)` is row `k`'s item `i`), carried up four levels every `2^power` items so that
/// only sums of similar length meet.
fn multi_row_sum<'a>(
    item: &dyn Fn(usize, usize) -> &'a [f32],
    rows: usize,
    size: usize,
    width: usize,
) -> Vec<Vec<f32>> {
    const LEVELS: usize = 4;
    // ATen's `CeilLog2(size)`: 0 for sizes 0 and 1.
    let log2 = usize::try_from(size.max(1).next_power_of_two().trailing_zeros()).unwrap_or(0);
    let power = (log2 / LEVELS).max(4);
    let step = 1usize
        .checked_shl(u32::try_from(power).unwrap_or(u32::MAX))
        .unwrap_or(usize::MAX);
    let mask = step.saturating_sub(1);
    let mut acc: Vec<Vec<Vec<f32>>> = vec![vec![vec![0.0; width]; rows]; LEVELS];
    let add_item = |acc: &mut Vec<Vec<Vec<f32>>>, i: usize| {
        if let Some(level0) = acc.first_mut() {
            for (k, sum) in level0.iter_mut().enumerate() {
                add_lanes(sum, item(i, k));
            }
        }
    };
    let mut i = 0usize;
    while i.saturating_add(step) <= size {
        for _ in 0..step {
            add_item(&mut acc, i);
            i = i.saturating_add(1);
        }
        for level in 1..LEVELS {
            let (lower, upper) = acc.split_at_mut(level);
            if let (Some(below), Some(here)) = (lower.last_mut(), upper.first_mut()) {
                carry(here, below, true);
            }
            let shift = u32::try_from(level.saturating_mul(power)).unwrap_or(u32::MAX);
            if i & mask.checked_shl(shift).unwrap_or(0) != 0 {
                break;
            }
        }
    }
    while i < size {
        add_item(&mut acc, i);
        i = i.saturating_add(1);
    }
    let (first, higher) = acc.split_at_mut(1);
    if let Some(first) = first.first_mut() {
        for level in higher.iter_mut() {
            carry(first, level, false);
        }
    }
    acc.swap_remove(0)
}

/// ATen's `row_sum`: four interleaved partial sums, the leftover items into the first, then
/// the other three added to it in order.
fn row_sum<'a>(item: &dyn Fn(usize) -> &'a [f32], size: usize, width: usize) -> Vec<f32> {
    const ILP: usize = 4;
    let size_ilp = size / ILP;
    let interleaved = |i: usize, k: usize| item(i.saturating_mul(ILP).saturating_add(k));
    let mut partial = multi_row_sum(&interleaved, ILP, size_ilp, width);
    let (first, others) = partial.split_at_mut(1);
    let Some(first) = first.first_mut() else {
        return vec![0.0; width];
    };
    for i in size_ilp.saturating_mul(ILP)..size {
        add_lanes(first, item(i));
    }
    for other in others.iter() {
        add_lanes(first, other);
    }
    partial.swap_remove(0)
}

/// `torch.tensor(values, dtype=float32).sum()` on one contiguous dimension.
pub fn sum(values: &[f32]) -> f32 {
    let n = values.len();
    if n < SUM_LANES {
        let scalar = |i: usize| values.get(i..=i).unwrap_or(&[]);
        return row_sum(&scalar, n, 1).first().copied().unwrap_or(0.0);
    }
    let vectors = n / SUM_LANES;
    let whole = vectors.saturating_mul(SUM_LANES);
    let vector = |i: usize| {
        let start = i.saturating_mul(SUM_LANES);
        values
            .get(start..start.saturating_add(SUM_LANES))
            .unwrap_or(&[])
    };
    let lanes = row_sum(&vector, vectors, SUM_LANES);
    // The scalar tail is summed first, then the lanes in order.
    let tail = values.get(whole..).unwrap_or(&[]);
    let total = tail.iter().fold(0.0f32, |total, value| total + value);
    lanes.iter().fold(total, |total, value| total + value)
}

/// N's whole update for one step, in float32: the softmax of the participants' win rates
/// scattered into a metagraph-sized vector, scaled to `scale`, and folded into `weights`
/// (resized to `size`) as `alpha·w + (1 − alpha)·new`, then `nan_to_num`.
pub fn n_update(
    weights: &mut Vec<f32>,
    uids: &[u16],
    win_rates: &[f64],
    size: usize,
    temperature: f64,
    scale: f64,
    alpha: f64,
) {
    let shares = softmax(win_rates, temperature);
    let mut new = vec![0.0f32; size];
    for (uid, share) in uids.iter().zip(&shares) {
        if let Some(slot) = new.get_mut(usize::from(*uid)) {
            *slot = *share;
        }
    }
    let factor = (1.0 / sum(&new)) * narrow(scale);
    for value in &mut new {
        *value *= factor;
    }
    weights.resize(size, 0.0);
    let keep = narrow(alpha);
    let take = narrow(1.0 - alpha);
    for (old, new) in weights.iter_mut().zip(&new) {
        *old = nan_to_num(keep * *old + take * new);
    }
}

/// torch's `nan_to_num(0.0)` on float32: NaN is 0, ±∞ the largest finite values.
pub fn nan_to_num(value: f32) -> f32 {
    if value.is_nan() {
        0.0
    } else if value == f32::INFINITY {
        f32::MAX
    } else if value == f32::NEG_INFINITY {
        f32::MIN
    } else {
        value
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn softmax_matches_torch_on_a_recorded_case() {
        // torch 2.1.2: torch.softmax(torch.tensor([0.5, 0.25, 0.0]) / 0.08, 0).tolist()
        let shares = softmax(&[0.5, 0.25, 0.0], 0.08);
        let expected = [0x3f74_c5dc, 0x3d2c_12b8, 0x3af1_ee84].map(f32::from_bits);
        assert_eq!(shares, expected);
    }

    #[test]
    fn exp_is_sleef_not_correctly_rounded() {
        assert_eq!(exp_sleef_u10(0.0), 1.0);
        assert_eq!(exp_sleef_u10(-200.0), 0.0);
        assert_eq!(exp_sleef_u10(200.0), f32::INFINITY);
        // A win rate of 0 against a best of 0.75 at temperature 0.08: SLEEF's exp(-9.375) is
        // one ulp above the correctly rounded value, and torch's softmax uses SLEEF's.
        let x = narrow(0.0) / narrow(0.08) - narrow(0.75) / narrow(0.08);
        assert_eq!(x, -9.375);
        assert_eq!(exp_sleef_u10(x), f32::from_bits(0x38b1_e072));
        assert_eq!(narrow(libm::exp(f64::from(x))), f32::from_bits(0x38b1_e071));
    }
}
