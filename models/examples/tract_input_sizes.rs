//! Whether tract's gap to onnxruntime on the screening CNN is a cost per run or the kernels: the
//! context model's architecture (initial weights: the timing does not depend on the values) as
//! ONNX graphs over ever larger pictures, one tile of 64 x 64 px up to 512 x 512 px (the graph
//! pools globally, so any size runs), each timed in tract and, given a Python with
//! onnxruntime (`scripts/bench-peers` makes one), in onnxruntime through
//! `scripts/ort-bench.py`: one thread each, the same graph and input shape, in one run. Were
//! the gap a cost per run, it would close on the larger pictures. `grassroots bench screen` is
//! the benchmark of record for the shipped model.
//!
//! Usage (from the repository root): `cargo run --release -p grassroots-models --example
//! tract_input_sizes [PYTHON]`

#[path = "common/onnxruntime.rs"]
mod onnxruntime;

use burn::backend::NdArray;
use grassroots_models::onnx_graph::cnn_to_onnx;
use grassroots_models::timing::time_graph;
use grassroots_models::training::cnn::{ScreeningCnn, CONTEXT_CHANNELS};

/// Pixels timed per picture size: about as many whatever the size.
const PIXELS_PER_SIZE: usize = 2_000_000;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let python = std::env::args().nth(1);
    let weights =
        ScreeningCnn::<NdArray>::new(6, &CONTEXT_CHANNELS, &Default::default()).weights()?;
    let dir = tempfile::tempdir()?;
    println!("picture          tract tiles/s   onnxruntime tiles/s   tract / onnxruntime");
    for (h, w) in [(64, 64), (64, 1024), (256, 256), (512, 512)] {
        let graph = dir.path().join(format!("context-{h}x{w}.onnx"));
        std::fs::write(&graph, cnn_to_onnx(&weights, h, w, &[]))?;
        let runs = (PIXELS_PER_SIZE / (h * w)).max(10);
        let tiles = (runs * h * w) as f64 / (64.0 * 64.0);
        let tract = tiles / time_graph(&graph, &[1, 3, h, w], runs)?.iter().sum::<f64>();
        let onnxruntime = match &python {
            Some(python) => {
                Some(tiles / onnxruntime::seconds(python, &graph, &format!("1x3x{h}x{w}"), runs)?)
            }
            None => None,
        };
        println!(
            "{:<16} {tract:>13.0}   {:>19}   {:>19}",
            format!("{h} x {w} px"),
            onnxruntime.map_or("-".into(), |o| format!("{o:.0}")),
            onnxruntime.map_or("-".into(), |o| format!("{:.2}x", tract / o)),
        );
    }
    Ok(())
}
