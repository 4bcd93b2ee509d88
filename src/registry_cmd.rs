//! `grassroots model list|show|add|promote|canary|rollback|pin`: the hub's model registry from a
//! terminal, through the hub's own API as an admin (the password from `GRASSROOTS_PASSWORD` or
//! standard input), so that the running hub stays the one writer of its store.

use std::io::BufRead;
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};

#[derive(Args)]
pub struct RegistryArgs {
    /// The hub's web address.
    #[arg(long, default_value = "http://127.0.0.1:8440")]
    pub hub: String,
    /// An admin account of the hub (read-only commands accept a health authority's).
    #[arg(long, default_value = "admin")]
    pub user: String,
    #[command(subcommand)]
    pub command: RegistryCommand,
}

#[derive(Subcommand)]
pub enum RegistryCommand {
    /// Versions, newest first: digest, version, parent, round, state, sites running it.
    List,
    /// One version in full (a digest or its first characters).
    Show { digest: String },
    /// Add a signed package (refused with the reason if it does not verify).
    Add { package: PathBuf },
    /// Release a version to every site that is not pinned.
    Promote { digest: String },
    /// Send a version to these sites first; their evaluations release it or roll it back.
    Canary {
        digest: String,
        #[arg(long, value_delimiter = ',', required = true)]
        sites: Vec<String>,
    },
    /// Withdraw the released version and release the one before it.
    Rollback {
        #[arg(long)]
        reason: String,
    },
    /// Pin a site to a version, or `--unpin` it to follow the release again.
    Pin {
        site: String,
        digest: Option<String>,
        #[arg(long)]
        unpin: bool,
    },
}

async fn sign_in(hub: &str, user: &str) -> Result<reqwest::Client> {
    let password = match std::env::var("GRASSROOTS_PASSWORD") {
        Ok(password) => password,
        Err(_) => {
            eprint!("password for {user}: ");
            let mut line = String::new();
            std::io::stdin().lock().read_line(&mut line)?;
            line.trim_end_matches(['\r', '\n']).to_string()
        }
    };
    let jar = std::sync::Arc::new(reqwest::cookie::Jar::default());
    let client = reqwest::Client::builder()
        .cookie_provider(jar.clone())
        .redirect(reqwest::redirect::Policy::none())
        .build()?;
    let login = client
        .post(format!("{hub}/login"))
        .form(&[("username", user), ("password", password.as_str())])
        .send()
        .await
        .with_context(|| format!("cannot reach the hub at {hub}"))?;
    if login.status() != 303 {
        bail!("the hub at {hub} refused {user}'s sign-in");
    }
    // Changes go with the session's CSRF token, as the hub's own pages send it.
    let csrf = grassroots_web::csrf::token_in_set_cookies(
        login
            .headers()
            .get_all(reqwest::header::SET_COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok()),
    )
    .context("the hub set no CSRF cookie")?;
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert(grassroots_web::csrf::CSRF_HEADER, csrf.parse()?);
    Ok(reqwest::Client::builder()
        .cookie_provider(jar)
        .default_headers(headers)
        .redirect(reqwest::redirect::Policy::none())
        .build()?)
}

async fn answer(response: reqwest::Response) -> Result<serde_json::Value> {
    let status = response.status();
    let body: serde_json::Value = response.json().await.unwrap_or_default();
    if !status.is_success() {
        bail!(
            "the hub said {status}: {}",
            body["error"].as_str().unwrap_or("(no reason given)")
        );
    }
    Ok(body)
}

/// The one digest `prefix` names among the registry's versions.
fn resolve(versions: &serde_json::Value, prefix: &str) -> Result<String> {
    let matches: Vec<&str> = versions["versions"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|v| v["digest"].as_str())
        .filter(|d| d.starts_with(prefix))
        .collect();
    match matches.as_slice() {
        [one] => Ok((*one).to_string()),
        [] => bail!("no version's digest starts with {prefix:?}"),
        _ => bail!(
            "{prefix:?} names {} versions: give more of the digest",
            matches.len()
        ),
    }
}

