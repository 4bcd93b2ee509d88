//! `grassroots bench dicom`: C-STORE ingest of the same studies with dcmtk's `storescu` into the
//! edge's DICOM listener and into Orthanc (Debian's `orthanc`, default file storage, its own
//! SQLite index), one run, alternating which goes first: instances per second and MB/s, as a
//! ratio. The studies are copies of the real chest CT (133 slices each, distinct UIDs).
//!
//! Both promise durability before success: the edge syncs each object's file and its index
//! entry; Orthanc's file storage area is synced (`SyncStorageArea`, its default since 1.7.4, set
//! here explicitly) and its SQLite index commits each instance.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Args;
use serde::Serialize;

use crate::tiles::{bench_site, free_port, script, spawn_edge, Server};

#[derive(Args)]
pub struct DicomBenchArgs {
    /// Copies of the chest CT study (133 instances each).
    #[arg(long, default_value_t = 3)]
    pub studies: usize,
    /// Runs per contender (alternating which goes first); the best run counts.
    #[arg(long, default_value_t = 2)]
    pub runs: usize,
    /// Cache of the fixtures.
    #[arg(long, default_value = "/var/cache/grassroots")]
    pub cache: PathBuf,
    /// Where the figures go.
    #[arg(long, default_value = "target/bench/dicom.json")]
    pub out: PathBuf,
}

#[derive(Debug, Clone, Serialize)]
struct Ingested {
    contender: String,
    instances: usize,
    megabytes: f64,
    seconds: f64,
    instances_per_sec: f64,
    mb_per_sec: f64,
}

