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

use std::collections::HashMap;
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
    // A kind's own cap is what a valid one can be; the operator's general cap is for the rest.
    cap as u64
}

#[derive(Default)]
struct SiteDay {
    day: Option<Date>,
    bytes: u64,
    /// Offers already counted today, with the size they were counted at (a resumed transfer is
    /// offered again: the same id and size is not charged twice; anything else is).
    counted: HashMap<ContentId, u64>,
}

/// Offers remembered per site and day at most; past that, every offer is charged.
const MAX_COUNTED: usize = 10_000;

/// The least an offer is charged, so that empty offers cannot be made for free.
const MIN_CHARGE: u64 = 64 * 1024;

pub struct Quotas {
    settings: QuotaSettings,
    days: Mutex<HashMap<String, SiteDay>>,
    /// Bytes of offers being received now: the disk watermark counts them as already written.
    in_flight: Mutex<u64>,
}

/// An admitted offer's claim on the disk, released when the transfer ends (however it ends).
pub struct Reservation<'a> {
    quotas: &'a Quotas,
    bytes: u64,
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        let mut in_flight = self
            .quotas
            .in_flight
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        *in_flight = in_flight.saturating_sub(self.bytes);
    }
}

impl Quotas {
    pub fn new(settings: QuotaSettings) -> Self {
        Self {
            settings,
            days: Mutex::default(),
            in_flight: Mutex::new(0),
        }
    }

    /// Admits `offer` from `site`, counting it against the site's day (referrals excepted: a
    /// clinical referral never waits for a day's allowance used up by bulk work) and reserving
    /// its size on the disk until the returned reservation is dropped; or says why not.
    pub fn admit(
        &self,
        site: &str,
        offer: &TransferOffer,
        data_dir: &Path,
        now: OffsetDateTime,
    ) -> Result<Reservation<'_>, OfferRefusal> {
        let cap = cap_for_label(&offer.label, self.settings.max_offer_bytes);
        if offer.size > cap {
            return Err(OfferRefusal::ForGood(format!(
                "a {} of {} bytes is larger than any can be ({cap} bytes)",
                offer.label, offer.size
            )));
        }
        // The check and the reservation under one lock: parallel offers cannot all pass against
        // the same free space.
        let mut in_flight = self.in_flight.lock().unwrap_or_else(|p| p.into_inner());
        let free = fs2::available_space(data_dir).map_err(|error| {
            OfferRefusal::NotNow(format!("cannot read the hub's free disk space: {error}"))
        })?;
        let needed = self
            .settings
            .min_free_disk_bytes
            .saturating_add(*in_flight)
            .saturating_add(offer.size);
        if free < needed {
            return Err(OfferRefusal::NotNow(format!(
                "the hub's disk is nearly full ({} MiB free, {} MiB kept for its records); try later",
                free >> 20,
                self.settings.min_free_disk_bytes >> 20
            )));
        }
        if offer.label != grassroots_wire::referral::REFERRAL_LABEL {
            self.charge(site, offer, now)?;
        }
        *in_flight = in_flight.saturating_add(offer.size);
        Ok(Reservation {
            quotas: self,
            bytes: offer.size,
        })
    }

    /// Counts `offer` against the site's day.
    fn charge(
        &self,
        site: &str,
        offer: &TransferOffer,
        now: OffsetDateTime,
    ) -> Result<(), OfferRefusal> {
        let mut days = self.days.lock().unwrap_or_else(|p| p.into_inner());
        let today = days.entry(site.to_string()).or_default();
        if today.day != Some(now.date()) {
            *today = SiteDay {
                day: Some(now.date()),
                ..SiteDay::default()
            };
        }
        if today.counted.get(&offer.id) == Some(&offer.size) {
            return Ok(());
        }
        let charge = offer.size.max(MIN_CHARGE);
        if today.bytes.saturating_add(charge) > self.settings.site_daily_bytes {
            return Err(OfferRefusal::NotNow(format!(
                "this site sent {} MiB today, its daily allowance is {} MiB; the rest waits for tomorrow (UTC)",
                today.bytes >> 20,
                self.settings.site_daily_bytes >> 20
            )));
        }
        today.bytes += charge;
        if today.counted.len() < MAX_COUNTED {
            today.counted.insert(offer.id, offer.size);
        }
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
        assert!(quotas.admit("a", &update, dir.path(), now).is_ok());
        assert!(
            quotas.admit("a", &update, dir.path(), now).is_ok(),
            "a resume"
        );
        assert!(matches!(
            quotas.admit("a", &offer("round-update", 200_000, 3), dir.path(), now),
            Err(OfferRefusal::NotNow(_))
        ));
        // The same id offered again at another size is charged again, not taken as a resume.
        let mut grown = offer("round-update", 1000, 5);
        assert!(quotas.admit("c", &grown, dir.path(), now).is_ok());
        grown.size = 700_000;
        assert!(matches!(
            quotas.admit("c", &grown, dir.path(), now),
            Err(OfferRefusal::NotNow(_))
        ));
        // Referrals never wait for the day's allowance.
        assert!(quotas
            .admit("a", &offer("referral", 1000, 6), dir.path(), now)
            .is_ok());
        assert!(
            quotas
                .admit("b", &offer("round-update", 200_000, 3), dir.path(), now)
                .is_ok(),
            "per site"
        );
        let tomorrow = now + time::Duration::days(1);
        assert!(quotas
            .admit(
                "a",
                &offer("round-update", 200_000, 3),
                dir.path(),
                tomorrow
            )
            .is_ok());
        // Offers in flight count against the disk: with room for one, the second waits.
        let free = fs2::available_space(dir.path()).unwrap();
        let tight = Quotas::new(QuotaSettings {
            min_free_disk_bytes: free - 300_000,
            ..QuotaSettings::default()
        });
        let first = tight.admit("a", &offer("round-update", 200_000, 7), dir.path(), now);
        assert!(first.is_ok());
        assert!(matches!(
            tight.admit("b", &offer("round-update", 200_000, 8), dir.path(), now),
            Err(OfferRefusal::NotNow(reason)) if reason.contains("disk")
        ));
        drop(first);
        assert!(tight
            .admit("b", &offer("round-update", 200_000, 8), dir.path(), now)
            .is_ok());
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
