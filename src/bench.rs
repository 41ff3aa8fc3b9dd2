//! Benchmark support: seeded inputs for a model and latency statistics.
//!
//! `fovea bench` and the criterion benches use these, so both feed a model the same inputs.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::graph::Dim;
use crate::model::Model;
use crate::tensor::{DType, Tensor};
use crate::tensor_gen;

/// Concrete shapes for inputs whose declared shape has symbolic or unknown dims.
pub type ShapeOverrides = HashMap<String, Vec<usize>>;

/// Seeded inputs for every graph input of `model` that `given` does not already supply:
/// `f32` inputs are standard normal, `i64` inputs cannot be invented and are an error.
/// Symbolic dims take their size from `shapes`; a symbol bound by one input binds the same
/// symbol in the others.
pub fn seeded_inputs(
    model: &Model,
    shapes: &ShapeOverrides,
    given: Vec<(String, Tensor)>,
    seed: u64,
) -> Result<Vec<(String, Tensor)>> {
    for name in shapes.keys() {
        if !model.inputs().iter().any(|(n, _)| n == name) {
            return Err(Error::Input {
                name: name.clone(),
                message: format!(
                    "--shape names no input of the model (inputs: {})",
                    input_list(model)
                ),
            });
        }
    }
    let mut symbols: HashMap<String, usize> = HashMap::new();
    let mut inputs = given;
    for (i, (name, ty)) in model.inputs().into_iter().enumerate() {
        if inputs.iter().any(|(n, _)| n == name) {
            continue;
        }
        let shape = match shapes.get(name) {
            Some(shape) => {
                if shape.len() != ty.rank() {
                    return Err(Error::Input {
                        name: name.to_string(),
                        message: format!("--shape has rank {}, the model declares {ty}", shape.len()),
                    });
                }
                shape.clone()
            }
            None => ty
                .shape
                .iter()
                .map(|d| match d {
                    Dim::Known(n) => Ok(*n),
                    Dim::Sym(s) if symbols.contains_key(s) => Ok(symbols[s]),
                    _ => Err(Error::Input {
                        name: name.to_string(),
                        message: format!("type {ty} has a dimension that is not fixed: give it with --shape {name}=…"),
                    }),
                })
                .collect::<Result<Vec<_>>>()?,
        };
        for (d, &n) in ty.shape.iter().zip(&shape) {
            if let Dim::Sym(s) = d {
                symbols.entry(s.clone()).or_insert(n);
            }
        }
        let tensor = match ty.dtype {
            DType::F32 => tensor_gen::normal(shape, seed.wrapping_add(i as u64), 0.0, 1.0)?,
            // An empty int64 input has nothing to invent.
            DType::I64 if shape.contains(&0) => Tensor::zeros(DType::I64, shape)?,
            DType::I64 => {
                return Err(Error::Input {
                    name: name.to_string(),
                    message: format!(
                        "int64 input ({ty}) cannot be generated: give it with --input {name}=FILE.npy"
                    ),
                });
            }
        };
        inputs.push((name.to_string(), tensor));
    }
    Ok(inputs)
}

fn input_list(model: &Model) -> String {
    model
        .inputs()
        .iter()
        .map(|(n, _)| *n)
        .collect::<Vec<_>>()
        .join(", ")
}

/// Latency statistics over timed runs.
#[derive(Clone, Debug, PartialEq)]
pub struct Latency {
    /// Number of timed runs.
    pub iters: usize,
    /// Median, in milliseconds.
    pub median_ms: f64,
    /// Fastest run, in milliseconds.
    pub min_ms: f64,
    /// Slowest run, in milliseconds.
    pub max_ms: f64,
    /// Mean, in milliseconds.
    pub mean_ms: f64,
}

impl Latency {
    /// Statistics of the given run times (at least one).
    pub fn from_samples(samples: &[Duration]) -> Latency {
        let mut ms: Vec<f64> = samples.iter().map(|d| d.as_secs_f64() * 1e3).collect();
        ms.sort_by(f64::total_cmp);
        let n = ms.len().max(1);
        let median = if ms.is_empty() {
            0.0
        } else if n % 2 == 1 {
            ms[n / 2]
        } else {
            (ms[n / 2 - 1] + ms[n / 2]) / 2.0
        };
        Latency {
            iters: ms.len(),
            median_ms: median,
            min_ms: ms.first().copied().unwrap_or(0.0),
            max_ms: ms.last().copied().unwrap_or(0.0),
            mean_ms: ms.iter().sum::<f64>() / n as f64,
        }
    }
}

/// Runs `f` `warmup` times untimed, then `iters` times timed.
pub fn measure<T>(warmup: usize, iters: usize, f: impl FnMut() -> Result<T>) -> Result<Latency> {
    measure_with_progress(warmup, iters, f, |_| {})
}

/// What [`measure_with_progress`] has done so far.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Progress {
    /// `done` of `total` untimed warm-up runs.
    Warmup {
        /// Runs finished.
        done: usize,
        /// Runs in all.
        total: usize,
    },
    /// `done` of `total` timed runs.
    Timed {
        /// Runs finished.
        done: usize,
        /// Runs in all.
        total: usize,
    },
}

/// [`measure`], calling `progress` after every run, outside the timed span.
pub fn measure_with_progress<T>(
    warmup: usize,
    iters: usize,
    mut f: impl FnMut() -> Result<T>,
    mut progress: impl FnMut(Progress),
) -> Result<Latency> {
    for done in 1..=warmup {
        f()?;
        progress(Progress::Warmup {
            done,
            total: warmup,
        });
    }
    let total = iters.max(1);
    let mut samples = Vec::with_capacity(total);
    for done in 1..=total {
        let start = Instant::now();
        let out = f()?;
        samples.push(start.elapsed());
        drop(out);
        progress(Progress::Timed { done, total });
    }
    Ok(Latency::from_samples(&samples))
}

/// Parses a shape written `1x3x224x224` (an empty string is a scalar).
pub fn parse_shape(text: &str) -> Result<Vec<usize>> {
    if text.is_empty() {
        return Ok(Vec::new());
    }
    text.split('x')
        .map(|d| {
            d.trim().parse::<usize>().map_err(|_| {
                Error::Usage(format!(
                    "bad shape {text:?}: expected dimensions like 1x3x224x224"
                ))
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_even_and_odd_counts() {
        let ms = |v: &[u64]| {
            v.iter()
                .map(|&x| Duration::from_millis(x))
                .collect::<Vec<_>>()
        };
        assert_eq!(Latency::from_samples(&ms(&[3, 1, 2])).median_ms, 2.0);
        assert_eq!(Latency::from_samples(&ms(&[4, 1, 2, 3])).median_ms, 2.5);
        assert_eq!(Latency::from_samples(&ms(&[4, 1, 2, 3])).min_ms, 1.0);
    }

    #[test]
    fn shapes_parse_and_reject_garbage() {
        assert_eq!(parse_shape("1x3x224x224").unwrap(), vec![1, 3, 224, 224]);
        assert_eq!(parse_shape("").unwrap(), Vec::<usize>::new());
        assert!(parse_shape("1x-3").is_err());
        assert!(parse_shape("axb").is_err());
    }
}
