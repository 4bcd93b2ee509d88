//! Chaos: a hub and three edges under a mixed workload (slides imported, screened and viewed,
//! cases referred, answered and delivered), with a random node SIGKILLed at a random moment
//! again and again, and restarted. Afterwards:
//! - every node is back and serving;
//! - every slide an edge acknowledged is there exactly once, opens, and is screened once;
//! - every referral an edge acknowledged is at the edge once and reaches the hub once;
//! - every answer the hub acknowledged reaches its edge once;
//! - no slide or transfer is visible half-written, and nothing is listed twice.
//!
//! CI runs 5 kills; `cargo test --test chaos -- --ignored` runs 50 in a row. The seed is
//! printed; `GRASSROOTS_CHAOS_SEED=N` repeats a run's choices.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;

const SITES: [&str; 3] = ["county-a", "county-b", "county-c"];

/// A small deterministic generator (xorshift64*), so a failing run can be repeated.
struct Dice(u64);

impl Dice {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

/// What some node acknowledged to the workload; only these must survive.
#[derive(Default)]
struct Ledger {
    /// Slide ids per edge (index into SITES).
    slides: BTreeMap<usize, BTreeSet<String>>,
    /// Referral id -> edge.
    referrals: BTreeMap<String, usize>,
    /// Referrals the hub took an answer for (201, or 409 for one answered by an earlier
    /// attempt whose response a kill cut off).
    answered: BTreeSet<String>,
    uploads: u64,
    views: u64,
}

/// The running nodes, index 0 the hub and 1..=3 the edges, with a signed-in client each.
struct Cluster {
    net: Network,
    nodes: Vec<Node>,
    clients: Vec<reqwest::Client>,
    /// What every edge starts with: the screening model (untrained: the test is about
    /// durability, not accuracy).
    edge_args: Vec<String>,
}

impl Cluster {
    async fn start() -> Self {
        let net = Network::new(&SITES);
        net.add_user("hub", "expert", "prof-zhang");
        net.add_user("hub", "admin", "admin");
        for site in SITES {
            net.add_user(site, "clinician", "dr-li");
        }
        let model = net.dir.path().join("screening.grmodel");
        std::fs::write(&model, untrained_package(&net, 7, "1.0.0", 6)).unwrap();
        let edge_args = vec![
            "--screening-model".to_string(),
            path(&model),
            "--rescreen-on-new-model".to_string(),
            "false".to_string(),
        ];
        let mut nodes = vec![net.start_hub(&[])];
        for site in SITES {
            nodes.push(net.start_edge(site, &as_strs(&edge_args)));
        }
        let mut cluster = Self {
            net,
            nodes,
            clients: Vec::new(),
            edge_args,
        };
        for index in 0..cluster.nodes.len() {
            let client = cluster.sign_in(index).await;
            cluster.clients.push(client);
        }
        cluster
    }

    async fn sign_in(&self, index: usize) -> reqwest::Client {
        let user = if index == 0 { "prof-zhang" } else { "dr-li" };
        signed_in(&self.nodes[index], user).await
    }

    fn restart(&mut self, index: usize) {
        self.nodes[index].kill9();
        self.nodes[index] = if index == 0 {
            self.net.start_hub(&[])
        } else {
            self.net
                .start_edge(SITES[index - 1], &as_strs(&self.edge_args))
        };
    }

