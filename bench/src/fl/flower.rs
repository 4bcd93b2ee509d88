//! Flower under the benchmark: its deployment engine (`flwr` 1.42 from PyPI, installed by
//! `scripts/bench-peers` into a virtual environment), a SuperLink in the hub's namespace
//! and three SuperNodes in the edge's namespace as separate processes, so its traffic crosses
//! the same emulated link as ours. Run-time dependency installation, telemetry and update checks
//! are off: nothing is fetched during the run. The app (`bench/flower/`) is numpy-only; its
//! client calls `grassroots bench fl-train` (our trainer, one thread) and its server evaluates
//! each round's aggregate with `grassroots bench fl-eval`, on the same tiles as our hub. It logs
//! each round's start, end and the clients' training seconds as JSON lines.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use super::data::{self, Splits};
use super::{RoundFigures, Settings};
use crate::netem::{self, EmulatedLink};

/// Where `scripts/bench-peers flower` puts the virtual environment.
pub const DEFAULT_VENV: &str = "/var/cache/grassroots/flwr-venv";
const SUPERLINK_PORT: u16 = 19100;
const SUPERNODE_PORT: u16 = 19110;

const PYPROJECT: &str = include_str!("../../flower/pyproject.toml");
const SERVER_APP: &str = include_str!("../../flower/server_app.py");
const CLIENT_APP: &str = include_str!("../../flower/client_app.py");

/// Why Flower cannot run here, if it cannot.
pub fn missing(venv: &Path) -> Option<String> {
    let superlink = venv.join("bin/flower-superlink");
    (!superlink.exists()).then(|| {
        format!(
            "{} not found: run scripts/bench-peers (pip install flwr==1.42.0 into {})",
            superlink.display(),
            venv.display()
        )
    })
}

/// The processes of one run; killed (SuperNodes first) when dropped.
struct Processes(Vec<Child>);

impl Drop for Processes {
    fn drop(&mut self) {
        for child in self.0.iter_mut().rev() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn in_namespace(ns: &str, venv: &Path, home: &Path, log: &Path) -> Result<Command> {
    std::fs::create_dir_all(home)?;
    let mut command = Command::new("ip");
    command
        .args(["netns", "exec", ns])
        .env(
            "PATH",
            format!(
                "{}:{}",
                venv.join("bin").display(),
                std::env::var("PATH").unwrap_or_default()
            ),
        )
        .env("FLWR_HOME", home)
        .env("FLWR_TELEMETRY_ENABLED", "0")
        .env("FLWR_DISABLE_UPDATE_CHECK", "1")
        .env("FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION", "1")
        .env("PYTHONUNBUFFERED", "1")
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(log)?)
        .stderr(std::fs::File::create(log.with_extension("err"))?);
    Ok(command)
}

fn read_log(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|line| serde_json::from_str(line).ok())
        .collect()
}

