//! CPU kernels candle does not have in a fast form, as candle custom ops. Measured on
//! all-MiniLM-L6-v2 with SciFact abstracts (2 cores), before these kernels:
//!
//! - candle's `gelu_erf` runs libm's scalar `erff` on one thread: a fifth of the time.
//!   [`bias_gelu`] adds the bias and applies GELU in one pass, on every core, with an erf
//!   that compiles to straight-line vector code.
//! - Attention through candle ops (split heads, copy, batched matmul, softmax, merge heads)
//!   took a quarter of the time, mostly copies, small multi-threaded matrix products and
//!   scalar `exp`. [`packed_attention`] runs one task per (text, head), reads the fused
//!   QKV matrix in place through strides, and multiplies with single-threaded gemm.

use candle_core::{CpuStorage, CustomOp1, Device, Layout, Shape, Storage, Tensor};
use gemm::Parallelism;
use rayon::prelude::*;

/// Rows handed to one rayon task: enough work to amortise scheduling.
const ROWS_PER_TASK: usize = 16;

/// What [`linear`] does to its output after the matrix product.
pub enum Epilogue<'a> {
    /// Nothing: `x·W + b`.
    None,
    /// Add a `[rows, out]` tensor: `x·W + b + residual`, BERT's skip connection.
    Residual(&'a Tensor),
    /// Apply the exact GELU: `gelu(x·W + b)`.
    Gelu,
}

/// `x·W + b` and its epilogue, for a contiguous `[rows, in]` x, W given transposed and
/// contiguous as `[in, out]`, and an `[out]` bias. The bias (and residual) are written into
/// the output first and gemm accumulates onto them, so neither costs a pass of its own.
pub fn linear(
    x: &Tensor,
    w: &Tensor,
    bias: &Tensor,
    epilogue: Epilogue<'_>,
) -> candle_core::Result<Tensor> {
    let (rows, k) = x.dims2()?;
    let (k2, n) = w.dims2()?;
    if k != k2 || bias.dims() != [n] {
        candle_core::bail!(
            "linear: x {:?}, w {:?}, bias {:?} do not fit",
            x.dims(),
            w.dims(),
            bias.dims()
        );
    }
    let (xs, xl) = x.storage_and_layout();
    let (ws, wl) = w.storage_and_layout();
    let (bs, bl) = bias.storage_and_layout();
    let (xv, wv, bv) = (
        f32_slice(&xs, xl)?,
        f32_slice(&ws, wl)?,
        f32_slice(&bs, bl)?,
    );
    let residual = match &epilogue {
        Epilogue::Residual(r) => {
            if r.dims() != [rows, n] {
                candle_core::bail!("linear: residual {:?} is not [{rows}, {n}]", r.dims());
            }
            Some(r.storage_and_layout())
        }
        _ => None,
    };
    let rv = match &residual {
        Some((rs, rl)) => Some(f32_slice(rs, rl)?),
        None => None,
    };
    let mut out = vec![0f32; rows * n];
    out.par_chunks_mut(n * ROWS_PER_TASK)
        .enumerate()
        .for_each(|(task, chunk)| {
            for (i, row) in chunk.chunks_exact_mut(n).enumerate() {
                row.copy_from_slice(bv);
                if let Some(r) = rv {
                    let at = (task * ROWS_PER_TASK + i) * n;
                    for (o, &x) in row.iter_mut().zip(&r[at..at + n]) {
                        *o += x;
                    }
                }
            }
        });
    let threads = rayon::current_num_threads();
    // SAFETY: dst is rows×n, lhs rows×k and rhs k×n, all contiguous row-major slices of
    // exactly those sizes (checked by f32_slice and the shape checks above).
    unsafe {
        gemm::gemm(
            rows,
            n,
            k,
            out.as_mut_ptr(),
            1,
            n as isize,
            true,
            xv.as_ptr(),
            1,
            k as isize,
            wv.as_ptr(),
            1,
            n as isize,
            1.0,
            1.0,
            false,
            false,
            false,
            if threads > 1 {
                Parallelism::Rayon(threads)
            } else {
                Parallelism::None
            },
        );
    }
    if matches!(epilogue, Epilogue::Gelu) {
        out.par_chunks_mut(n * ROWS_PER_TASK)
            .for_each(gelu_in_place);
    }
    Tensor::from_vec(out, (rows, n), &Device::Cpu)
}

