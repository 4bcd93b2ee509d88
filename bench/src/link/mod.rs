//! `grassroots bench link`: bulk-transfer goodput of the real hub receiving over QUIC from an
//! edge-side sender, against a TCP+TLS (rustls) baseline moving the same bytes, in the same run:
//! first over loopback, then over an emulated county uplink (20 Mbit/s, 50 ms RTT, 1% loss each
//! way, see [`crate::netem`]) including a cut mid-transfer and the resume. Prints the ratios and
//! writes the figures as JSON.

mod baseline;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Args;
use grassroots_provisioning::{Kit, NetworkAuthority};
use grassroots_transport::{BlobStore, Congestion, EdgeEndpoint, SendOptions, TransportError};
use grassroots_wire::TransferOffer;
use serde::Serialize;
use time::OffsetDateTime;

use crate::netem as emulator;

#[derive(Args)]
pub struct LinkBenchArgs {
    /// Payload for the loopback runs, MiB.
    #[arg(long, default_value_t = 256)]
    pub size_mib: u64,
    /// Payload for the emulated-link runs, MiB.
    #[arg(long, default_value_t = 8)]
    pub emulated_size_mib: u64,
    /// Loopback runs per contender (the median is reported).
    #[arg(long, default_value_t = 3)]
    pub runs: usize,
    /// Skip the emulated slow, lossy link (it needs root for network namespaces and TUN).
    #[arg(long)]
    pub skip_emulated: bool,
    /// Where the figures go.
    #[arg(long, default_value = "target/bench/link.json")]
    pub out: PathBuf,
}

#[derive(Debug, Clone, Serialize)]
struct Measurement {
    contender: String,
    bytes: u64,
    seconds: f64,
    megabits_per_sec: f64,
    /// For runs with a cut: bytes the receiver already held when the sender came back.
    resumed_from: Option<u64>,
}

impl Measurement {
    fn new(contender: &str, bytes: u64, elapsed: Duration, resumed_from: Option<u64>) -> Self {
        Self {
            contender: contender.to_string(),
            bytes,
            seconds: elapsed.as_secs_f64(),
            megabits_per_sec: bytes as f64 * 8.0 / elapsed.as_secs_f64() / 1e6,
            resumed_from,
        }
    }
}

/// Runs a future to completion on a fresh runtime whose threads live in namespace `ns` (or
/// here, for loopback).
fn run_in<T: Send + 'static>(
    ns: Option<&str>,
    job: impl std::future::Future<Output = Result<T>> + Send + 'static,
) -> Result<T> {
    let body = move || -> Result<T> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()?;
        runtime.block_on(job)
    };
    match ns {
        Some(ns) => emulator::in_namespace(ns, body)?,
        None => std::thread::spawn(body)
            .join()
            .map_err(|_| anyhow::anyhow!("bench thread panicked"))?,
    }
}