    fn url(&self, index: usize) -> &str {
        &self.nodes[index].http
    }
}

fn as_strs(args: &[String]) -> Vec<&str> {
    args.iter().map(String::as_str).collect()
}

/// The fixture slide made unique: TIFF readers ignore bytes after the last directory, and a
/// different file is a different slide (slides are addressed by content).
fn unique_slide(serial: u64) -> Vec<u8> {
    let mut bytes = std::fs::read(fixture_svs()).unwrap();
    bytes.extend_from_slice(format!("chaos-{serial:016}").as_bytes());
    bytes
}

/// One random operation against the cluster; what was acknowledged goes in the ledger.
async fn operate(
    urls: &[String],
    clients: &[reqwest::Client],
    ledger: &Mutex<Ledger>,
    roll: u64,
    pick: u64,
) {
    let edge = 1 + (pick % 3) as usize;
    let (edge_url, doctor) = (&urls[edge], &clients[edge]);
    let timeout = Duration::from_secs(20);
    match roll % 10 {
        // Import a new slide.
        0..=1 => {
            let serial = {
                let mut ledger = ledger.lock().unwrap();
                ledger.uploads += 1;
                ledger.uploads * 10 + edge as u64
            };
            let Ok(response) = doctor
                .post(format!("{edge_url}/api/v1/slides?name=chaos-{serial}.svs"))
                .body(unique_slide(serial))
                .timeout(timeout)
                .send()
                .await
            else {
                return;
            };
            if !response.status().is_success() {
                return;
            }
            let Ok(body) = response.json::<serde_json::Value>().await else {
                return;
            };
            if let Some(id) = body["slide"]["id"].as_str() {
                let mut ledger = ledger.lock().unwrap();
                ledger
                    .slides
                    .entry(edge)
                    .or_default()
                    .insert(id.to_string());
            }
        }
        // Refer one of this edge's slides.
        2..=4 => {
            let slide = {
                let ledger = ledger.lock().unwrap();
                let slides = ledger.slides.get(&edge).cloned().unwrap_or_default();
                slides
                    .iter()
                    .nth((pick / 3) as usize % slides.len().max(1))
                    .cloned()
            };
            let Some(slide) = slide else { return };
            let Ok(response) = doctor
                .post(format!("{edge_url}/api/v1/referrals"))
                .json(&serde_json::json!({
                    "case_number": format!("S26-{:05}", pick % 100_000),
                    "patient_name": "Li Hua", "patient_id": "ID-9", "age_years": 52,
                    "sex": "female", "specimen": "cervical biopsy", "question": "CIN grade?",
                    "urgency": "routine", "slide_ids": [slide], "regions": [],
                }))
                .timeout(timeout)
                .send()
                .await
            else {
                return;
            };
            if response.status() != 201 {
                return;
            }
            let Ok(body) = response.json::<serde_json::Value>().await else {
                return;
            };
            if let Some(id) = body["referral"]["referral_id"].as_str() {
                ledger
                    .lock()
                    .unwrap()
                    .referrals
                    .insert(id.to_string(), edge);
            }
        }
        // The expert claims and answers a referral that has not been answered.
        5..=6 => {
            let referral = {
                let ledger = ledger.lock().unwrap();
                let open: Vec<&String> = ledger
                    .referrals
                    .keys()
                    .filter(|id| !ledger.answered.contains(*id))
                    .collect();
                open.get(pick as usize % open.len().max(1))
                    .map(|id| id.to_string())
            };
            let Some(referral) = referral else { return };
            let (hub, expert) = (&urls[0], &clients[0]);
            let claim = expert
                .post(format!("{hub}/api/v1/referrals/{referral}/claim"))
                .timeout(timeout)
                .send()
                .await;
            if !claim.is_ok_and(|r| r.status().is_success()) {
                return;
            }
            let answer = expert
                .post(format!("{hub}/api/v1/referrals/{referral}/report"))
                .json(&serde_json::json!({
                    "category": "benign",
                    "diagnosis": format!("Chronic cervicitis ({referral})."),
                    "recommendations": "Routine follow-up.",
                }))
                .timeout(timeout)
                .send()
                .await;
            if let Ok(answer) = answer {
                if answer.status() == 201 || answer.status() == 409 {
                    ledger.lock().unwrap().answered.insert(referral);
                }
            }
        }
        // View: the descriptor and a few tiles of a slide, as a browser does.
        _ => {
            let slide = {
                let ledger = ledger.lock().unwrap();
                ledger
                    .slides
                    .get(&edge)
                    .and_then(|s| s.iter().nth((pick / 3) as usize % s.len().max(1)).cloned())
            };
            let Some(slide) = slide else { return };
            for url in [
                format!("{edge_url}/slides/{slide}.dzi"),
                format!("{edge_url}/slides/{slide}_files/8/0_0.jpeg"),
                format!("{edge_url}/slides/{slide}_files/11/1_1.jpeg"),
            ] {
                let _ = doctor.get(url).timeout(timeout).send().await;
            }
            ledger.lock().unwrap().views += 1;
        }
    }
}

async fn run_chaos(kills: usize) {
    let seed: u64 = std::env::var("GRASSROOTS_CHAOS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
                | 1
        });
    println!("chaos seed {seed} (GRASSROOTS_CHAOS_SEED={seed} repeats it)");
    let mut dice = Dice(seed);
    let mut cluster = Cluster::start().await;
    let ledger = Arc::new(Mutex::new(Ledger::default()));
    let started = Instant::now();