/// The contiguous f32 data of a CPU tensor, exactly `layout`'s elements.
fn f32_slice<'a>(storage: &'a Storage, layout: &Layout) -> candle_core::Result<&'a [f32]> {
    let (Storage::Cpu(CpuStorage::F32(all)), Some((from, to))) =
        (storage, layout.contiguous_offsets())
    else {
        candle_core::bail!("expected a contiguous f32 CPU tensor");
    };
    Ok(&all[from..to])
}

/// The exact GELU, `x/2 · (1 + erf(x/√2))`.
#[inline(always)]
fn gelu(x: f32) -> f32 {
    0.5 * x * (1.0 + erf(x * std::f32::consts::FRAC_1_SQRT_2))
}

/// Self-attention over packed texts: `qkv` is `[tokens, 3·hidden]` (queries, already scaled
/// by 1/√head_dim, then keys, then values); text `i` owns `lens[i]` consecutive rows and
/// attends only to itself. Returns the `[tokens, hidden]` context.
pub fn packed_attention(
    qkv: &Tensor,
    lens: &[usize],
    heads: usize,
    head_dim: usize,
) -> candle_core::Result<Tensor> {
    qkv.apply_op1_no_bwd(&PackedAttention {
        lens: lens.to_vec(),
        heads,
        head_dim,
    })
}

struct PackedAttention {
    lens: Vec<usize>,
    heads: usize,
    head_dim: usize,
}

impl CustomOp1 for PackedAttention {
    fn name(&self) -> &'static str {
        "packed-attention"
    }

    fn cpu_fwd(
        &self,
        storage: &CpuStorage,
        layout: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let CpuStorage::F32(all) = storage else {
            candle_core::bail!("packed-attention: f32 only");
        };
        let Some((from, to)) = layout.contiguous_offsets() else {
            candle_core::bail!("packed-attention: qkv must be contiguous");
        };
        let qkv = &all[from..to];
        let (heads, hd) = (self.heads, self.head_dim);
        let hidden = heads * hd;
        let tokens: usize = self.lens.iter().sum();
        if layout.dims() != [tokens, 3 * hidden] || qkv.len() != tokens * 3 * hidden {
            candle_core::bail!(
                "packed-attention: qkv {:?} does not match {tokens} tokens × 3·{hidden}",
                layout.dims()
            );
        }
        let mut tasks = Vec::with_capacity(self.lens.len() * heads);
        let mut start = 0;
        for &len in &self.lens {
            for head in 0..heads {
                tasks.push((start, len, head));
            }
            start += len;
        }
        let contexts: Vec<Vec<f32>> = tasks
            .par_iter()
            .map(|&(start, len, head)| {
                let rows = &qkv[start * 3 * hidden..(start + len) * 3 * hidden];
                attend_one_head(rows, len, head, heads, hd)
            })
            .collect();
        // Interleave the heads back into rows: a copy of tokens × hidden floats.
        let mut out = vec![0f32; tokens * hidden];
        for (&(start, len, head), context) in tasks.iter().zip(&contexts) {
            for (i, row) in context.chunks_exact(hd).enumerate().take(len) {
                let at = (start + i) * hidden + head * hd;
                out[at..at + hd].copy_from_slice(row);
            }
        }
        Ok((CpuStorage::F32(out), Shape::from((tokens, hidden))))
    }
}

