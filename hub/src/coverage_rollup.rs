//! Stored rollups of the sites' daily coverage rows: one summary per period (day, week, month,
//! quarter, year), period start and site, kept up to date as reports arrive.
//!
//! Why: a network of 2,000 sites holds over a million daily rows after two years; summing them
//! on every request would make the dashboard slow and the hub's memory follow the history. A
//! table is one prefix scan of `{period}/{first day}/` here, a row per site. A report rewrites
//! the rollups of every period its days fall in, recomputed from the site's stored days (never
//! adjusted by difference), so a late correction or a resent day cannot count twice. A report's
//! sites are marked pending until their rollups are on disk; at start the hub recomputes those
//! of a report a crash interrupted.

use grassroots_store::{Store, Table};
use grassroots_wire::coverage::{day_string, parse_day, CoverageDay, TURNAROUND_BUCKET_HOURS};
use serde::{Deserialize, Serialize};
use time::Date;

use crate::coverage::{Period, StoredDay, COLUMNS};
use crate::HubError;

/// Bumped when [`Summary`] changes meaning: the hub then rebuilds every rollup at start.
const ROLLUP_VERSION: u32 = 2;
const VERSION_KEY: &str = "rollup-version";

/// A site's figures over one period (or a group's, summed). Stored with one-letter field names:
/// a network of 2,000 sites keeps some 1.7 million of them after two years, and every cold
/// table reads 2,000.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    #[serde(rename = "d")]
    pub days_reported: u64,
    /// In [`COLUMNS`] order.
    #[serde(rename = "c")]
    pub counts: Vec<u64>,
    #[serde(rename = "t")]
    pub turnaround_buckets: Vec<u64>,
    #[serde(rename = "s")]
    pub screening_seconds: f64,
    #[serde(rename = "u")]
    pub uptime_seconds: u64,
    #[serde(rename = "l")]
    pub linked_seconds: u64,
    /// Days that recorded uptime (the others say nothing about it).
    #[serde(rename = "du")]
    pub days_with_uptime: u64,
    /// The latest day's model and disk use: (day, value).
    #[serde(rename = "m", default, skip_serializing_if = "Option::is_none")]
    pub model: Option<(String, String)>,
    #[serde(rename = "b", default, skip_serializing_if = "Option::is_none")]
    pub disk_bytes: Option<(String, u64)>,
    /// The latest day's free and total bytes of the edge's data disk.
    #[serde(rename = "f", default, skip_serializing_if = "Option::is_none")]
    pub disk_space: Option<(String, u64, u64)>,
    /// Days of invented demo figures.
    #[serde(rename = "x", default, skip_serializing_if = "is_zero")]
    pub demo_days: u64,
}

fn is_zero(value: &u64) -> bool {
    *value == 0
}

impl Summary {
    pub fn empty() -> Self {
        Self {
            counts: vec![0; COLUMNS.len()],
            turnaround_buckets: vec![0; TURNAROUND_BUCKET_HOURS.len() + 1],
            ..Self::default()
        }
    }

    pub fn of_day(day: &CoverageDay) -> Self {
        Self {
            days_reported: 1,
            counts: COLUMNS.iter().map(|(_, read)| read(day)).collect(),
            turnaround_buckets: day.turnaround_buckets.clone(),
            screening_seconds: day.screening_seconds,
            uptime_seconds: day.uptime_seconds.unwrap_or(0),
            linked_seconds: day.linked_seconds.unwrap_or(0),
            days_with_uptime: u64::from(day.uptime_seconds.is_some()),
            model: day.model.clone().map(|m| (day.day.clone(), m)),
            disk_bytes: day.disk_bytes.map(|b| (day.day.clone(), b)),
            disk_space: day
                .disk_free_bytes
                .zip(day.disk_total_bytes)
                .map(|(free, total)| (day.day.clone(), free, total)),
            demo_days: u64::from(day.demo),
        }
    }