/// Runs Flower for `settings.rounds` rounds over `link`.
pub fn run(
    work: &Path,
    venv: &Path,
    splits: &Splits,
    initial: &[f32],
    settings: &Settings,
    link: &EmulatedLink,
) -> Result<Vec<RoundFigures>> {
    let app = work.join("app");
    std::fs::create_dir_all(&app)?;
    std::fs::write(app.join("pyproject.toml"), PYPROJECT)?;
    std::fs::write(app.join("server_app.py"), SERVER_APP)?;
    std::fs::write(app.join("client_app.py"), CLIENT_APP)?;
    let init = work.join("initial.npy");
    data::write_npy(&init, initial)?;
    let log = work.join("rounds.jsonl");
    let binary = std::env::current_exe()?;
    let train = format!(
        "{} bench fl-train --tiles {}/site-{{partition}}.tiles --in {{in}} --out {{out}} --round {{round}} --epochs {} --batch {} --learning-rate {} --seed {}",
        binary.display(),
        splits.test.parent().map(PathBuf::from).unwrap_or_default().display(),
        settings.local_epochs,
        settings.batch,
        settings.learning_rate,
        settings.seed
    );
    let eval = format!(
        "{} bench fl-eval --tiles {} --in {{in}}",
        binary.display(),
        splits.test.display()
    );
    let superlink = format!("{}:{SUPERLINK_PORT}", netem::HUB_IP);
    let mut processes = Processes(Vec::new());
    let mut link_cmd = in_namespace(
        netem::HUB_NS,
        venv,
        &work.join("home/superlink"),
        &work.join("superlink.log"),
    )?;
    link_cmd
        .args(["flower-superlink", "--insecure", "--host", netem::HUB_IP])
        .args(["--port", &SUPERLINK_PORT.to_string()])
        .args([
            "--isolation",
            "subprocess",
            "--disable-runtime-dependency-installation",
        ])
        .env("FL_LOG", &log)
        .env("FL_EVAL_CMD", &eval);
    processes
        .0
        .push(link_cmd.spawn().context("starting flower-superlink")?);
    std::thread::sleep(Duration::from_secs(3));
    for index in 0..splits.sites.len() {
        let mut node = in_namespace(
            netem::EDGE_NS,
            venv,
            &work.join(format!("home/supernode{index}")),
            &work.join(format!("supernode{index}.log")),
        )?;
        node.args(["flower-supernode", "--insecure", "--superlink", &superlink])
            .args([
                "--node-config",
                &format!("partition-id={index} num-partitions={}", splits.sites.len()),
            ])
            .args([
                "--host",
                "127.0.0.1",
                "--port",
                &(SUPERNODE_PORT + index as u16).to_string(),
            ])
            .args(["--isolation", "subprocess"])
            .env("FL_TRAIN_CMD", &train);
        processes
            .0
            .push(node.spawn().context("starting flower-supernode")?);
    }
    let cli_home = work.join("home/cli");
    std::fs::create_dir_all(&cli_home)?;
    std::fs::write(
        cli_home.join("config.toml"),
        format!(
            "[superlink]\ndefault = \"bench\"\n\n[superlink.bench]\naddress = \"{superlink}\"\ninsecure = true\n"
        ),
    )?;
    let before = link.bytes();
    let mut submit = in_namespace(netem::HUB_NS, venv, &cli_home, &work.join("flwr-run.log"))?;
    submit
        .args(["flwr", "run"])
        .arg(&app)
        .args(["bench", "--format", "json", "--run-config"])
        .arg(format!(
            "num-server-rounds={} min-clients={} init-weights=\"{}\"",
            settings.rounds,
            splits.sites.len(),
            init.display()
        ));
    let status = submit.status()?;
    if !status.success() {
        bail!(
            "flwr run failed: {}",
            std::fs::read_to_string(work.join("flwr-run.err")).unwrap_or_default()
        );
    }
    let deadline = Instant::now() + Duration::from_secs(3600);
    let mut printed = 0;
    loop {
        let lines = read_log(&log);
        for line in lines
            .iter()
            .filter(|l| l["round"].is_number())
            .skip(printed)
        {
            printed += 1;
            println!(
                "  flower round {}: {:.2} s, slowest training {:.2} s",
                line["round"],
                line["wall_s"].as_f64().unwrap_or(f64::NAN),
                line["max_client_train_s"].as_f64().unwrap_or(f64::NAN)
            );
        }
        if lines.iter().any(|l| l["done"] == true) {
            break;
        }
        if Instant::now() > deadline {
            bail!(
                "Flower did not finish its rounds within an hour; see {}",
                work.display()
            );
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    let after = link.bytes();
    let lines = read_log(&log);
    let accuracy = |round: u64| {
        lines
            .iter()
            .find(|l| l["eval_round"] == round)
            .and_then(|l| l["accuracy"].as_f64())
    };
    let eval_seconds = |round: u64| {
        lines
            .iter()
            .find(|l| l["eval_round"] == round)
            .and_then(|l| l["eval_s"].as_f64())
            .unwrap_or(0.0)
    };
    let timed: Vec<&serde_json::Value> = lines.iter().filter(|l| l["round"].is_number()).collect();
    let rounds = timed
        .iter()
        .enumerate()
        .map(|(index, l)| {
            let round = l["round"].as_u64().unwrap_or(0);
            let wall = l["wall_s"].as_f64().unwrap_or(f64::NAN);
            let slowest = l["max_client_train_s"].as_f64().unwrap_or(f64::NAN);
            let start = l["start"].as_f64().unwrap_or(f64::NAN);
            // Until the next round starts (after this round's evaluation); the last round
            // until its evaluation ends.
            let cycle = match timed.get(index + 1) {
                Some(next) => next["start"].as_f64().unwrap_or(f64::NAN) - start,
                None => wall + eval_seconds(round),
            };
            RoundFigures {
                round: round as usize,
                wall_s: wall,
                cycle_s: cycle,
                slowest_training_s: slowest,
                overhead_s: cycle - slowest,
                // Flower's traffic is only counted for the whole run: shared out evenly.
                bytes_up: (after.0 - before.0) / settings.rounds as u64,
                bytes_down: (after.1 - before.1) / settings.rounds as u64,
                accuracy: accuracy(round),
            }
        })
        .collect();
    Ok(rounds)
}