/// softmax(Q·Kᵀ)·V for one head of one text. `rows` holds the text's `len` rows of the
/// fused QKV matrix (`3·heads·hd` wide); returns the `[len, hd]` context.
fn attend_one_head(rows: &[f32], len: usize, head: usize, heads: usize, hd: usize) -> Vec<f32> {
    let width = 3 * heads * hd;
    let (q, k, v) = (
        head * hd,
        heads * hd + head * hd,
        2 * heads * hd + head * hd,
    );
    // The gemm calls below read `rows` at offsets (row < len) * width + (col < hd) from
    // q, k and v, all inside the slice; assert it so the unsafe calls stay in bounds.
    assert!(rows.len() == len * width && v + hd <= width);
    let mut scores = vec![0f32; len * len];
    // SAFETY: dst is len×len contiguous; lhs is Q (len×hd, row stride `width`), rhs is Kᵀ
    // (hd×len: element (d, j) is K[j][d] at j·width + d); every index is within `rows`.
    unsafe {
        gemm::gemm(
            len,
            len,
            hd,
            scores.as_mut_ptr(),
            1,
            len as isize,
            false,
            rows.as_ptr().add(q),
            1,
            width as isize,
            rows.as_ptr().add(k),
            width as isize,
            1,
            0.0,
            1.0,
            false,
            false,
            false,
            Parallelism::None,
        );
    }
    softmax_rows(&mut scores, len);
    let mut context = vec![0f32; len * hd];
    // SAFETY: dst is len×hd contiguous; lhs is the len×len probabilities; rhs is V (len×hd,
    // row stride `width`) inside `rows`.
    unsafe {
        gemm::gemm(
            len,
            hd,
            len,
            context.as_mut_ptr(),
            1,
            hd as isize,
            false,
            scores.as_ptr(),
            1,
            len as isize,
            rows.as_ptr().add(v),
            1,
            width as isize,
            0.0,
            1.0,
            false,
            false,
            false,
            Parallelism::None,
        );
    }
    context
}

/// Runs `$body` compiled for AVX2 when the CPU has it (checked at run time, since the build
/// cannot assume the CPU), else for the baseline. The element-wise loops below are written
/// to vectorise; AVX2 doubles their width over baseline x86-64's SSE2.
macro_rules! with_avx2 {
    ($vis:vis $name:ident($($arg:ident: $ty:ty),*) $body:block) => {
        $vis fn $name($($arg: $ty),*) {
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx2")]
                fn avx2($($arg: $ty),*) $body
                if std::is_x86_feature_detected!("avx2") {
                    // SAFETY: the CPU supports AVX2, checked just above.
                    unsafe { avx2($($arg),*) };
                    return;
                }
            }
            $body
        }
    };
}

with_avx2!(gelu_in_place(values: &mut [f32]) {
    for v in values.iter_mut() {
        *v = gelu(*v);
    }
});

with_avx2!(softmax_rows(scores: &mut [f32], len: usize) {
    for row in scores.chunks_exact_mut(len) {
        softmax_in_place(row);
    }
});

/// Softmax of one row, written so that each loop vectorises: the max and the sum use eight
/// independent lanes (a single float accumulator would force one element at a time).
#[inline(always)]
fn softmax_in_place(row: &mut [f32]) {
    let mut lanes = [f32::NEG_INFINITY; 8];
    let mut chunks = row.chunks_exact(8);
    for chunk in &mut chunks {
        for (lane, &x) in lanes.iter_mut().zip(chunk) {
            *lane = if x > *lane { x } else { *lane };
        }
    }
    let max = chunks
        .remainder()
        .iter()
        .chain(&lanes)
        .fold(f32::NEG_INFINITY, |m, &x| if x > m { x } else { m });
    for x in row.iter_mut() {
        *x = exp(*x - max);
    }
    let mut sums = [0f32; 8];
    let mut chunks = row.chunks_exact(8);
    for chunk in &mut chunks {
        for (sum, &x) in sums.iter_mut().zip(chunk) {
            *sum += x;
        }
    }
    let sum: f32 = sums.iter().sum::<f32>() + chunks.remainder().iter().sum::<f32>();
    let scale = 1.0 / sum;
    for x in row.iter_mut() {
        *x *= scale;
    }
}

