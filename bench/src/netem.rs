//! A slow, lossy link between two network namespaces, emulated in user space.
//!
//! `tc netem` is the usual tool, but this machine's kernel lacks it (`tc qdisc add ... netem`
//! answers "Specified qdisc kind is unknown"). So the benches (`bench link`, `bench consult`) make
//! two namespaces of their own, put a TUN device in each (10.201.0.1 for the edge, 10.201.0.2 for
//! the hub), and forward IP packets between the two devices themselves, applying netem's model per
//! direction: a rate limit with a drop-tail queue, a fixed one-way delay, random loss from a seeded
//! RNG — and, for the cut test, a switch that drops everything. Both the kernel's TCP and our QUIC
//! cross the same emulated link. [`NamespaceRuntime`] runs async code (a hub, an edge, a client)
//! on threads that live in one of the namespaces.

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

pub const EDGE_NS: &str = "grassroots-bench-edge";
pub const HUB_NS: &str = "grassroots-bench-hub";
pub const EDGE_IP: &str = "10.201.0.1";
pub const HUB_IP: &str = "10.201.0.2";

/// The impairment applied to each direction.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct LinkParams {
    pub rate_bits_per_sec: u64,
    pub one_way_delay: Duration,
    pub loss: f64,
    /// Longest queue before the rate limiter, as time at the link rate (drop-tail beyond it).
    pub max_queue: Duration,
}

pub struct EmulatedLink {
    /// IP bytes delivered edge to hub, and hub to edge.
    delivered: [Arc<AtomicU64>; 2],
    down: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

fn ip(args: &[&str]) -> Result<()> {
    let output = Command::new("ip")
        .args(args)
        .output()
        .context("running ip (iproute2)")?;
    if !output.status.success() {
        bail!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(())
}

/// Runs `f` on a thread that has entered network namespace `ns`; sockets (and TUN devices) it
/// creates belong to that namespace, and so do threads it spawns.
pub fn in_namespace<T: Send + 'static>(
    ns: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T> {
    let path = format!("/var/run/netns/{ns}");
    let handle = File::open(&path).with_context(|| format!("opening {path}"))?;
    std::thread::spawn(move || {
        // SAFETY: setns(2) on a namespace file descriptor we hold open; it only changes the
        // calling thread's network namespace.
        let rc = unsafe { libc::setns(handle.as_raw_fd(), libc::CLONE_NEWNET) };
        if rc != 0 {
            return Err(anyhow::anyhow!(
                "setns: {}",
                std::io::Error::last_os_error()
            ));
        }
        Ok(f())
    })
    .join()
    .map_err(|_| anyhow::anyhow!("namespace thread panicked"))?
}

fn open_tun(name: &str) -> std::io::Result<File> {
    const TUNSETIFF: libc::c_ulong = 0x4004_54ca;
    const IFF_TUN: libc::c_short = 0x0001;
    const IFF_NO_PI: libc::c_short = 0x1000;
    // SAFETY: plain open(2) of a NUL-terminated path.
    let fd = unsafe { libc::open(c"/dev/net/tun".as_ptr(), libc::O_RDWR | libc::O_CLOEXEC) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: we own the new descriptor; File closes it on drop.
    let file = unsafe { File::from_raw_fd(fd) };
    // SAFETY: an all-zero ifreq is a valid value; we fill the name and flags before the ioctl.
    let mut request: libc::ifreq = unsafe { std::mem::zeroed() };
    for (slot, byte) in request
        .ifr_name
        .iter_mut()
        .zip(name.bytes().take(libc::IFNAMSIZ - 1))
    {
        *slot = byte as libc::c_char;
    }
    request.ifr_ifru.ifru_flags = IFF_TUN | IFF_NO_PI;
    // SAFETY: TUNSETIFF reads and writes an ifreq, which `request` is.
    let rc = unsafe { libc::ioctl(file.as_raw_fd(), TUNSETIFF, &mut request) };
    if rc < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(file)
}

fn remove_namespaces() {
    for ns in [EDGE_NS, HUB_NS] {
        let _ = Command::new("ip").args(["netns", "delete", ns]).output();
    }
}

impl EmulatedLink {
    pub fn start(params: LinkParams, seed: u64) -> Result<Self> {
        remove_namespaces();
        ip(&["netns", "add", EDGE_NS])?;
        ip(&["netns", "add", HUB_NS])?;
        let mut devices = Vec::new();
        for (ns, device, address) in [(EDGE_NS, "grb-edge", EDGE_IP), (HUB_NS, "grb-hub", HUB_IP)] {
            let device_name = device.to_string();
            let tun = in_namespace(ns, move || open_tun(&device_name))?
                .with_context(|| format!("creating TUN device {device}"))?;
            ip(&[
                "-n",
                ns,
                "addr",
                "add",
                &format!("{address}/24"),
                "dev",
                device,
            ])?;
            ip(&["-n", ns, "link", "set", device, "up"])?;
            ip(&["-n", ns, "link", "set", "lo", "up"])?;
            devices.push(tun);
        }
        let down = Arc::new(AtomicBool::new(false));
        let stop = Arc::new(AtomicBool::new(false));
        let hub_side = devices.pop().context("hub device")?;
        let edge_side = devices.pop().context("edge device")?;
        let mut threads = Vec::new();
        let delivered = [Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0))];
        for (from, to, direction_seed, counter) in [
            (
                edge_side.try_clone()?,
                hub_side.try_clone()?,
                seed,
                delivered[0].clone(),
            ),
            (
                hub_side,
                edge_side,
                seed.wrapping_add(1),
                delivered[1].clone(),
            ),
        ] {
            threads.extend(forward(
                from,
                to,
                params,
                direction_seed,
                Switches {
                    down: down.clone(),
                    stop: stop.clone(),
                    delivered: counter,
                },
            ));
        }
        Ok(Self {
            delivered,
            down,
            stop,
            threads,
        })
    }

    /// IP bytes (headers included) delivered so far: edge to hub, hub to edge.
    pub fn bytes(&self) -> (u64, u64) {
        (
            self.delivered[0].load(Ordering::Relaxed),
            self.delivered[1].load(Ordering::Relaxed),
        )
    }

    /// Drops every packet while `down` is true (a cut uplink).
    pub fn set_down(&self, down: bool) {
        self.down.store(down, Ordering::SeqCst);
    }
}

impl Drop for EmulatedLink {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
        remove_namespaces();
    }
}

