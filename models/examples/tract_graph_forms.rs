//! Whether the way our graph is written decides tract's gap to onnxruntime: the context model's
//! architecture written as convolutions (as the shipped graph is), as 2x2 patch merges written
//! as reshapes and matrix products, in MobileNet's separable form (depthwise and pointwise
//! convolutions) and as the patch merges in ONNX's own operators (`SpaceToDepth` and a 1x1
//! convolution) (`scripts/graph-forms.py` writes all four, random weights, widths from
//! `GRAPH_FORMS_CHANNELS`), each timed in tract and in onnxruntime (`scripts/ort-bench.py`),
//! one tile a run, one thread each, in interleaved rounds: this machine's speed drifts within
//! minutes, so each round times every graph in both runtimes back to back, and the medians over
//! rounds are printed last (the ratio column is the median of the rounds' ratios, not the
//! ratio of the medians). Only the convolutions are the shipped model's form: the patch forms see
//! non-overlapping 2x2 blocks where the shipped one sees overlapping 3x3 ones, and the
//! separable form does far less work, so their ratios mix form and work.
//!
//! Usage (from the repository root, PYTHON with onnxruntime and onnx, as `scripts/bench-peers`
//! makes): `cargo run --release -p grassroots-models --example tract_graph_forms -- PYTHON
//! [ROUNDS]`

#[path = "common/onnxruntime.rs"]
mod onnxruntime;

use std::process::Command;

use grassroots_models::timing::time_graph;

/// Runs per graph, runtime and round.
const RUNS: usize = 4000;

/// The middle value of `values` (not empty: there is at least one round).
fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let python = args
        .next()
        .ok_or("usage: tract_graph_forms PYTHON [ROUNDS]")?;
    let rounds: usize = args.next().map_or(Ok(5), |r| r.parse())?.max(1);
    let dir = tempfile::tempdir()?;
    onnxruntime::output_of(
        Command::new(&python)
            .arg("scripts/graph-forms.py")
            .arg(dir.path()),
    )?;
    let graphs = [
        ("convolutions", "conv.onnx", vec![1, 3, 64, 64], "1x3x64x64"),
        ("patch merges", "patch.onnx", vec![3, 4096], "3x4096"),
        (
            "separable",
            "separable.onnx",
            vec![1, 3, 64, 64],
            "1x3x64x64",
        ),
        (
            "space-to-depth",
            "space_to_depth.onnx",
            vec![1, 3, 64, 64],
            "1x3x64x64",
        ),
    ];
    let mut ratios = vec![Vec::new(); graphs.len()];
    let mut speeds = vec![(Vec::new(), Vec::new()); graphs.len()];
    for round in 0..rounds {
        for (index, (name, file, shape, ort_shape)) in graphs.iter().enumerate() {
            let path = dir.path().join(file);
            let tract = RUNS as f64 / time_graph(&path, shape, RUNS)?.iter().sum::<f64>();
            let ort = RUNS as f64 / onnxruntime::seconds(&python, &path, ort_shape, RUNS)?;
            println!(
                "round {round}  {name:<14} tract {tract:>7.0} tiles/s  onnxruntime {ort:>7.0} tiles/s  {:.2}x",
                tract / ort
            );
            ratios[index].push(tract / ort);
            speeds[index].0.push(tract);
            speeds[index].1.push(ort);
        }
    }
    let widths = std::env::var("GRAPH_FORMS_CHANNELS").unwrap_or_else(|_| "8,16,32,64".into());
    println!("medians over {rounds} rounds, widths {widths}:");
    for (index, (name, ..)) in graphs.iter().enumerate() {
        println!(
            "{name:<14} tract {:>7.0} tiles/s  onnxruntime {:>7.0} tiles/s  tract / onnxruntime, median of the rounds' ratios {:.2}x",
            median(speeds[index].0.clone()),
            median(speeds[index].1.clone()),
            median(ratios[index].clone()),
        );
    }
    Ok(())
}