fn storescu(port: u16, called: &str, dir: &Path) -> Result<Duration> {
    let started = Instant::now();
    let output = Command::new("storescu")
        .args(["-aet", "BENCHCT", "-aec", called, "+sd", "+r"])
        .arg("127.0.0.1")
        .arg(port.to_string())
        .arg(dir)
        .output()
        .context("storescu (Debian: dcmtk)")?;
    let elapsed = started.elapsed();
    if !output.status.success() {
        bail!(
            "storescu into {called} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(elapsed)
}

fn wait_for_echo(port: u16, called: &str) -> Result<()> {
    for _ in 0..100 {
        let echoed = Command::new("echoscu")
            .args(["-aet", "BENCHCT", "-aec", called, "127.0.0.1"])
            .arg(port.to_string())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if echoed {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    bail!("{called} never answered C-ECHO on port {port}")
}

/// A fresh edge listening for DICOM on `port`.
fn start_edge(work: &Path, port: u16) -> Result<Server> {
    let kit = bench_site(work)?;
    let data = work.join("edge");
    std::fs::create_dir_all(&data)?;
    let listen = format!("127.0.0.1:{port}");
    let (server, _) = spawn_edge(
        &kit,
        &data,
        &["--ae-title", "COUNTYCT", "--dicom", listen.as_str()],
    )?;
    wait_for_echo(port, "COUNTYCT")?;
    Ok(server)
}

/// A fresh Orthanc with its default storage in `work`, listening for DICOM on `port`.
fn start_orthanc(work: &Path, port: u16) -> Result<Server> {
    let binary = ["/usr/sbin/Orthanc", "/usr/bin/Orthanc"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .context("Orthanc is not installed (Debian: orthanc)")?;
    let config = work.join("orthanc.json");
    std::fs::write(
        &config,
        serde_json::json!({
            "Name": "bench",
            "StorageDirectory": work.join("storage"),
            "IndexDirectory": work.join("index"),
            "DicomAet": "ORTHANC",
            "DicomPort": port,
            "HttpPort": free_port()?,
            "RemoteAccessAllowed": false,
            "AuthenticationEnabled": false,
            "DicomCheckCalledAet": false,
            "DicomAlwaysAllowStore": true,
            "DicomAlwaysAllowEcho": true,
            "SyncStorageArea": true,
            "Plugins": [],
        })
        .to_string(),
    )?;
    let orthanc = Command::new(binary)
        .arg(&config)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    let server = Server(orthanc);
    wait_for_echo(port, "ORTHANC")?;
    Ok(server)
}

/// Files under `dir`, at any depth.
fn count_files(dir: &Path) -> usize {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(|e| e.ok())
                .map(|e| {
                    let path = e.path();
                    if path.is_dir() {
                        count_files(&path)
                    } else {
                        1
                    }
                })
                .sum()
        })
        .unwrap_or(0)
}

fn figures(contender: &str, instances: usize, bytes: u64, elapsed: Duration) -> Ingested {
    let seconds = elapsed.as_secs_f64();
    let megabytes = bytes as f64 / 1e6;
    let f = Ingested {
        contender: contender.to_string(),
        instances,
        megabytes,
        seconds,
        instances_per_sec: instances as f64 / seconds,
        mb_per_sec: megabytes / seconds,
    };
    println!(
        "  {:<40} {:>4} instances, {:>6.1} MB in {:>6.2} s: {:>7.1} instances/s, {:>6.1} MB/s",
        f.contender, f.instances, f.megabytes, f.seconds, f.instances_per_sec, f.mb_per_sec
    );
    f
}

pub fn run(args: DicomBenchArgs) -> Result<()> {
    let fixtures = args.cache.join("fixtures");
    script("fetch-fixtures", &fixtures)?;
    let work = tempfile::Builder::new()
        .prefix("grassroots-bench-dicom-")
        .tempdir()?;
    let studies = work.path().join("studies");
    let mut files = Vec::new();
    for copy in 0..args.studies {
        let nifti = fixtures.join("ct/cxr.nii.gz");
        files.extend(grassroots_dicom::nifti::write_ct_series(
            &nifti,
            &studies.join(format!("study-{copy}")),
            &grassroots_dicom::nifti::SeriesLabels {
                patient_name: format!("Bench^Chest{copy}"),
                patient_id: format!("BENCH-{copy}"),
                study_description: "Chest CT".into(),
                series_description: "Axial 2.5 mm".into(),
                accession_number: format!("BENCH-{copy}"),
                uid_seed: format!("bench-dicom-{copy}"),
            },
        )?);
    }
    let bytes: u64 = files
        .iter()
        .map(|f| std::fs::metadata(f).map(|m| m.len()).unwrap_or(0))
        .sum();
    println!(
        "{} instances, {:.1} MB, sent by storescu in one association",
        files.len(),
        bytes as f64 / 1e6
    );
    let mut best: std::collections::BTreeMap<&str, Ingested> = Default::default();
    for run in 0..args.runs {
        let order: [&str; 2] = if run % 2 == 0 {
            ["edge", "orthanc"]
        } else {
            ["orthanc", "edge"]
        };
        for contender in order {
            let place = tempfile::Builder::new()
                .prefix(&format!("grassroots-bench-{contender}-"))
                .tempdir()?;
            let port = free_port()?;
            let (_server, called, label) = match contender {
                "edge" => (
                    start_edge(place.path(), port)?,
                    "COUNTYCT",
                    "edge (fsync per instance)",
                ),
                _ => (
                    start_orthanc(place.path(), port)?,
                    "ORTHANC",
                    "Orthanc (file storage, SyncStorageArea)",
                ),
            };
            let elapsed = storescu(port, called, &studies)?;
            // Both must have stored every instance for the figures to mean anything: the
            // edge's archive holds one file per instance; Orthanc's storage area one per
            // instance as well (no compression, no extra attachments by default).
            let stored_in = match contender {
                "edge" => place.path().join("edge/dicom"),
                _ => place.path().join("storage"),
            };
            let stored = count_files(&stored_in);
            if stored != files.len() {
                bail!(
                    "{label} holds {stored} files after storescu sent {}",
                    files.len()
                );
            }
            let f = figures(label, files.len(), bytes, elapsed);
            if best
                .get(contender)
                .is_none_or(|b| f.instances_per_sec > b.instances_per_sec)
            {
                best.insert(contender, f);
            }
        }
    }
    let ratio = match (best.get("edge"), best.get("orthanc")) {
        (Some(edge), Some(orthanc)) => {
            let r = edge.instances_per_sec / orthanc.instances_per_sec;
            println!(
                "  the edge ingests at {r:.2}x Orthanc's rate (best of {} runs each)",
                args.runs
            );
            Some(r)
        }
        _ => None,
    };
    let report = serde_json::json!({ "best": best, "ratio": ratio });
    if let Some(parent) = args.out.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::write(&args.out, serde_json::to_string_pretty(&report)?)?;
    println!("figures written to {}", args.out.display());
    Ok(())
}
