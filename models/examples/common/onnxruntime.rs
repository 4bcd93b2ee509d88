//! The onnxruntime side of the timing examples: `scripts/ort-bench.py` run by a Python that has
//! onnxruntime (`scripts/bench-peers` makes one), one thread, from the repository root.

use std::path::Path;
use std::process::Command;

/// What `command` printed, or what it said on failing.
pub fn output_of(command: &mut Command) -> Result<String, Box<dyn std::error::Error>> {
    let output = command.output()?;
    if !output.status.success() {
        return Err(String::from_utf8_lossy(&output.stderr).into_owned().into());
    }
    Ok(String::from_utf8(output.stdout)?)
}

/// Seconds onnxruntime took for `runs` runs of `graph` on one input of `shape` (e.g. `1x3x64x64`).
pub fn seconds(
    python: &str,
    graph: &Path,
    shape: &str,
    runs: usize,
) -> Result<f64, Box<dyn std::error::Error>> {
    let printed = output_of(
        Command::new(python)
            .arg("scripts/ort-bench.py")
            .arg(graph)
            .arg(shape)
            .arg("1")
            .arg(runs.to_string()),
    )?;
    let timing: serde_json::Value = serde_json::from_str(&printed)?;
    timing["seconds"]
        .as_f64()
        .ok_or_else(|| "ort-bench.py printed no seconds".into())
}