/// A receiver (the real hub, or the TCP baseline) running on its own runtime until dropped.
struct Receiver {
    addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Receiver {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

enum ReceiverKind {
    Hub { congestion: Congestion },
    Tcp { expected: u64 },
}

fn start_receiver(
    ns: Option<&'static str>,
    ip: &str,
    kit: Kit,
    dir: PathBuf,
    kind: ReceiverKind,
) -> Result<Receiver> {
    let (addr_tx, addr_rx) = std::sync::mpsc::channel::<Result<SocketAddr>>();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let listen: SocketAddr = format!("{ip}:0").parse()?;
    let body = move || {
        let runtime = match tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
        {
            Ok(runtime) => runtime,
            Err(error) => {
                let _ = addr_tx.send(Err(error.into()));
                return;
            }
        };
        runtime.block_on(async move {
            match kind {
                ReceiverKind::Hub { congestion } => {
                    let config = grassroots_hub::HubConfig {
                        data_dir: dir,
                        quic_listen: Some(listen),
                        http_listen: "127.0.0.1:0".parse().unwrap_or(listen),
                        congestion,
                        ..Default::default()
                    };
                    match grassroots_hub::start(config, kit).await {
                        Ok(hub) => {
                            let _ = addr_tx.send(Ok(hub.quic_addr));
                            let _ = stop_rx.await;
                            hub.shutdown().await;
                        }
                        Err(error) => {
                            let _ = addr_tx.send(Err(error.into()));
                        }
                    }
                }
                ReceiverKind::Tcp { expected } => match tokio::net::TcpListener::bind(listen).await
                {
                    Ok(listener) => {
                        let _ = addr_tx.send(listener.local_addr().map_err(Into::into));
                        tokio::select! {
                            _ = baseline::receive(listener, kit, dir, expected) => {}
                            _ = stop_rx => {}
                        }
                    }
                    Err(error) => {
                        let _ = addr_tx.send(Err(error.into()));
                    }
                },
            }
        });
    };
    let thread = match ns {
        Some(ns) => {
            let path = format!("/var/run/netns/{ns}");
            let handle = std::fs::File::open(&path).with_context(|| format!("opening {path}"))?;
            std::thread::spawn(move || {
                use std::os::fd::AsRawFd;
                // SAFETY: setns(2) on a namespace fd we hold; affects this thread only.
                if unsafe { libc::setns(handle.as_raw_fd(), libc::CLONE_NEWNET) } == 0 {
                    body();
                }
            })
        }
        None => std::thread::spawn(body),
    };
    let addr = addr_rx
        .recv_timeout(Duration::from_secs(30))
        .context("receiver did not start")??;
    Ok(Receiver {
        addr,
        stop: Some(stop_tx),
        thread: Some(thread),
    })
}

/// A cut in the middle of a transfer: once the receiver holds `at_bytes`, the sender's
/// connection dies (as when the edge restarts), the link is down for `outage`, then the sender
/// comes back.
#[derive(Clone)]
struct Cut {
    at_bytes: u64,
    set_down: Arc<dyn Fn(bool) + Send + Sync>,
    outage: Duration,
    /// Bytes the receiver holds so far (set by the runner, which knows where it writes).
    receiver_bytes: Arc<dyn Fn() -> u64 + Send + Sync>,
}

impl Cut {
    fn reached(&self) -> bool {
        (self.receiver_bytes)() >= self.at_bytes
    }

    async fn wait(&self) {
        while !self.reached() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The edge "restarts": its connection is gone; then the line is down for a while.
    async fn outage(&self) {
        // Let the close reach the receiver through the queue, then cut the line.
        tokio::time::sleep(Duration::from_secs(1)).await;
        (self.set_down)(true);
        tokio::time::sleep(self.outage).await;
        (self.set_down)(false);
    }
}

/// Control-stream round trips, milliseconds: with the link idle, and while a bulk transfer runs.
#[derive(Debug, Clone, Default, Serialize)]
struct RoundTrips {
    idle_ms: Vec<f64>,
    during_bulk_ms: Vec<f64>,
}

impl RoundTrips {
    fn summary(&self) -> String {
        format!(
            "heartbeat RTT idle p50 {:.0} ms; during bulk p50 {:.0} ms, p95 {:.0} ms",
            percentile(&self.idle_ms, 0.5),
            percentile(&self.during_bulk_ms, 0.5),
            percentile(&self.during_bulk_ms, 0.95)
        )
    }
}

fn percentile(values: &[f64], q: f64) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    sorted[((sorted.len() - 1) as f64 * q).round() as usize]
}

struct QuicOutcome {
    elapsed: Duration,
    resumed_from: Option<u64>,
    round_trips: RoundTrips,
}

/// Holds a control session on `connection` and pings every 200 ms until stopped.
async fn probe_round_trips(
    connection: grassroots_transport::Connection,
    during_bulk: Arc<std::sync::atomic::AtomicBool>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> Result<RoundTrips> {
    use grassroots_transport::framed::{self, priority};
    use grassroots_wire::Message;
    let (mut send, mut recv) = framed::open(&connection, priority::CONTROL).await?;
    send.send(&Message::Hello {
        versions: grassroots_wire::SUPPORTED_VERSIONS.to_vec(),
        software: "bench".into(),
    })
    .await?;
    recv.expect().await?;
    let mut samples = RoundTrips::default();
    for seq in 0.. {
        if *stop.borrow() {
            break;
        }
        let bulk = during_bulk.load(std::sync::atomic::Ordering::SeqCst);
        let sent = Instant::now();
        send.send(&Message::Ping { seq }).await?;
        let answer = recv.expect().await?;
        if !matches!(answer, Message::Pong { .. }) {
            bail!("expected Pong, got {}", answer.kind());
        }
        let rtt = sent.elapsed().as_secs_f64() * 1000.0;
        if bulk {
            samples.during_bulk_ms.push(rtt);
        } else {
            samples.idle_ms.push(rtt);
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(200)) => {}
            _ = stop.changed() => break,
        }
    }
    Ok(samples)
}

async fn quic_send(
    kit: Kit,
    hub: SocketAddr,
    congestion: Congestion,
    yields: bool,
    store: BlobStore,
    offer: TransferOffer,
    cut: Option<Cut>,
) -> Result<QuicOutcome> {
    let endpoint = EdgeEndpoint::with_options(&kit, &hub.to_string(), congestion)?;
    let connection = endpoint.connect().await?.connection;
    let options = SendOptions {
        yield_to_live: yields,
        ..SendOptions::default()
    };
    let Some(cut) = cut else {
        // Heartbeats on the control stream, idle for a second and then during the bulk
        // transfer: they show whether interactive traffic waits behind bulk.
        let during_bulk = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let probe = tokio::spawn(probe_round_trips(
            connection.clone(),
            during_bulk.clone(),
            stopped,
        ));
        tokio::time::sleep(Duration::from_secs(1)).await;
        during_bulk.store(true, std::sync::atomic::Ordering::SeqCst);
        let started = Instant::now();
        grassroots_transport::send_blob(&connection, &store, &offer, &options, |_| {}).await?;
        let elapsed = started.elapsed();
        stop.send_replace(true);
        let samples = probe.await??;
        return Ok(QuicOutcome {
            elapsed,
            resumed_from: None,
            round_trips: samples,
        });
    };
    let started = Instant::now();
    tokio::select! {
        result = grassroots_transport::send_blob(&connection, &store, &offer, &options, |_| {}) => {
            result?;
            bail!("the transfer finished before the cut");
        }
        _ = cut.wait() => {}
    }
    connection.close(0u32.into(), b"edge restarting");
    cut.outage().await;
    let endpoint = EdgeEndpoint::with_options(&kit, &hub.to_string(), congestion)?;
    for _ in 0..60 {
        let connection = endpoint.connect().await?.connection;
        let mut resumed = 0;
        match grassroots_transport::send_blob(&connection, &store, &offer, &options, |p| {
            resumed = p.resumed_from
        })
        .await
        {
            Ok(_) => {
                return Ok(QuicOutcome {
                    elapsed: started.elapsed(),
                    resumed_from: Some(resumed),
                    round_trips: RoundTrips::default(),
                })
            }
            Err(TransportError::Peer(reason)) if reason.contains("already being received") => {
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            Err(error) => return Err(error.into()),
        }
    }
    bail!("the hub never accepted the resumed transfer")
}

async fn tcp_send(kit: Kit, addr: SocketAddr, path: PathBuf, cut: Option<Cut>) -> Result<Duration> {
    let started = Instant::now();
    if let Some(cut) = cut {
        if baseline::send(addr, &kit, &path, || cut.reached()).await? {
            bail!("the upload finished before the cut");
        }
        cut.outage().await;
    }
    if !baseline::send(addr, &kit, &path, || false).await? {
        bail!("upload did not complete");
    }
    Ok(started.elapsed())
}

fn write_payload(path: &Path, bytes: u64) -> Result<()> {
    use std::io::Write;
    let mut file = std::io::BufWriter::new(std::fs::File::create(path)?);
    let mut state: u64 = 0x2545_F491_4F6C_DD1D;
    let mut block = vec![0u8; 1 << 20];
    let mut written = 0;
    while written < bytes {
        for byte in block.iter_mut() {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            *byte = (state >> 24) as u8;
        }
        let n = (bytes - written).min(block.len() as u64) as usize;
        file.write_all(&block[..n])?;
        written += n as u64;
    }
    file.flush()?;
    Ok(())
}

fn median(mut values: Vec<Measurement>) -> Measurement {
    values.sort_by(|a, b| a.seconds.total_cmp(&b.seconds));
    values.swap_remove(values.len() / 2)
}

struct Fixture {
    work: tempfile::TempDir,
    hub_kit: Kit,
    edge_kit: Kit,
}

fn fixture() -> Result<Fixture> {
    let work = tempfile::Builder::new()
        .prefix("grassroots-bench-")
        .tempdir()?;
    let now = OffsetDateTime::now_utc();
    let (mut authority, hub_kit) = NetworkAuthority::init(
        &work.path().join("prov"),
        "bench",
        "127.0.0.1:7443",
        30,
        now,
    )?;
    let edge_kit = authority.add_site(&"bench-edge".parse()?, "bench edge", 30, now)?;
    Ok(Fixture {
        work,
        hub_kit,
        edge_kit,
    })
}

async fn import(store: &BlobStore, path: &Path) -> Result<TransferOffer> {
    Ok(store.import_file(path, "bench-payload").await?)
}

/// Where the two ends run: namespaces (none for loopback) and the hub's address.
#[derive(Clone, Copy)]
struct Route {
    edge_ns: Option<&'static str>,
    hub_ns: Option<&'static str>,
    hub_ip: &'static str,
}

const LOOPBACK: Route = Route {
    edge_ns: None,
    hub_ns: None,
    hub_ip: "127.0.0.1",
};

fn quic_run(
    fx: &Fixture,
    route: Route,
    (congestion, yields): (Congestion, bool),
    store: &BlobStore,
    offer: &TransferOffer,
    cut: Option<Cut>,
    run: usize,
) -> Result<QuicOutcome> {
    let dir = fx
        .work
        .path()
        .join(format!("hub-{}-{run}-{}", route.hub_ip, rand_suffix()));
    let receiver = start_receiver(
        route.hub_ns,
        route.hub_ip,
        fx.hub_kit.clone(),
        dir.clone(),
        ReceiverKind::Hub { congestion },
    )?;
    let hub_blobs = BlobStore::open(&dir.join("blobs"))?;
    let cut = cut.map(|cut| Cut {
        receiver_bytes: Arc::new(move || {
            hub_blobs
                .partials()
                .iter()
                .map(|p| p.durable_bytes)
                .max()
                .unwrap_or(0)
        }),
        ..cut
    });
    let (kit, store, offer_owned) = (fx.edge_kit.clone(), store.clone(), offer.clone());
    let result = run_in(
        route.edge_ns,
        quic_send(
            kit,
            receiver.addr,
            congestion,
            yields,
            store,
            offer_owned,
            cut,
        ),
    )?;
    let stored = std::fs::read(dir.join("blobs").join(offer.id.to_hex()))?;
    if blake3::hash(&stored).as_bytes() != &offer.id.0 {
        bail!("the hub's copy does not hash to the blob id");
    }
    drop(receiver);
    Ok(result)
}

fn tcp_run(
    fx: &Fixture,
    route: Route,
    payload: &Path,
    size: u64,
    cut: Option<Cut>,
    run: usize,
) -> Result<Duration> {
    let dir = fx
        .work
        .path()
        .join(format!("tcp-{}-{run}-{}", route.hub_ip, rand_suffix()));
    std::fs::create_dir_all(&dir)?;
    let receiver = start_receiver(
        route.hub_ns,
        route.hub_ip,
        fx.hub_kit.clone(),
        dir.clone(),
        ReceiverKind::Tcp { expected: size },
    )?;
    let first_upload = dir.join("tcp-upload-0");
    let cut = cut.map(|cut| Cut {
        receiver_bytes: Arc::new(move || {
            std::fs::metadata(&first_upload)
                .map(|m| m.len())
                .unwrap_or(0)
        }),
        ..cut
    });
    let elapsed = run_in(
        route.edge_ns,
        tcp_send(
            fx.edge_kit.clone(),
            receiver.addr,
            payload.to_path_buf(),
            cut,
        ),
    )?;
    drop(receiver);
    Ok(elapsed)
}

fn rand_suffix() -> u32 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or_default()
}

pub async fn run(args: LinkBenchArgs) -> Result<()> {
    // The runs below start their own runtimes on their own threads.
    tokio::task::spawn_blocking(move || run_blocking(args)).await?
}

fn run_blocking(args: LinkBenchArgs) -> Result<()> {
    let fx = fixture()?;
    let mut report = serde_json::Map::new();

    // Loopback.
    let size = args.size_mib * 1024 * 1024;
    let payload = fx.work.path().join("payload.bin");
    write_payload(&payload, size)?;
    let sender_store = BlobStore::open(&fx.work.path().join("edge-blobs"))?;
    let offer = run_in(None, {
        let (store, payload) = (sender_store.clone(), payload.clone());
        async move { import(&store, &payload).await }
    })?;
    println!(
        "loopback: {} MiB, median of {} runs each",
        args.size_mib, args.runs
    );
    let mut quic = Vec::new();
    let mut full_speed = Vec::new();
    let mut tcp = Vec::new();
    for run in 0..args.runs.max(1) {
        let outcome = quic_run(
            &fx,
            LOOPBACK,
            (Congestion::default(), true),
            &sender_store,
            &offer,
            None,
            run,
        )?;
        quic.push(Measurement::new(
            "grassroots QUIC bulk transfer (BBR, yielding)",
            size,
            outcome.elapsed,
            None,
        ));
        let outcome = quic_run(
            &fx,
            LOOPBACK,
            (Congestion::default(), false),
            &sender_store,
            &offer,
            None,
            run + args.runs.max(1),
        )?;
        full_speed.push(Measurement::new(
            "grassroots QUIC bulk transfer (BBR, full speed)",
            size,
            outcome.elapsed,
            None,
        ));
        let elapsed = tcp_run(&fx, LOOPBACK, &payload, size, None, run)?;
        tcp.push(Measurement::new(
            "TCP + TLS 1.3 (rustls)",
            size,
            elapsed,
            None,
        ));
    }
    let (quic, full_speed, tcp) = (median(quic), median(full_speed), median(tcp));
    print_row(&quic);
    print_row(&full_speed);
    print_row(&tcp);
    println!(
        "  ratio QUIC / TCP+TLS: {:.2}",
        quic.megabits_per_sec / tcp.megabits_per_sec
    );
    report.insert("loopback".into(), serde_json::json!({ "quic": quic, "quic_full_speed": full_speed, "tcp_tls": tcp, "ratio": quic.megabits_per_sec / tcp.megabits_per_sec }));

    if args.skip_emulated {
        println!("emulated link: skipped (--skip-emulated)");
    } else {
        match emulated(&fx, &args) {
            Ok(value) => {
                report.insert("emulated".into(), value);
            }
            Err(error) => {
                println!("emulated link: not measured on this machine: {error:#}");
                report.insert(
                    "emulated".into(),
                    serde_json::json!({ "skipped": format!("{error:#}") }),
                );
            }
        }
    }
    if let Some(dir) = args.out.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(&args.out, serde_json::to_string_pretty(&report)?)?;
    println!("figures written to {}", args.out.display());
    Ok(())
}

fn print_row(m: &Measurement) {
    let resumed = m
        .resumed_from
        .map(|r| format!(", resumed from {:.1} MiB", r as f64 / 1048576.0))
        .unwrap_or_default();
    println!(
        "  {:<44} {:>8.1} Mbit/s  ({:.2} s{resumed})",
        m.contender, m.megabits_per_sec, m.seconds
    );
}

fn emulated(fx: &Fixture, args: &LinkBenchArgs) -> Result<serde_json::Value> {
    let params = emulator::LinkParams {
        rate_bits_per_sec: 20_000_000,
        one_way_delay: Duration::from_millis(25),
        loss: 0.01,
        max_queue: Duration::from_millis(250),
    };
    let link = Arc::new(emulator::EmulatedLink::start(params, 42)?);
    let size = args.emulated_size_mib * 1024 * 1024;
    let payload = fx.work.path().join("payload-emulated.bin");
    write_payload(&payload, size)?;
    let store = BlobStore::open(&fx.work.path().join("edge-blobs-emulated"))?;
    let offer = run_in(None, {
        let (store, payload) = (store.clone(), payload.clone());
        async move { import(&store, &payload).await }
    })?;
    let route = Route {
        edge_ns: Some(emulator::EDGE_NS),
        hub_ns: Some(emulator::HUB_NS),
        hub_ip: emulator::HUB_IP,
    };
    println!(
        "emulated county uplink: 20 Mbit/s, 50 ms RTT, 1% loss each way, {} MiB (link ceiling {:.1} s)",
        args.emulated_size_mib,
        size as f64 * 8.0 / 20e6
    );
    let mut rows = Vec::new();
    let mut round_trips = serde_json::Map::new();
    for (label, settings) in [
        (
            "grassroots QUIC bulk, Cubic, full speed",
            (Congestion::Cubic, false),
        ),
        (
            "grassroots QUIC bulk, BBR, full speed",
            (Congestion::Bbr, false),
        ),
        (
            "grassroots QUIC bulk, BBR, yielding (default)",
            (Congestion::Bbr, true),
        ),
    ] {
        let outcome = quic_run(fx, route, settings, &store, &offer, None, 0)?;
        rows.push(Measurement::new(label, size, outcome.elapsed, None));
        print_row(rows.last().context("row")?);
        println!("      {}", outcome.round_trips.summary());
        round_trips.insert(label.into(), serde_json::to_value(&outcome.round_trips)?);
    }
    let elapsed = tcp_run(fx, route, &payload, size, None, 0)?;
    rows.push(Measurement::new(
        "TCP + TLS 1.3 (rustls, Linux Cubic)",
        size,
        elapsed,
        None,
    ));
    print_row(rows.last().context("row")?);

    let switch = link.clone();
    let cut = Cut {
        at_bytes: size * 2 / 5,
        set_down: Arc::new(move |down| switch.set_down(down)),
        outage: Duration::from_secs(2),
        receiver_bytes: Arc::new(|| 0),
    };
    println!("  with a cut once the receiver holds 40%: the sender's connection dies, the link is down for 2 s");
    let outcome = quic_run(
        fx,
        route,
        (Congestion::Bbr, true),
        &store,
        &offer,
        Some(cut.clone()),
        1,
    )?;
    let quic_cut = Measurement::new(
        "grassroots QUIC bulk, BBR, yielding, cut + resume",
        size,
        outcome.elapsed,
        outcome.resumed_from,
    );
    print_row(&quic_cut);
    let elapsed = tcp_run(fx, route, &payload, size, Some(cut), 1)?;
    let tcp_cut = Measurement::new("TCP + TLS 1.3, cut + start over", size, elapsed, None);
    print_row(&tcp_cut);
    let tcp_mbps = rows[3].megabits_per_sec;
    println!(
        "  ratios vs TCP+TLS: QUIC Cubic {:.2}, QUIC BBR {:.2}, QUIC BBR yielding {:.2}; with the cut {:.2} (time ratio TCP/QUIC); link utilisation QUIC BBR {:.0}%, yielding {:.0}%",
        rows[0].megabits_per_sec / tcp_mbps,
        rows[1].megabits_per_sec / tcp_mbps,
        rows[2].megabits_per_sec / tcp_mbps,
        tcp_cut.seconds / quic_cut.seconds,
        rows[1].megabits_per_sec / 20.0 * 100.0,
        rows[2].megabits_per_sec / 20.0 * 100.0
    );
    Ok(serde_json::json!({
        "link": params,
        "runs": rows,
        "control_round_trips": round_trips,
        "cut": { "quic": quic_cut, "tcp_tls": tcp_cut },
    }))
}