    for kill in 0..kills {
        let victim = dice.below(4) as usize;
        let delay = Duration::from_millis(300 + dice.below(2500));
        let urls: Vec<String> = (0..4).map(|i| cluster.url(i).to_string()).collect();
        // Two workers keep operating across the kill, until the victim is back, so the kill lands
        // on work in flight; the victim's requests fail once it is gone.
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let workers: Vec<_> = (0..2)
            .map(|_| {
                let (urls, clients, ledger, stop) = (
                    urls.clone(),
                    cluster.clients.clone(),
                    ledger.clone(),
                    stop.clone(),
                );
                let mut dice = Dice(dice.next() | 1);
                tokio::spawn(async move {
                    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                        let (roll, pick) = (dice.next() >> 7, dice.next() >> 7);
                        operate(&urls, &clients, &ledger, roll, pick).await;
                    }
                })
            })
            .collect();
        tokio::time::sleep(delay).await;
        println!(
            "kill {} of {kills}: node {victim} after {delay:?}",
            kill + 1
        );
        tokio::task::block_in_place(|| cluster.restart(victim));
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        for worker in workers {
            worker.await.unwrap();
        }
        cluster.clients[victim] = cluster.sign_in(victim).await;
    }

    // With every node up, go on until at least one referral and one answer were acknowledged,
    // so that their checks below check something.
    let urls: Vec<String> = (0..4).map(|i| cluster.url(i).to_string()).collect();
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let (referred, answered) = {
            let ledger = ledger.lock().unwrap();
            (ledger.referrals.len(), ledger.answered.len())
        };
        if referred > 0 && answered > 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no referral or no answer acknowledged in two minutes of calm"
        );
        let roll = match (referred, dice.below(2)) {
            (0, 0) => 0, // a slide, so that there is something to refer
            (0, _) => 2,
            _ => 5,
        };
        operate(&urls, &cluster.clients, &ledger, roll, dice.next() >> 7).await;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // Let everything settle: edges back online, queues drained, answers delivered.
    let (slides, referrals, answered, uploads, views) = {
        let ledger = ledger.lock().unwrap();
        (
            ledger.slides.clone(),
            ledger.referrals.clone(),
            ledger.answered.clone(),
            ledger.uploads,
            ledger.views,
        )
    };
    println!(
        "{kills} kills in {:?}: {uploads} uploads tried, {} slides, {} referrals, {} answers, {views} views acknowledged",
        started.elapsed(),
        slides.values().map(BTreeSet::len).sum::<usize>(),
        referrals.len(),
        answered.len()
    );
    assert!(
        slides.values().map(BTreeSet::len).sum::<usize>() > 0,
        "the workload acknowledged no slide: the test tested nothing"
    );

    let hub = cluster.url(0).to_string();
    let expert = cluster.clients[0].clone();
    for index in 0..4 {
        let url = format!("{}/healthz", cluster.url(index));
        let client = cluster.clients[index].clone();
        eventually(
            &format!("node {index} serving"),
            Duration::from_secs(30),
            || async {
                client
                    .get(url.clone())
                    .send()
                    .await
                    .is_ok_and(|r| r.status() == 200)
            },
        )
        .await;
    }

    for (position, site) in SITES.iter().enumerate() {
        let edge_index = position + 1;
        let edge = cluster.url(edge_index).to_string();
        let doctor = cluster.clients[edge_index].clone();
        // Slides: unique, every acknowledged one present, each opens and is screened once.
        let rows = get_json(&doctor, format!("{edge}/api/v1/slides")).await;
        let listed: Vec<String> = rows
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["id"].as_str().unwrap().to_string())
            .collect();
        let unique: BTreeSet<&String> = listed.iter().collect();
        assert_eq!(
            unique.len(),
            listed.len(),
            "{site}: a slide listed twice: {listed:?}"
        );
        for slide in slides.get(&edge_index).into_iter().flatten() {
            assert!(
                listed.contains(slide),
                "{site}: acknowledged slide {slide} lost"
            );
        }
        for row in rows.as_array().unwrap() {
            let id = row["id"].as_str().unwrap();
            assert_eq!(
                row["state"], "ready",
                "{site}: slide {id} half imported: {row}"
            );
            let dzi = doctor
                .get(format!("{edge}/slides/{id}.dzi"))
                .send()
                .await
                .unwrap();
            assert_eq!(dzi.status(), 200, "{site}: slide {id} does not open");
        }
        let listed_count = listed.len();
        let jobs_url = format!("{edge}/api/v1/screening");
        eventually(
            &format!("{site}: every slide screened"),
            Duration::from_secs(240),
            || async {
                let jobs = get_json(&doctor, jobs_url.clone()).await;
                let jobs = jobs.as_array().unwrap();
                jobs.len() == listed_count && jobs.iter().all(|j| j["state"] == "done")
            },
        )
        .await;
        // No half-written import or upload is left behind (a restart sweeps what a kill left).
        for folder in ["slides", "incoming"] {
            let dir = cluster.net.data(site).join(folder);
            for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                assert!(
                    !name.starts_with(".import-") && !name.starts_with(".upload-"),
                    "{site}: a partial file is left in {}: {name}",
                    dir.display()
                );
            }
        }
        let jobs = get_json(&doctor, format!("{edge}/api/v1/screening")).await;
        let job_ids: Vec<String> = jobs
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|j| j["slide_id"].as_str().map(String::from))
            .collect();
        let unique_jobs: BTreeSet<&String> = job_ids.iter().collect();
        assert_eq!(
            unique_jobs.len(),
            job_ids.len(),
            "{site}: a slide screened twice"
        );

        // Referrals: each acknowledged one at the edge once.
        let local = get_json(&doctor, format!("{edge}/api/v1/referrals")).await;
        let local_ids: Vec<String> = local
            .as_array()
            .unwrap()
            .iter()
            .map(|r| {
                r["local"]["referral"]["referral_id"]
                    .as_str()
                    .unwrap()
                    .to_string()
            })
            .collect();
        let unique: BTreeSet<&String> = local_ids.iter().collect();
        assert_eq!(
            unique.len(),
            local_ids.len(),
            "{site}: a referral listed twice"
        );
        for (referral, _) in referrals.iter().filter(|(_, e)| **e == edge_index) {
            assert!(
                local_ids.contains(referral),
                "{site}: acknowledged referral {referral} lost"
            );
        }
    }

    // Every referral recorded at an edge reaches the hub exactly once.
    let expected_at_hub: usize = {
        let mut total = 0;
        for edge_index in 1..4 {
            let rows = get_json(
                &cluster.clients[edge_index],
                format!("{}/api/v1/referrals", cluster.url(edge_index)),
            )
            .await;
            total += rows.as_array().unwrap().len();
        }
        total
    };
    let hub_url = format!("{hub}/api/v1/referrals");
    eventually(
        "every referral at the hub",
        Duration::from_secs(90),
        || async {
            get_json(&expert, hub_url.clone())
                .await
                .as_array()
                .is_some_and(|rows| rows.len() == expected_at_hub)
        },
    )
    .await;
    let at_hub = get_json(&expert, hub_url.clone()).await;
    let hub_ids: Vec<String> = at_hub
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["referral"]["referral_id"].as_str().unwrap().to_string())
        .collect();
    let unique: BTreeSet<&String> = hub_ids.iter().collect();
    assert_eq!(unique.len(), hub_ids.len(), "a referral twice at the hub");
    for referral in referrals.keys() {
        assert!(
            hub_ids.contains(referral),
            "referral {referral} never reached the hub"
        );
    }

    // Every acknowledged answer reaches its edge, once.
    for referral in &answered {
        let edge_index = referrals[referral];
        let (edge, doctor) = (
            cluster.url(edge_index).to_string(),
            cluster.clients[edge_index].clone(),
        );
        let url = format!("{edge}/api/v1/referrals");
        eventually(
            &format!("the answer to {referral} at its edge"),
            Duration::from_secs(90),
            || async {
                get_json(&doctor, url.clone())
                    .await
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|r| {
                        r["local"]["referral"]["referral_id"] == referral.as_str()
                            && r["local"]["report"]["category"] == "benign"
                    })
            },
        )
        .await;
    }
    // The hub's record of received transfers lists each blob once.
    let admin = signed_in(&cluster.nodes[0], "admin").await;
    let transfers = get_json(&admin, format!("{hub}/api/v1/transfers")).await;
    let received = transfers["received"]
        .as_array()
        .expect("received transfers");
    let ids: Vec<&str> = received.iter().filter_map(|r| r["id"].as_str()).collect();
    let unique: BTreeSet<&&str> = ids.iter().collect();
    assert_eq!(
        unique.len(),
        ids.len(),
        "a transfer received twice: {ids:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_random_kills_under_a_mixed_workload_lose_and_duplicate_nothing() {
    run_chaos(5).await;
}

/// The long run: `cargo test --release --test chaos -- --ignored` (about 15 minutes).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore]
async fn fifty_random_kills_in_a_row() {
    run_chaos(50).await;
}