/// e^x for f32 by range reduction (x = n·ln2 + r) and a degree-6 polynomial for e^r:
/// relative error about 2e-7, no branches or calls, so loops over it vectorise. Inputs below
/// -87 give about 1e-38 instead of smaller subnormals, which is 0 for a softmax.
#[inline(always)]
pub fn exp(x: f32) -> f32 {
    // Adding and subtracting 1.5·2^23 rounds to the nearest integer in plain SSE2 code;
    // `f32::round` would be a libm call on baseline x86-64, and block vectorisation.
    const ROUND: f32 = 12_582_912.0;
    let x = x.clamp(-87.0, 88.0);
    let shifted = x * std::f32::consts::LOG2_E + ROUND;
    let n = shifted - ROUND;
    // ln 2 split in two so n·ln2 is exact enough.
    let r = x - n * 0.693_145_75 - n * 1.428_606_8e-6;
    let mut p = 1.0 / 720.0_f32;
    p = p * r + 1.0 / 120.0;
    p = p * r + 1.0 / 24.0;
    p = p * r + 1.0 / 6.0;
    p = p * r + 0.5;
    p = p * r + 1.0;
    p = p * r + 1.0;
    // n sits in the low mantissa bits of `shifted`; n + 127 is 2^n's exponent field. Integer
    // arithmetic on the bits, since a float-to-int cast is a saturating (slow) conversion.
    let biased = shifted
        .to_bits()
        .wrapping_sub(ROUND.to_bits())
        .wrapping_add(127);
    p * f32::from_bits(biased << 23)
}

