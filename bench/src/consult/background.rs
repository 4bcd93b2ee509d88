//! What a federated round does to the people using the link (`bench consult --background`): the
//! edge's outbox sends model updates to the hub back to back, over the same emulated link and
//! the same QUIC connection the expert's tiles take, for the whole of a consult session. Each
//! update is fresh content (so none is deduplicated), in the round's own format: a real-sized
//! update of the screening CNN (its layer shapes, half precision, as rounds send by default),
//! or a 20 MB one standing for a larger model.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use grassroots_edge::outbox::{Outbox, OutboxState};
use grassroots_models::federated::compress::{self, Encoding};
use grassroots_models::onnx_graph::KERNEL;
use grassroots_models::training::{cnn::QUICK_CHANNELS, dataset::CLASSES};
use grassroots_wire::federated::{encode_update, UpdateEncoding, UpdateHeader};
use rand::{Rng, SeedableRng};
use serde::Serialize;

use crate::netem::NamespaceRuntime;

/// The label the hub files these under (it keeps and acknowledges any label it does not act
/// on, so they cost it nothing but disk).
const LABEL: &str = "bench-background-update";

/// The tensor sizes of the screening CNN the network trains (the quick model).
fn screening_tensor_sizes() -> Vec<usize> {
    let mut sizes = Vec::new();
    let mut input = 3;
    for output in QUICK_CHANNELS {
        sizes.push(output * input * KERNEL * KERNEL);
        sizes.push(output);
        input = output;
    }
    sizes.push(input * CLASSES.len());
    sizes.push(CLASSES.len());
    sizes
}

/// Random deltas for tensors of `sizes`, in half precision as rounds send them.
fn payload(tensor_sizes: &[usize], seed: u64) -> Result<Vec<u8>> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let values: Vec<f32> = (0..tensor_sizes.iter().sum::<usize>())
        .map(|_| rng.gen_range(-0.01..0.01))
        .collect();
    Ok(compress::encode(
        &values,
        tensor_sizes,
        Encoding::F16,
        &mut Vec::new(),
    )?)
}

/// One update in the round's wire format around `payload` (round `round`, so that each is new
/// content).
pub fn update_bytes(round: u64, tensor_sizes: &[usize], payload: &[u8]) -> Vec<u8> {
    let header = UpdateHeader {
        round,
        base_digest: format!("{round:064x}"),
        samples: 400,
        mean_loss: 0.4,
        encoding: UpdateEncoding::F16,
        values: tensor_sizes.iter().sum::<usize>() as u64,
        tensor_sizes: tensor_sizes.iter().map(|s| *s as u64).collect(),
        training_seconds: 10.0,
    };
    encode_update(&header, payload)
}

/// The background load of one measurement.
#[derive(Debug, Clone, Copy, Serialize)]
pub enum Load {
    /// The screening CNN's update as rounds send it.
    RealUpdate,
    /// A 20 MB update (a larger model's).
    Large,
}

impl Load {
    fn tensor_sizes(self) -> Vec<usize> {
        match self {
            Load::RealUpdate => screening_tensor_sizes(),
            // Ten million values at two bytes each.
            Load::Large => vec![10_000_000],
        }
    }
}

/// What crossed the link while the session ran.
#[derive(Debug, Clone, Serialize)]
pub struct Moved {
    pub update_bytes: u64,
    pub updates_delivered: u64,
    pub bytes_delivered: u64,
    pub seconds: f64,
    pub megabits_per_sec: f64,
}

/// Sends updates back to back until stopped.
pub struct Background {
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<Result<Moved>>,
}

impl Background {
    /// Starts sending `load` through `outbox`, on the edge's runtime.
    pub fn start(edge_rt: &NamespaceRuntime, outbox: Outbox, load: Load, dir: PathBuf) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let task = edge_rt.spawn(send_until(outbox, load, dir, stop.clone()));
        Self { stop, task }
    }

    /// Stops after the update in flight and says what moved.
    pub async fn stop(self) -> Result<Moved> {
        self.stop.store(true, Ordering::Relaxed);
        self.task.await.context("the background sender panicked")?
    }
}

async fn send_until(
    outbox: Outbox,
    load: Load,
    dir: PathBuf,
    stop: Arc<AtomicBool>,
) -> Result<Moved> {
    std::fs::create_dir_all(&dir)?;
    let sizes = load.tensor_sizes();
    // Made once (off the edge's async threads, which serve the tiles): only the header changes.
    let values = {
        let sizes = sizes.clone();
        tokio::task::spawn_blocking(move || payload(&sizes, 7)).await??
    };
    let started = Instant::now();
    let (mut delivered, mut bytes, mut size) = (0u64, 0u64, 0u64);
    let first_round = rand::random::<u32>() as u64;
    while !stop.load(Ordering::Relaxed) {
        let round = first_round + delivered;
        let update = update_bytes(round, &sizes, &values);
        size = update.len() as u64;
        let path = dir.join(format!("update-{round}.bin"));
        tokio::fs::write(&path, &update).await?;
        let entry = outbox.enqueue_file(&path, LABEL).await?;
        let _ = tokio::fs::remove_file(&path).await;
        let deadline = Instant::now() + Duration::from_secs(600);
        loop {
            let status = outbox
                .statuses()?
                .into_iter()
                .find(|s| s.entry.id == entry.id)
                .context("the queued update left the outbox")?;
            match status.entry.state {
                OutboxState::Delivered => break,
                OutboxState::Failed | OutboxState::Refused => bail!(
                    "a background update failed: {}",
                    status.entry.last_error.unwrap_or_default()
                ),
                _ if Instant::now() > deadline => bail!("a background update took over 600 s"),
                _ => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        }
        delivered += 1;
        bytes += size;
    }
    let seconds = started.elapsed().as_secs_f64();
    Ok(Moved {
        update_bytes: size,
        updates_delivered: delivered,
        bytes_delivered: bytes,
        seconds,
        megabits_per_sec: bytes as f64 * 8.0 / seconds.max(1e-9) / 1e6,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_real_update_is_the_screening_cnns_size_and_decodes() {
        let sizes = screening_tensor_sizes();
        let values: usize = sizes.iter().sum();
        // 3x3 convolutions 3->16->32->64 and a 64->6 head.
        assert_eq!(values, 448 + 4_640 + 18_496 + 390);
        let bytes = update_bytes(1, &sizes, &payload(&sizes, 7).unwrap());
        let (header, payload) = grassroots_wire::federated::decode_update(&bytes).unwrap();
        assert_eq!(header.values as usize, values);
        assert_eq!(payload.len(), values * 2);
    }
}
