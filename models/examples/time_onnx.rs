//! Scratch: write the context graph, or time any graph in tract.
use burn::backend::NdArray;
use grassroots_models::onnx_graph::cnn_to_onnx;
use grassroots_models::timing::time_graph;
use grassroots_models::training::cnn::{ScreeningCnn, CONTEXT_CHANNELS};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    match args[1].as_str() {
        "write" => {
            let weights = ScreeningCnn::<NdArray>::new(6, &CONTEXT_CHANNELS, &Default::default())
                .weights()?;
            std::fs::write(&args[2], cnn_to_onnx(&weights, 64, 64, &[]))?;
        }
        _ => {
            let runs: usize = args[3].parse()?;
            let batch: usize = args.get(4).map_or(Ok(1), |b| b.parse())?;
            let times = time_graph(std::path::Path::new(&args[2]), &[batch, 3, 64, 64], runs)?;
            let total: f64 = times.iter().sum();
            println!("tract {} tiles/s", (runs * batch) as f64 / total);
        }
    }
    Ok(())
}