    /// Adds `other` (of another day or site): counts add up, the latest model and disk win.
    pub fn add(&mut self, other: &Summary) {
        fn add_all(into: &mut Vec<u64>, from: &[u64]) {
            if into.len() < from.len() {
                into.resize(from.len(), 0);
            }
            for (sum, value) in into.iter_mut().zip(from) {
                *sum = sum.saturating_add(*value);
            }
        }
        self.days_reported += other.days_reported;
        add_all(&mut self.counts, &other.counts);
        add_all(&mut self.turnaround_buckets, &other.turnaround_buckets);
        self.screening_seconds += other.screening_seconds;
        self.uptime_seconds += other.uptime_seconds;
        self.linked_seconds += other.linked_seconds;
        self.days_with_uptime += other.days_with_uptime;
        self.demo_days += other.demo_days;
        if other.model.as_ref().map(|m| &m.0) > self.model.as_ref().map(|m| &m.0) {
            self.model.clone_from(&other.model);
        }
        if other.disk_bytes.as_ref().map(|d| &d.0) > self.disk_bytes.as_ref().map(|d| &d.0) {
            self.disk_bytes.clone_from(&other.disk_bytes);
        }
        if other.disk_space.as_ref().map(|d| &d.0) > self.disk_space.as_ref().map(|d| &d.0) {
            self.disk_space.clone_from(&other.disk_space);
        }
    }
}

/// The rollup tables.
pub struct Rollups {
    summaries: Table<Summary>,
    /// `rollup-version`, and `pending/{site}` → the days whose rollups are being rewritten.
    meta: Table<serde_json::Value>,
}

fn key(period: Period, first: Date, site: &str) -> String {
    format!("{}/{}/{site}", period.name(), day_string(first))
}