pub async fn run(args: RegistryArgs) -> Result<()> {
    let hub = args.hub.trim_end_matches('/').to_string();
    let client = sign_in(&hub, &args.user).await?;
    let api = format!("{hub}/api/v1/model-versions");
    let versions = answer(client.get(&api).send().await?).await?;
    match args.command {
        RegistryCommand::List => {
            println!(
                "{:<14} {:<16} {:<14} {:<8} {:<22} sites",
                "digest", "version", "parent", "round", "state"
            );
            for v in versions["versions"].as_array().into_iter().flatten() {
                let short = |d: &serde_json::Value| {
                    d.as_str()
                        .map(|d| d.chars().take(12).collect::<String>())
                        .unwrap_or_else(|| "-".into())
                };
                let state = if v["withdrawn"].is_string() {
                    "withdrawn"
                } else if v["released"] == true {
                    "released"
                } else {
                    "candidate"
                };
                let sites: Vec<&str> = v["sites"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|s| s.as_str())
                    .collect();
                println!(
                    "{:<14} {:<16} {:<14} {:<8} {:<22} {}",
                    short(&v["digest"]),
                    v["version"].as_str().unwrap_or("-"),
                    short(&v["parent"]),
                    v["lineage"]["round"]
                        .as_u64()
                        .map(|r| r.to_string())
                        .unwrap_or_else(|| "-".into()),
                    state,
                    sites.join(", ")
                );
            }
        }
        RegistryCommand::Show { digest } => {
            let digest = resolve(&versions, &digest)?;
            let version = versions["versions"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|v| v["digest"] == digest.as_str())
                .cloned()
                .unwrap_or_default();
            println!("{}", serde_json::to_string_pretty(&version)?);
        }
        RegistryCommand::Add { package } => {
            let bytes = std::fs::read(&package)
                .with_context(|| format!("reading {}", package.display()))?;
            let added = answer(client.post(&api).body(bytes).send().await?).await?;
            println!(
                "added {} ({} {})",
                added["digest"].as_str().unwrap_or("?"),
                added["name"].as_str().unwrap_or("?"),
                added["version"].as_str().unwrap_or("?")
            );
        }
        RegistryCommand::Promote { digest } => {
            let digest = resolve(&versions, &digest)?;
            answer(
                client
                    .post(format!("{api}/{digest}/release"))
                    .send()
                    .await?,
            )
            .await?;
            println!("released {digest} to every site that is not pinned");
        }
        RegistryCommand::Canary { digest, sites } => {
            let digest = resolve(&versions, &digest)?;
            answer(
                client
                    .post(format!("{api}/{digest}/canary"))
                    .json(&serde_json::json!({ "sites": sites }))
                    .send()
                    .await?,
            )
            .await?;
            println!("{digest} goes to {} first", sites.join(", "));
        }
        RegistryCommand::Rollback { reason } => {
            let rolled = answer(
                client
                    .post(format!("{api}/rollback"))
                    .json(&serde_json::json!({ "reason": reason }))
                    .send()
                    .await?,
            )
            .await?;
            println!(
                "rolled back; released now: {}",
                rolled["released"].as_str().unwrap_or("?")
            );
        }
        RegistryCommand::Pin {
            site,
            digest,
            unpin,
        } => {
            let pin = match (digest, unpin) {
                (Some(digest), false) => Some(resolve(&versions, &digest)?),
                (None, true) => None,
                _ => bail!("give a digest to pin to, or --unpin"),
            };
            answer(
                client
                    .post(format!("{hub}/api/v1/sites/{site}/model"))
                    .json(&serde_json::json!({ "pin": pin }))
                    .send()
                    .await?,
            )
            .await?;
            match pin {
                Some(digest) => println!("{site} pinned to {digest}"),
                None => println!("{site} follows the release again"),
            }
        }
    }
    Ok(())
}