/// Waits up to 100 ms for a packet on `file`.
fn readable(file: &File) -> bool {
    let mut poll = libc::pollfd {
        fd: file.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd, a bounded timeout.
    unsafe { libc::poll(&mut poll, 1, 100) > 0 }
}

/// What a direction's threads share with the link: the cut switch, the stop flag and the count
/// of bytes delivered.
struct Switches {
    down: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
    delivered: Arc<AtomicU64>,
}

fn forward(
    mut from: File,
    mut to: File,
    params: LinkParams,
    seed: u64,
    switches: Switches,
) -> Vec<JoinHandle<()>> {
    let Switches {
        down,
        stop,
        delivered,
    } = switches;
    // Bounded: a full channel is a full queue, and the packet is dropped as netem would.
    let (queue, departures) = mpsc::sync_channel::<(Instant, Vec<u8>)>(4096);
    let reader_stop = stop.clone();
    let reader_down = down.clone();
    let reader = std::thread::spawn(move || {
        let mut rng = StdRng::seed_from_u64(seed);
        let mut next_free = Instant::now();
        let mut buffer = vec![0u8; 65_536];
        while !reader_stop.load(Ordering::Relaxed) {
            if !readable(&from) {
                continue;
            }
            let Ok(len) = from.read(&mut buffer) else {
                return;
            };
            let now = Instant::now();
            if reader_down.load(Ordering::Relaxed) || rng.gen_bool(params.loss) {
                continue;
            }
            let start = next_free.max(now);
            if start.duration_since(now) > params.max_queue {
                continue; // drop-tail
            }
            let serialisation =
                Duration::from_secs_f64(len as f64 * 8.0 / params.rate_bits_per_sec as f64);
            next_free = start + serialisation;
            let _ = queue.try_send((next_free + params.one_way_delay, buffer[..len].to_vec()));
        }
    });
    let writer = std::thread::spawn(move || {
        while !stop.load(Ordering::Relaxed) {
            let Ok((due, packet)) = departures.recv_timeout(Duration::from_millis(100)) else {
                continue;
            };
            let now = Instant::now();
            if due > now {
                std::thread::sleep(due - now);
            }
            if !down.load(Ordering::Relaxed) && to.write(&packet).is_ok() {
                delivered.fetch_add(packet.len() as u64, Ordering::Relaxed);
            }
        }
    });
    vec![reader, writer]
}

/// A tokio runtime whose worker threads live in a network namespace: every socket its tasks open
/// belongs there. Stopped (its tasks dropped) when this is dropped.
pub struct NamespaceRuntime {
    handle: tokio::runtime::Handle,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl NamespaceRuntime {
    pub fn start(ns: &str, workers: usize) -> Result<Self> {
        let path = format!("/var/run/netns/{ns}");
        let namespace = File::open(&path).with_context(|| format!("opening {path}"))?;
        let (handle_tx, handle_rx) = mpsc::channel::<Result<tokio::runtime::Handle>>();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            // SAFETY: setns(2) on a namespace file descriptor we hold open; it only changes the
            // calling thread's network namespace, which the runtime's threads then inherit.
            if unsafe { libc::setns(namespace.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                let _ = handle_tx.send(Err(anyhow::anyhow!(
                    "setns: {}",
                    std::io::Error::last_os_error()
                )));
                return;
            }
            let runtime = match tokio::runtime::Builder::new_multi_thread()
                .worker_threads(workers)
                .enable_all()
                .build()
            {
                Ok(runtime) => runtime,
                Err(error) => {
                    let _ = handle_tx.send(Err(error.into()));
                    return;
                }
            };
            let _ = handle_tx.send(Ok(runtime.handle().clone()));
            runtime.block_on(async {
                let _ = stopped.await;
            });
            runtime.shutdown_timeout(Duration::from_secs(5));
        });
        let handle = handle_rx
            .recv()
            .context("the namespace runtime did not start")??;
        Ok(Self {
            handle,
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    /// Starts `job` on this runtime's threads without waiting for it.
    pub fn spawn<T: Send + 'static>(
        &self,
        job: impl std::future::Future<Output = T> + Send + 'static,
    ) -> tokio::task::JoinHandle<T> {
        self.handle.spawn(job)
    }

    /// Runs `job` on this runtime's threads and waits for it.
    pub async fn run<T: Send + 'static>(
        &self,
        job: impl std::future::Future<Output = Result<T>> + Send + 'static,
    ) -> Result<T> {
        self.handle
            .spawn(job)
            .await
            .map_err(|error| anyhow::anyhow!("task in the namespace failed: {error}"))?
    }
}

impl Drop for NamespaceRuntime {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
