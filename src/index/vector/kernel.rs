//! The numeric kernel: unit-length normalisation and the dot products every graph distance
//! is made of.

use crate::index::IndexError;

/// `1 - similarity` clamped to `[0, 2]`, NaN (a damaged vector) as the largest distance: the
/// graph orders by it and must never see NaN.
fn as_distance(similarity: f32) -> f32 {
    let distance = 1.0 - similarity;
    if distance.is_nan() {
        2.0
    } else {
        distance.clamp(0.0, 2.0)
    }
}

/// Distance of two unit f32 vectors (an f32 graph's).
pub(super) fn unit_distance(a: &[f32], b: &[f32]) -> f32 {
    as_distance(dot(a, b))
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

/// Bytes after the `dim` quantised components of a compact vector: its scale, an `f32` in
/// little-endian order, kept inside the vector so one slice per node holds all of it.
pub(super) const SCALE_BYTES: usize = 4;

/// A unit vector as int8 components plus its scale (see [`SCALE_BYTES`]): component `i` is
/// about `q[i] * scale`. The largest component maps to ±127, so each vector uses the whole
/// range whatever its spread. Only finite, non-zero vectors reach here (see [`normalise`]).
pub(super) fn quantise(unit: &[f32]) -> Vec<i8> {
    let max = unit.iter().fold(0.0f32, |m, x| m.max(x.abs()));
    let scale = if max > 0.0 && max.is_finite() {
        max / 127.0
    } else {
        0.0
    };
    let mut out: Vec<i8> = unit
        .iter()
        .map(|&x| {
            if scale > 0.0 {
                (x / scale).round().clamp(-127.0, 127.0) as i8
            } else {
                0
            }
        })
        .collect();
    out.extend(scale.to_le_bytes().map(|b| b as i8));
    out
}

/// The scale stored at the end of a compact vector; 0 when it is missing or not finite
/// (a damaged dump), so such a vector scores 0 against everything instead of NaN.
fn scale_of(compact: &[i8]) -> f32 {
    let Some(tail) = compact.len().checked_sub(SCALE_BYTES) else {
        return 0.0;
    };
    let bytes: [u8; SCALE_BYTES] = std::array::from_fn(|i| compact[tail + i] as u8);
    let scale = f32::from_le_bytes(bytes);
    if scale.is_finite() { scale } else { 0.0 }
}

/// The components of a compact vector, without its scale.
fn components(compact: &[i8]) -> &[i8] {
    &compact[..compact.len().saturating_sub(SCALE_BYTES)]
}

/// Approximate dot product of two compact vectors.
pub(super) fn dot_compact(a: &[i8], b: &[i8]) -> f32 {
    dot_i8(components(a), components(b)) as f32 * scale_of(a) * scale_of(b)
}

/// The components back as floats (what a compact vector stands for): used only when its
/// exact copy cannot be read.
pub(super) fn dequantise(compact: &[i8]) -> Vec<f32> {
    let scale = scale_of(compact);
    components(compact)
        .iter()
        .map(|&q| f32::from(q) * scale)
        .collect()
}

/// Distance of two compact unit vectors, like [`unit_distance`]: what an int8 graph is
/// built and searched with.
pub(super) fn compact_distance(a: &[i8], b: &[i8]) -> f32 {
    as_distance(dot_compact(a, b))
}

/// Integer dot product of int8 components (each in `-127..=127`, so a 384-d sum stays far
/// inside `i32`). AVX2 when the CPU has it, else a portable loop.
pub(super) fn dot_i8(a: &[i8], b: &[i8]) -> i32 {
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU supports AVX2, checked just above.
        return unsafe { dot_i8_avx2(a, b) };
    }
    dot_i8_portable(a, b)
}

/// 32 components per step: each half sign-extended to 16 bits, multiplied and summed in
/// pairs to 32 bits (`vpmaddwd`), two independent accumulators.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn dot_i8_avx2(a: &[i8], b: &[i8]) -> i32 {
    use std::arch::x86_64::{
        __m128i, __m256i, _mm_loadu_si128, _mm256_add_epi32, _mm256_cvtepi8_epi16,
        _mm256_madd_epi16, _mm256_setzero_si256, _mm256_storeu_si256,
    };
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    // SAFETY (loads): each load reads 16 bytes starting at `i`, and `i + 16 <= n` holds for
    // each of them by the loop conditions.
    let widen = |s: &[i8], i: usize| -> __m256i {
        _mm256_cvtepi8_epi16(unsafe { _mm_loadu_si128(s.as_ptr().add(i).cast::<__m128i>()) })
    };
    let mut acc = [_mm256_setzero_si256(); 2];
    let mut i = 0;
    while i + 32 <= n {
        acc[0] = _mm256_add_epi32(acc[0], _mm256_madd_epi16(widen(a, i), widen(b, i)));
        acc[1] = _mm256_add_epi32(
            acc[1],
            _mm256_madd_epi16(widen(a, i + 16), widen(b, i + 16)),
        );
        i += 32;
    }
    if i + 16 <= n {
        acc[0] = _mm256_add_epi32(acc[0], _mm256_madd_epi16(widen(a, i), widen(b, i)));
        i += 16;
    }
    let mut lanes = [0i32; 8];
    // SAFETY: `lanes` holds exactly 8 i32, 32 bytes.
    unsafe {
        _mm256_storeu_si256(
            lanes.as_mut_ptr().cast::<__m256i>(),
            _mm256_add_epi32(acc[0], acc[1]),
        )
    };
    let tail: i32 = a[i..]
        .iter()
        .zip(&b[i..])
        .map(|(&x, &y)| i32::from(x) * i32::from(y))
        .sum();
    lanes.iter().sum::<i32>() + tail
}

/// Integer dot product, written so the compiler can vectorise it.
pub(super) fn dot_i8_portable(a: &[i8], b: &[i8]) -> i32 {
    a.iter()
        .zip(b)
        .map(|(&x, &y)| i32::from(x) * i32::from(y))
        .sum()
}
