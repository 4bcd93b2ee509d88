//! Timing an ONNX graph in tract, for `grassroots bench screen`: loaded and optimised once for a
//! fixed input shape, warmed up, then run on standard-normal input from a fixed seed — the same
//! kind of input the onnxruntime side of the bench uses. Here so that tract stays behind this
//! crate.

use std::path::Path;
use std::time::Instant;

use rand::{Rng, SeedableRng};
use tract_onnx::prelude::*;

use crate::ModelError;

/// Seconds taken by each of `iterations` runs of the graph at `path` on one input of `shape`.
pub fn time_graph(path: &Path, shape: &[usize], iterations: usize) -> Result<Vec<f64>, ModelError> {
    let fail = |e: TractError| ModelError::BadGraph(format!("{}: {e:#}", path.display()));
    let load = |fixed: bool| {
        tract_onnx::onnx()
            .model_for_path(path)
            .and_then(|model| match fixed {
                true => model
                    .with_input_fact(0, f32::fact(shape).into())
                    .and_then(|model| model.into_optimized()),
                // Its batch symbol set to the batch size once typed, then optimised.
                false => model.into_typed().and_then(|typed| {
                    let batch = typed
                        .input_fact(0)?
                        .shape
                        .iter()
                        .next()
                        .and_then(|d| d.symbols().into_iter().next());
                    let typed = match batch {
                        Some(symbol) => typed.set_symbols(&std::collections::HashMap::from([(
                            symbol,
                            TDim::from(shape[0] as i64),
                        )]))?,
                        None => typed,
                    };
                    typed.into_optimized()
                }),
            })
            .and_then(|model| model.into_runnable())
    };
    // A graph whose inner shapes name its batch dimension cannot take a fixed input fact
    // before typing: its batch symbol is set after.
    let plan = load(true).or_else(|_| load(false)).map_err(fail)?;
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let data: Vec<f32> = (0..shape.iter().product::<usize>())
        .map(|_| {
            // Box-Muller: a standard normal value from two uniform ones.
            let (u, v): (f32, f32) = (rng.gen_range(1e-6..1.0), rng.gen_range(0.0..1.0));
            (-2.0 * u.ln()).sqrt() * (std::f32::consts::TAU * v).cos()
        })
        .collect();
    let input: TValue = Tensor::from_shape(shape, &data)
        .map_err(|e| ModelError::Inference(e.to_string()))?
        .into();
    for _ in 0..3 {
        plan.run(tvec!(input.clone())).map_err(fail)?;
    }
    let mut times = Vec::with_capacity(iterations);
    for _ in 0..iterations {
        let started = Instant::now();
        plan.run(tvec!(input.clone())).map_err(fail)?;
        times.push(started.elapsed().as_secs_f64());
    }
    Ok(times)
}
