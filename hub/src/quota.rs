//! What one edge may make the hub receive: a size cap per kind of transfer, a daily allowance
//! per site, and a disk watermark.
//!
//! Every bulk offer is checked here before a single chunk is accepted, so a faulty or hostile
//! edge cannot fill the hub's disk: an offer larger than anything of its kind can be is refused
//! for good (the edge is told, and stops offering it); a site past its daily allowance, or any
//! offer while the data directory's free space is below the watermark, is refused for now (the
//! edge retries later). Refusing bulk work at the watermark leaves the space above it to the
//! hub's durable state (sled, answers, audit), which keeps working. Stale partial blobs are
//! swept ([`PARTIAL_MAX_AGE`]) at start and every few hours.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::Mutex;
use std::time::Duration;

use grassroots_wire::{ContentId, TransferOffer};
use time::{Date, OffsetDateTime};

/// A partial blob nobody added to for this long is removed.
pub const PARTIAL_MAX_AGE: Duration = Duration::from_secs(7 * 86_400);

/// How often stale partials are swept.
pub const SWEEP_EVERY: Duration = Duration::from_secs(6 * 3600);

/// The limits, from the command line.
#[derive(Debug, Clone, Copy, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct QuotaSettings {
    /// The largest offer of a kind the hub has no tighter cap for (admins' manual transfers).
    pub max_offer_bytes: u64,
    /// What one site may send in a UTC day.
    pub site_daily_bytes: u64,
    /// Below this much free space in the data directory, bulk offers are refused.
    pub min_free_disk_bytes: u64,
}

impl Default for QuotaSettings {
    fn default() -> Self {
        Self {
            max_offer_bytes: 256 << 20,
            site_daily_bytes: 4 << 30,
            min_free_disk_bytes: 1 << 30,
        }
    }
}

/// Why an offer is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OfferRefusal {
    /// It can never be taken as it is.
    ForGood(String),
    /// Not now: the edge may offer it again later.
    NotNow(String),
}

/// The largest blob a kind of transfer can be.
pub fn cap_for_label(label: &str, general: u64) -> u64 {
    let cap = match label {
        grassroots_wire::referral::REFERRAL_LABEL => grassroots_wire::referral::MAX_REFERRAL_BYTES,
        grassroots_wire::models::MODEL_STATUS_LABEL
        | grassroots_wire::models::MODEL_EVALUATION_LABEL => {
            grassroots_wire::models::MAX_STATUS_BYTES
        }
        grassroots_wire::coverage::COVERAGE_LABEL => grassroots_wire::coverage::MAX_COVERAGE_BYTES,
        grassroots_wire::federated::ROUND_UPDATE_LABEL => {
            grassroots_wire::federated::MAX_UPDATE_BYTES
        }
        grassroots_secagg::message::LABEL => grassroots_secagg::message::MAX_MESSAGE_BYTES,
        _ => return general,
    };
    (cap as u64).min(general)
}

#[derive(Default)]
struct SiteDay {
    day: Option<Date>,
    bytes: u64,
    /// Offers already counted today (a resumed transfer is offered again).
    counted: HashSet<ContentId>,
}

pub struct Quotas {
    settings: QuotaSettings,
    days: Mutex<HashMap<String, SiteDay>>,
}

impl Quotas {
    pub fn new(settings: QuotaSettings) -> Self {
        Self {
            settings,
            days: Mutex::default(),
        }
    }

    /// Admits `offer` from `site`, counting it against the site's day, or says why not.
    pub fn admit(
        &self,
        site: &str,
        offer: &TransferOffer,
        data_dir: &Path,
        now: OffsetDateTime,
    ) -> Result<(), OfferRefusal> {
        let cap = cap_for_label(&offer.label, self.settings.max_offer_bytes);
        if offer.size > cap {
            return Err(OfferRefusal::ForGood(format!(
                "a {} of {} bytes is larger than any can be ({cap} bytes)",
                offer.label, offer.size
            )));
        }
        match fs2::available_space(data_dir) {
            Ok(free) if free < self.settings.min_free_disk_bytes.saturating_add(offer.size) => {
                return Err(OfferRefusal::NotNow(format!(
                    "the hub's disk is nearly full ({} MiB free, {} MiB kept for its records); try later",
                    free >> 20,
                    self.settings.min_free_disk_bytes >> 20
                )));
            }
            Ok(_) => {}
            Err(error) => tracing::warn!(%error, "cannot read the data directory's free space"),
        }
        let mut days = self.days.lock().unwrap_or_else(|p| p.into_inner());
        let today = days.entry(site.to_string()).or_default();
        if today.day != Some(now.date()) {
            *today = SiteDay {
                day: Some(now.date()),
                ..SiteDay::default()
            };
        }
        if today.counted.contains(&offer.id) {
            return Ok(());
        }
        if today.bytes.saturating_add(offer.size) > self.settings.site_daily_bytes {
            return Err(OfferRefusal::NotNow(format!(
                "this site sent {} MiB today, its daily allowance is {} MiB; the rest waits for tomorrow (UTC)",
                today.bytes >> 20,
                self.settings.site_daily_bytes >> 20
            )));
        }
        today.bytes += offer.size;
        today.counted.insert(offer.id);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use grassroots_wire::transfer::OfferBuilder;

    fn offer(label: &str, size: usize, fill: u8) -> TransferOffer {
        let data = vec![fill; size];
        let mut builder = OfferBuilder::new(64 * 1024);
        for chunk in data.chunks(64 * 1024) {
            builder.add_chunk(chunk);
        }
        builder.finish(label)
    }

    #[test]
    fn caps_per_kind_a_daily_allowance_and_the_disk_watermark() {
        let dir = tempfile::tempdir().unwrap();
        let quotas = Quotas::new(QuotaSettings {
            max_offer_bytes: 1 << 20,
            site_daily_bytes: 600_000,
            min_free_disk_bytes: 0,
        });
        let now = OffsetDateTime::now_utc();
        // A model status is a few kilobytes: a 100 kB one is refused for good.
        assert!(matches!(
            quotas.admit("a", &offer("model-status", 100_000, 1), dir.path(), now),
            Err(OfferRefusal::ForGood(_))
        ));
        // Unknown kinds get the general cap.
        assert!(matches!(
            quotas.admit("a", &offer("manual", 2 << 20, 1), dir.path(), now),
            Err(OfferRefusal::ForGood(_))
        ));
        let update = offer("round-update", 500_000, 2);
        assert_eq!(quotas.admit("a", &update, dir.path(), now), Ok(()));
        assert_eq!(
            quotas.admit("a", &update, dir.path(), now),
            Ok(()),
            "a resume"
        );
        assert!(matches!(
            quotas.admit("a", &offer("round-update", 200_000, 3), dir.path(), now),
            Err(OfferRefusal::NotNow(_))
        ));
        assert_eq!(
            quotas.admit("b", &offer("round-update", 200_000, 3), dir.path(), now),
            Ok(()),
            "per site"
        );
        let tomorrow = now + time::Duration::days(1);
        assert_eq!(
            quotas.admit(
                "a",
                &offer("round-update", 200_000, 3),
                dir.path(),
                tomorrow
            ),
            Ok(())
        );
        let full = Quotas::new(QuotaSettings {
            min_free_disk_bytes: u64::MAX / 2,
            ..QuotaSettings::default()
        });
        assert!(matches!(
            full.admit("a", &offer("referral", 1000, 4), dir.path(), now),
            Err(OfferRefusal::NotNow(reason)) if reason.contains("disk")
        ));
    }
}