/// erf for f32 as a rational function (the approximation Eigen and XLA use for float):
/// absolute error below 5e-7, no branches, so loops over it vectorise. Plain `*` and `+`,
/// not `mul_add`: without FMA enabled at compile time (CI cannot assume the CPU),
/// `mul_add` becomes a slow software call.
#[inline(always)]
pub fn erf(x: f32) -> f32 {
    // Beyond ±4, erf is ±1 in f32.
    let x = x.clamp(-4.0, 4.0);
    let x2 = x * x;
    let mut p = -2.726_142_3e-10_f32;
    p = p * x2 + 2.770_681_4e-8;
    p = p * x2 + -2.101_024e-6;
    p = p * x2 + -5.692_506_4e-5;
    p = p * x2 + -7.349_906_3e-4;
    p = p * x2 + -2.954_600_1e-3;
    p = p * x2 + -1.609_603_3e-2;
    let mut q = -1.456_607_2e-5_f32;
    q = q * x2 + -2.133_740_6e-4;
    q = q * x2 + -1.682_827e-3;
    q = q * x2 + -7.373_329e-3;
    q = q * x2 + -1.426_473_9e-2;
    x * p / q
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn erf_is_within_5e7_of_libm() {
        let mut worst = 0f32;
        for i in -60_000..=60_000 {
            let x = i as f32 / 10_000.0;
            worst = worst.max((erf(x) - libm_erf(x)).abs());
        }
        assert!(worst < 5e-7, "max error {worst}");
        assert_eq!(erf(0.0), 0.0);
        assert!((erf(10.0) - 1.0).abs() < 5e-7 && (erf(-10.0) + 1.0).abs() < 5e-7);
    }

    fn libm_erf(x: f32) -> f32 {
        // candle's own gelu_erf uses libm; compare through it.
        let t = Tensor::new(&[x * std::f32::consts::SQRT_2], &Device::Cpu).unwrap();
        let g: Vec<f32> = t.gelu_erf().unwrap().to_vec1().unwrap();
        // gelu(y) = y/2 (1 + erf(y/√2)) with y = x√2.
        let y = x * std::f32::consts::SQRT_2;
        if y == 0.0 { 0.0 } else { 2.0 * g[0] / y - 1.0 }
    }

    #[test]
    fn exp_is_within_3e7_relative() {
        let mut worst = 0f32;
        for i in -87_000..=88_000 {
            let x = i as f32 / 1000.0;
            let (ours, std) = (exp(x), x.exp());
            worst = worst.max(((ours - std) / std).abs());
        }
        assert!(worst < 3e-7, "max relative error {worst}");
        assert!(exp(-1000.0) < 1e-37);
    }

    #[test]
    fn packed_attention_matches_candle_ops() {
        let (heads, hd) = (2, 3);
        let h = heads * hd;
        let lens = [4usize, 1, 3];
        let tokens: usize = lens.iter().sum();
        let qkv = Tensor::arange(0f32, (tokens * 3 * h) as f32, &Device::Cpu)
            .unwrap()
            .affine(0.37, 0.0)
            .unwrap()
            .sin()
            .unwrap()
            .reshape((tokens, 3 * h))
            .unwrap();
        let ours: Vec<Vec<f32>> = packed_attention(&qkv, &lens, heads, hd)
            .unwrap()
            .to_vec2()
            .unwrap();
        let mut start = 0;
        for len in lens {
            let seq = qkv.narrow(0, start, len).unwrap();
            let split = |part: usize| {
                seq.narrow(1, part * h, h)
                    .unwrap()
                    .reshape((len, heads, hd))
                    .unwrap()
                    .transpose(0, 1)
                    .unwrap()
                    .contiguous()
                    .unwrap()
            };
            let (q, k, v) = (split(0), split(1), split(2));
            let probs =
                candle_nn::ops::softmax_last_dim(&q.matmul(&k.t().unwrap()).unwrap()).unwrap();
            let expected: Vec<Vec<f32>> = probs
                .matmul(&v)
                .unwrap()
                .transpose(0, 1)
                .unwrap()
                .reshape((len, h))
                .unwrap()
                .to_vec2()
                .unwrap();
            for (i, row) in expected.iter().enumerate() {
                for (a, b) in row.iter().zip(&ours[start + i]) {
                    assert!((a - b).abs() < 1e-5, "row {}: {a} vs {b}", start + i);
                }
            }
            start += len;
        }
    }

    #[test]
    fn linear_matches_candle_with_each_epilogue() {
        let dev = Device::Cpu;
        let x = Tensor::arange(0f32, 35.0, &dev)
            .unwrap()
            .affine(0.1, -1.0)
            .unwrap();
        let x = x.sin().unwrap().reshape((7, 5)).unwrap();
        let w = Tensor::arange(0f32, 15.0, &dev)
            .unwrap()
            .affine(0.3, 0.2)
            .unwrap();
        let w = w.cos().unwrap().reshape((5, 3)).unwrap();
        let b = Tensor::new(&[0.5f32, -1.0, 0.25], &dev).unwrap();
        let r = Tensor::arange(0f32, 21.0, &dev)
            .unwrap()
            .reshape((7, 3))
            .unwrap();
        let base = x.matmul(&w).unwrap().broadcast_add(&b).unwrap();
        let cases = [
            (Epilogue::None, base.clone()),
            (Epilogue::Residual(&r), (&base + &r).unwrap()),
            (Epilogue::Gelu, base.gelu_erf().unwrap()),
        ];
        for (epilogue, expected) in cases {
            let got: Vec<f32> = linear(&x, &w, &b, epilogue)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1()
                .unwrap();
            let expected: Vec<f32> = expected.flatten_all().unwrap().to_vec1().unwrap();
            for (a, b) in got.iter().zip(&expected) {
                assert!((a - b).abs() < 1e-5, "{a} vs {b}");
            }
        }
        let wrong = Tensor::zeros((4, 3), candle_core::DType::F32, &dev).unwrap();
        assert!(linear(&x, &wrong, &b, Epilogue::None).is_err());
    }
}
