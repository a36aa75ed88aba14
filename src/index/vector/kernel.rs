//! The numeric kernel: unit-length normalisation and the dot product every distance is made
//! of, with the distance hnsw_rs is given.

use hnsw_rs::anndists::dist::Distance;

use crate::index::IndexError;

/// `1 - dot` for unit vectors, clamped to `[0, 2]`; NaN maps to the largest distance. hnsw_rs
/// asserts distances are non-negative, so this must never return a negative number or NaN.
#[derive(Debug, Clone, Copy, Default)]
pub struct UnitCosine;

impl Distance<f32> for UnitCosine {
    fn eval(&self, va: &[f32], vb: &[f32]) -> f32 {
        let distance = 1.0 - dot(va, vb);
        if distance.is_nan() {
            2.0
        } else {
            distance.clamp(0.0, 2.0)
        }
    }
}

/// Check dimension and values, and scale to unit length.
pub(super) fn normalise(
    vector: &[f32],
    dim: usize,
    what: impl FnOnce() -> String,
) -> Result<Vec<f32>, IndexError> {
    if vector.len() != dim {
        return Err(IndexError::DimensionMismatch {
            expected: dim,
            got: vector.len(),
        });
    }
    if vector.iter().any(|x| !x.is_finite()) {
        return Err(IndexError::NonFiniteVector { what: what() });
    }
    // f64, so large but finite components cannot overflow the sum of squares.
    let norm = vector
        .iter()
        .map(|&x| f64::from(x) * f64::from(x))
        .sum::<f64>()
        .sqrt();
    if norm == 0.0 {
        return Err(IndexError::ZeroVector { what: what() });
    }
    Ok(vector
        .iter()
        .map(|&x| (f64::from(x) / norm) as f32)
        .collect())
}

/// Dot product: the hot loop of every graph insert and search (most of an insert's time),
/// so it uses AVX2 + FMA when the CPU has them (checked at run time; the build cannot
/// assume the CPU), else a portable loop.
pub(super) fn dot(a: &[f32], b: &[f32]) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
        // SAFETY: the CPU supports AVX2 and FMA, checked just above.
        return unsafe { dot_avx2_fma(a, b) };
    }
    dot_portable(a, b)
}

/// 32 floats per step in four independent accumulators (FMA latency is four cycles).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn dot_avx2_fma(a: &[f32], b: &[f32]) -> f32 {
    use std::arch::x86_64::{
        __m256, _mm256_add_ps, _mm256_fmadd_ps, _mm256_loadu_ps, _mm256_setzero_ps,
        _mm256_storeu_ps,
    };
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    // SAFETY (loads): every load reads 8 floats starting at `i`, and `i + 8 <= n` holds for
    // each of them by the loop conditions.
    let load = |s: &[f32], i: usize| -> __m256 { unsafe { _mm256_loadu_ps(s.as_ptr().add(i)) } };
    let mut acc = [_mm256_setzero_ps(); 4];
    let mut i = 0;
    while i + 32 <= n {
        for (k, lane) in acc.iter_mut().enumerate() {
            *lane = _mm256_fmadd_ps(load(a, i + 8 * k), load(b, i + 8 * k), *lane);
        }
        i += 32;
    }
    while i + 8 <= n {
        acc[0] = _mm256_fmadd_ps(load(a, i), load(b, i), acc[0]);
        i += 8;
    }
    let sum = _mm256_add_ps(_mm256_add_ps(acc[0], acc[1]), _mm256_add_ps(acc[2], acc[3]));
    let mut lanes = [0.0f32; 8];
    // SAFETY: `lanes` holds exactly 8 floats.
    unsafe { _mm256_storeu_ps(lanes.as_mut_ptr(), sum) };
    let tail: f32 = a[i..].iter().zip(&b[i..]).map(|(x, y)| x * y).sum();
    lanes.iter().sum::<f32>() + tail
}

/// Dot product with eight independent accumulators, so the compiler can vectorise it.
pub(super) fn dot_portable(a: &[f32], b: &[f32]) -> f32 {
    let (chunks_a, chunks_b) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f32 = chunks_a
        .remainder()
        .iter()
        .zip(chunks_b.remainder())
        .map(|(x, y)| x * y)
        .sum();
    let mut lanes = [0.0f32; 8];
    for (xs, ys) in chunks_a.zip(chunks_b) {
        for ((lane, x), y) in lanes.iter_mut().zip(xs).zip(ys) {
            *lane += x * y;
        }
    }
    lanes.iter().sum::<f32>() + tail
}