impl Rollups {
    /// Opens the rollups, rebuilding them from `days` when their format changed or finishing
    /// what a crash interrupted.
    pub fn open(store: &Store, days: &Table<StoredDay>) -> Result<Self, HubError> {
        let rollups = Self {
            summaries: store.table("coverage_rollups")?,
            meta: store.table("coverage_meta")?,
        };
        let version = rollups.meta.get(VERSION_KEY)?.and_then(|v| v.as_u64());
        if version != Some(u64::from(ROLLUP_VERSION)) {
            rollups.rebuild(days)?;
        }
        for (key, value) in rollups.meta.scan_prefix("pending/")? {
            let site = key.trim_start_matches("pending/").to_string();
            let touched: Vec<Date> = value
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|d| d.as_str().and_then(|d| parse_day(d).ok()))
                .collect();
            tracing::info!(%site, days = touched.len(), "finishing coverage rollups a stop interrupted");
            rollups.rewrite(days, &site, &touched)?;
        }
        Ok(rollups)
    }

    fn rebuild(&self, days: &Table<StoredDay>) -> Result<(), HubError> {
        for (key, _) in self.summaries.entries()? {
            self.summaries.remove(&key)?;
        }
        // Keys only (`site/day`): two years of 2,000 sites is over a million rows.
        let mut by_site: std::collections::BTreeMap<String, Vec<Date>> = Default::default();
        for key in days.keys()? {
            let Some((site, day)) = key.rsplit_once('/') else {
                continue;
            };
            if let Ok(day) = parse_day(day) {
                by_site.entry(site.to_string()).or_default().push(day);
            }
        }
        for (site, touched) in &by_site {
            self.rewrite(days, site, touched)?;
        }
        self.meta
            .put_durable(VERSION_KEY, &serde_json::json!(ROLLUP_VERSION))?;
        tracing::info!(sites = by_site.len(), "coverage rollups rebuilt");
        Ok(())
    }

    /// Marks `site`'s rollups of `touched` days as being rewritten, durably, before its days
    /// are written: a hub stopped between the two finishes the rewrite at start.
    pub fn mark_pending(&self, site: &str, touched: &[Date]) -> Result<(), HubError> {
        let listed: Vec<String> = touched.iter().map(|d| day_string(*d)).collect();
        self.meta
            .put_durable(&format!("pending/{site}"), &serde_json::json!(listed))?;
        Ok(())
    }

    /// Rewrites `site`'s rollups of every period holding one of `touched`, from its stored
    /// days, and clears its pending mark; durable on return.
    pub fn rewrite(
        &self,
        days: &Table<StoredDay>,
        site: &str,
        touched: &[Date],
    ) -> Result<Vec<(Period, Date)>, HubError> {
        let pending = format!("pending/{site}");
        let mut periods: Vec<(Period, Date, Date)> = touched
            .iter()
            .flat_map(|day| {
                Period::ALL.into_iter().map(move |period| {
                    let (first, last) = period.bounds(*day);
                    (period, first, last)
                })
            })
            .collect();
        periods.sort_by_key(|(period, first, _)| (period.name(), *first));
        periods.dedup();
        for (period, first, last) in &periods {
            let rows = days.range(
                &format!("{site}/{}", day_string(*first)),
                &format!("{site}/{}", day_string(*last)),
            )?;
            let mut summary = Summary::empty();
            for (_, row) in &rows {
                summary.add(&Summary::of_day(&row.day));
            }
            let key = key(*period, *first, site);
            if rows.is_empty() {
                self.summaries.remove(&key)?;
            } else {
                self.summaries.put(&key, &summary)?;
            }
        }
        self.summaries.flush()?;
        self.meta.remove_durable(&pending)?;
        Ok(periods
            .into_iter()
            .map(|(p, first, _)| (p, first))
            .collect())
    }

    /// Every site's summary of the period starting on `first`.
    pub fn period(&self, period: Period, first: Date) -> Result<Vec<(String, Summary)>, HubError> {
        let prefix = format!("{}/{}/", period.name(), day_string(first));
        Ok(self
            .summaries
            .scan_prefix(&prefix)?
            .into_iter()
            .map(|(key, summary)| (key[prefix.len()..].to_string(), summary))
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn day(text: &str, imported: u64, model: Option<&str>) -> CoverageDay {
        let mut day = CoverageDay::empty(parse_day(text).unwrap());
        day.slides_imported = imported;
        day.model = model.map(String::from);
        day
    }

    #[test]
    fn a_resent_day_replaces_itself_in_every_period() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let days: Table<StoredDay> = store.table("coverage_days").unwrap();
        let rollups = Rollups::open(&store, &days).unwrap();
        let put = |d: CoverageDay| {
            let date = parse_day(&d.day).unwrap();
            days.put(
                &format!("a/{}", d.day),
                &StoredDay {
                    site: "a".into(),
                    day: d,
                    received_at: time::OffsetDateTime::now_utc(),
                },
            )
            .unwrap();
            rollups.rewrite(&days, "a", &[date]).unwrap();
        };
        put(day("2026-11-02", 3, Some("m 1")));
        put(day("2026-11-20", 4, Some("m 2")));
        put(day("2026-11-02", 10, None)); // a correction
        let month = rollups
            .period(Period::Month, parse_day("2026-11-01").unwrap())
            .unwrap();
        assert_eq!(month.len(), 1);
        assert_eq!(month[0].1.counts[0], 14);
        assert_eq!(month[0].1.days_reported, 2);
        assert_eq!(month[0].1.model.as_ref().unwrap().1, "m 2");
        let year = rollups
            .period(Period::Year, parse_day("2026-01-01").unwrap())
            .unwrap();
        assert_eq!(year[0].1.counts[0], 14);
        // Reopened with a stale format, the rollups are rebuilt to the same figures.
        rollups
            .meta
            .put(VERSION_KEY, &serde_json::json!(0))
            .unwrap();
        let reopened = Rollups::open(&store, &days).unwrap();
        assert_eq!(
            reopened
                .period(Period::Month, parse_day("2026-11-01").unwrap())
                .unwrap(),
            month
        );
    }
}
