//! Seeded tensor generators for constants written as `normal(...)` or `uniform(...)` in the
//! text IR.
//!
//! The generators are defined here, bit for bit (splitmix64 and Box–Muller in `f64`), so a
//! text-IR file means the same weights on every machine and in every version of Fovea.

use crate::error::Result;
use crate::tensor::{Tensor, element_count};

/// splitmix64: a small, well-mixed 64-bit generator.
struct SplitMix64(u64);

impl SplitMix64 {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `[0, 1)` with 53 bits of precision.
    fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }
}

/// `f32` samples of a normal distribution with the given mean and standard deviation.
pub fn normal(shape: Vec<usize>, seed: u64, mean: f64, std: f64) -> Result<Tensor> {
    let n = element_count(&shape)?;
    let mut rng = SplitMix64(seed);
    let mut data = Vec::with_capacity(n);
    while data.len() < n {
        // Box–Muller: two uniforms give two independent standard normals.
        let u1 = 1.0 - rng.next_f64();
        let u2 = rng.next_f64();
        let r = (-2.0 * u1.ln()).sqrt();
        let theta = 2.0 * std::f64::consts::PI * u2;
        data.push((mean + std * r * theta.cos()) as f32);
        if data.len() < n {
            data.push((mean + std * r * theta.sin()) as f32);
        }
    }
    Tensor::from_f32(shape, data)
}

/// `f32` samples of a uniform distribution over `[low, high)`.
pub fn uniform(shape: Vec<usize>, seed: u64, low: f64, high: f64) -> Result<Tensor> {
    let n = element_count(&shape)?;
    let mut rng = SplitMix64(seed);
    let data = (0..n)
        .map(|_| (low + (high - low) * rng.next_f64()) as f32)
        .collect();
    Tensor::from_f32(shape, data)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normal_has_the_requested_moments_and_is_deterministic() {
        let t = normal(vec![100_000], 7, 0.5, 2.0).unwrap();
        let v = t.as_f32().unwrap();
        let mean = v.iter().map(|&x| f64::from(x)).sum::<f64>() / v.len() as f64;
        let var = v
            .iter()
            .map(|&x| (f64::from(x) - mean).powi(2))
            .sum::<f64>()
            / v.len() as f64;
        assert!((mean - 0.5).abs() < 0.03, "{mean}");
        assert!((var.sqrt() - 2.0).abs() < 0.03, "{}", var.sqrt());
        assert_eq!(t, normal(vec![100_000], 7, 0.5, 2.0).unwrap());
        assert_ne!(t, normal(vec![100_000], 8, 0.5, 2.0).unwrap());
    }

    #[test]
    fn uniform_stays_in_range() {
        let t = uniform(vec![10_000], 3, -1.0, 1.0).unwrap();
        assert!(
            t.as_f32()
                .unwrap()
                .iter()
                .all(|&x| (-1.0..1.0).contains(&x))
        );
    }
}
