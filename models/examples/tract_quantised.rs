//! Whether quantisation closes tract's gap to onnxruntime on the screening CNN: the context
//! model's architecture (initial weights: the timing does not depend on the values) as the f32
//! graph the edge runs, and quantised by onnxruntime's own tool (`scripts/ort-quantise.py`:
//! QOperator and QDQ, uint8 and int8 activations, int8 weights), each timed in tract and in
//! onnxruntime (`scripts/ort-bench.py`) on one 64 x 64 tile a run, one thread each, in one run:
//! a quantised graph is compared with onnxruntime running the same quantised graph. Rounds
//! alternate the runtimes, because this machine's speed drifts within minutes.
//!
//! Usage (from the repository root): `cargo run --release -p grassroots-models --example
//! tract_quantised PYTHON [ROUNDS]`, PYTHON with onnxruntime and onnx (`scripts/bench-peers`).

use std::process::Command;

#[path = "common/onnxruntime.rs"]
mod onnxruntime;

use burn::backend::NdArray;
use grassroots_models::onnx_graph::cnn_to_onnx;
use grassroots_models::timing::time_graph;
use grassroots_models::training::cnn::{ScreeningCnn, CONTEXT_CHANNELS};

/// Runs a graph is timed for, in each runtime and round.
const RUNS: usize = 4000;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let python = args
        .next()
        .ok_or("usage: tract_quantised PYTHON [ROUNDS]")?;
    let rounds: usize = args.next().map_or(Ok(2), |r| r.parse())?;
    let weights =
        ScreeningCnn::<NdArray>::new(6, &CONTEXT_CHANNELS, &Default::default()).weights()?;
    let dir = tempfile::tempdir()?;
    let f32_graph = dir.path().join("f32.onnx");
    std::fs::write(&f32_graph, cnn_to_onnx(&weights, 64, 64, &[]))?;
    let quantised = onnxruntime::output_of(
        Command::new(&python)
            .arg("scripts/ort-quantise.py")
            .arg(&f32_graph)
            .arg("1x3x64x64")
            .arg(dir.path()),
    )?;
    let mut graphs = vec![f32_graph];
    graphs.extend(
        quantised
            .lines()
            .map(|line| std::path::PathBuf::from(line.trim())),
    );
    println!("graph             round   tract tiles/s   onnxruntime tiles/s   tract / onnxruntime");
    for round in 1..=rounds {
        for graph in &graphs {
            let tract = RUNS as f64
                / time_graph(graph, &[1, 3, 64, 64], RUNS)?
                    .iter()
                    .sum::<f64>();
            let onnxruntime =
                RUNS as f64 / onnxruntime::seconds(&python, graph, "1x3x64x64", RUNS)?;
            let name = graph
                .file_stem()
                .map_or("?".into(), |s| s.to_string_lossy());
            println!(
                "{name:<17} {round:>5}   {tract:>13.0}   {onnxruntime:>19.0}   {:>18.2}x",
                tract / onnxruntime
            );
        }
    }
    Ok(())
}
