//! Regional coverage: the sites' daily figures, kept one row per site and day, and summed over
//! the fixed periods health authorities look at.
//!
//! Edges send [`CoverageReport`]s (counts only; see `grassroots_wire::coverage`). A report's
//! days replace the stored ones (late corrections), so an edge that resends a day — after a
//! week offline, or every hour for the last weeks — never leaves two rows for it. Periods are
//! fixed (day, ISO week, month, quarter, year): free date ranges would let two totals be
//! subtracted to recover a suppressed count. Everything shown goes through
//! [`crate::suppression`].

use std::collections::{BTreeMap, HashMap};
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex};

use grassroots_store::{Store, Table};
use grassroots_wire::coverage::{
    day_string, parse_day, turnaround_quantiles, CoverageDay, CoverageReport,
};
use serde::{Deserialize, Serialize};
use time::{Date, OffsetDateTime};

use crate::coverage_rollup::{Rollups, Summary};
use crate::suppression::{suppress, Cell, Constraint};
use crate::{HubError, HubState};

/// One site's day as stored.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StoredDay {
    pub site: String,
    pub day: CoverageDay,
    #[serde(with = "time::serde::rfc3339")]
    pub received_at: OffsetDateTime,
}

pub struct Coverage {
    days: Table<StoredDay>,
    rollups: Rollups,
    /// One report stored at a time (a site's pending mark and rollups are rewritten whole).
    writing: Mutex<()>,
    cache: Mutex<SolvedCache>,
}

/// Solved tables by period start, with a fingerprint of the sites and regions they were solved
/// for, and each period's generation: a report bumps the periods it touched, and a table solved
/// while a report changed its period is not kept.
#[derive(Default)]
struct SolvedCache {
    tables: HashMap<(Period, Date), Solved>,
    generations: HashMap<(Period, Date), u64>,
}

/// A solved table and the fingerprint of the sites and regions it was solved for.
type Solved = (u64, Arc<CoverageTable>);

/// Most site rows kept in solved tables (about 1 kB each: 2,000 sites' tables cost ~2 MB, so
/// this keeps some 30 of them, a dashboard's worth of periods and trends).
const SOLVED_CACHED_ROWS: usize = 60_000;

pub use crate::coverage_period::Period;

/// The counted columns, in table order: name, and how to read it from a day.
/// Reads one count from a day.
pub type Column = (&'static str, fn(&CoverageDay) -> u64);

pub const COLUMNS: [Column; 14] = [
    ("slides_imported", |d| d.slides_imported),
    ("slides_screened", |d| d.slides_screened),
    ("suspicious", |d| d.triage.suspicious),
    ("likely_benign", |d| d.triage.likely_benign),
    ("needs_rescan", |d| d.triage.needs_rescan),
    ("qc_no_tissue", |d| d.qc_reasons.no_tissue),
    ("qc_blur", |d| d.qc_reasons.blur),
    ("qc_pen", |d| d.qc_reasons.pen),
    ("qc_fold", |d| d.qc_reasons.fold),
    ("qc_exposure", |d| d.qc_reasons.exposure),
    ("signed_off", |d| d.signed_off),
    ("referred", |d| d.referred),
    ("answered", |d| d.answered),
    ("rounds_trained", |d| d.rounds_trained),
];
const SCREENED: usize = 1;
const TRIAGE: [usize; 3] = [2, 3, 4];
const NEEDS_RESCAN: usize = 4;
const REFERRED: usize = 11;
const ANSWERED: usize = 12;

/// A row's counts in [`COLUMNS`] order, serialised as a map from column name to count (a
/// vector in memory: a cached table of 2,000 sites holds 28,000 of them).
#[derive(Debug, Clone, PartialEq)]
pub struct Counts(pub Vec<Cell>);

impl Counts {
    /// The count of the column named `name`.
    pub fn get(&self, name: &str) -> Option<&Cell> {
        COLUMNS
            .iter()
            .position(|(column, _)| *column == name)
            .and_then(|index| self.0.get(index))
    }
}

impl Serialize for Counts {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = serializer.serialize_map(Some(self.0.len()))?;
        for ((name, _), cell) in COLUMNS.iter().zip(&self.0) {
            map.serialize_entry(name, cell)?;
        }
        map.end()
    }
}

/// As serialised: an object with one [`Cell`] per column of [`COLUMNS`].
impl utoipa::PartialSchema for Counts {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::{ObjectBuilder, Ref, Type};
        use utoipa::ToSchema;
        let cell = Ref::from_schema_name(Cell::name());
        COLUMNS
            .iter()
            .fold(
                ObjectBuilder::new()
                    .schema_type(Type::Object)
                    .description(Some("The row's counts by column, each shown or suppressed")),
                |object, (name, _)| object.property(*name, cell.clone()).required(*name),
            )
            .into()
    }
}

impl utoipa::ToSchema for Counts {
    fn schemas(
        schemas: &mut Vec<(
            String,
            utoipa::openapi::RefOr<utoipa::openapi::schema::Schema>,
        )>,
    ) {
        schemas.push((
            <Cell as utoipa::ToSchema>::name().into(),
            <Cell as utoipa::PartialSchema>::schema(),
        ));
        <Cell as utoipa::ToSchema>::schemas(schemas);
    }
}

/// One row of the coverage table (a site, or the total), suppressed.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct CoverageRow {
    pub site: String,
    pub name: Option<String>,
    /// Days of the period the site reported.
    pub days_reported: u64,
    pub counts: Counts,
    /// Needs-rescan share of screened slides (hidden with either count).
    pub qc_failure_rate: Option<f64>,
    /// Referred share of screened slides.
    pub referral_rate: Option<f64>,
    /// Turnaround median and p90, hours (bucket upper bounds; hidden when answers are).
    pub turnaround_median_hours: Option<f64>,
    pub turnaround_p90_hours: Option<f64>,
    /// The model reported on the last day with one.
    pub model: Option<String>,
    pub disk_bytes: Option<u64>,
    /// Mean screening time per screened slide, seconds (hidden with the screened count).
    pub screening_seconds_per_slide: Option<f64>,
    /// Free share of the site's data disk on its latest day (hidden with disk use).
    pub disk_free_share: Option<f64>,
    /// The same, for the hub's own disk alert only (never shown: from an unfinished period,
    /// polled daily, it would tell the day's growth).
    #[serde(skip)]
    pub disk_free_share_now: Option<f64>,
    /// Share of the reported days' time the edge held a session with the hub (of the days
    /// that recorded it).
    pub linked_share: Option<f64>,
    /// Days of invented demo figures in the row.
    pub demo_days: u64,
}

/// The table for one period.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct CoverageTable {
    pub period: Period,
    pub first_day: String,
    pub last_day: String,
    pub rows: Vec<CoverageRow>,
    /// Totals of each region (named `PROVINCE/PREFECTURE/...`).
    pub groups: Vec<CoverageRow>,
    pub total: CoverageRow,
}

impl Coverage {
    pub fn open(store: &Store) -> Result<Self, HubError> {
        let days = store.table("coverage_days")?;
        let rollups = Rollups::open(store, &days)?;
        Ok(Self {
            days,
            rollups,
            writing: Mutex::new(()),
            cache: Mutex::new(SolvedCache::default()),
        })
    }

    /// Stores a site's report: each day replaces the site's stored row for it, and the
    /// rollups of every period holding one are rewritten. Durable on return.
    pub fn record(&self, site: &str, report: &CoverageReport) -> Result<usize, HubError> {
        let _writing = self.writing.lock().unwrap_or_else(|p| p.into_inner());
        let now = OffsetDateTime::now_utc();
        let days: Vec<(Date, &CoverageDay)> = report
            .days
            .iter()
            .filter_map(|day| parse_day(&day.day).ok().map(|date| (date, day)))
            .collect();
        let touched: Vec<Date> = days.iter().map(|(date, _)| *date).collect();
        self.rollups.mark_pending(site, &touched)?;
        for (_, day) in &days {
            let row = StoredDay {
                site: site.to_string(),
                day: (*day).clone(),
                received_at: now,
            };
            self.days.put(&format!("{site}/{}", day.day), &row)?;
        }
        self.days.flush()?;
        let periods = self.rollups.rewrite(&self.days, site, &touched)?;
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        for period in periods {
            cache.tables.remove(&period);
            *cache.generations.entry(period).or_default() += 1;
        }
        Ok(touched.len())
    }

    /// Every stored day of `site` from `first` to `last`.
    pub fn site_days(
        &self,
        site: &str,
        first: Date,
        last: Date,
    ) -> Result<Vec<CoverageDay>, HubError> {
        Ok(self
            .days
            .range(
                &format!("{site}/{}", day_string(first)),
                &format!("{site}/{}", day_string(last)),
            )?
            .into_iter()
            .map(|(_, row)| row.day)
            .collect())
    }

    /// The suppressed table of `period` holding `day`, for `sites` (id, name) and any other site
    /// with rows, with a total row per named group of sites (regions). Suppression is solved
    /// once over every site, group and the grand total together, so each view of the same
    /// period (all sites, or one region) hides the same cells: no view can be subtracted from
    /// another to uncover one. Solved tables are kept until a report touches their period.
    pub fn table(
        &self,
        period: Period,
        day: Date,
        sites: &[(String, Option<String>)],
        groups: &[(String, Vec<String>)],
    ) -> Result<Arc<CoverageTable>, HubError> {
        let (first, _) = period.bounds(day);
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        (sites, groups).hash(&mut hasher);
        let fingerprint = hasher.finish();
        let key = (period, first);
        let (cached, generation) = {
            let cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
            let cached = cache
                .tables
                .get(&key)
                .filter(|(f, _)| *f == fingerprint)
                .map(|(_, table)| table.clone());
            (cached, cache.generations.get(&key).copied().unwrap_or(0))
        };
        if let Some(table) = cached {
            return Ok(table);
        }
        let table = Arc::new(self.solve(period, day, sites, groups)?);
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        if cache.generations.get(&key).copied().unwrap_or(0) == generation {
            let rows = |t: &CoverageTable| t.rows.len() + t.groups.len() + 1;
            let held: usize = cache.tables.values().map(|(_, t)| rows(t)).sum();
            if held + rows(&table) > SOLVED_CACHED_ROWS {
                cache.tables.clear();
            }
            cache.tables.insert(key, (fingerprint, table.clone()));
        }
        Ok(table)
    }

    fn solve(
        &self,
        period: Period,
        day: Date,
        sites: &[(String, Option<String>)],
        groups: &[(String, Vec<String>)],
    ) -> Result<CoverageTable, HubError> {
        let (first, last) = period.bounds(day);
        let mut by_site: BTreeMap<String, Summary> = sites
            .iter()
            .map(|(site, _)| (site.clone(), Summary::empty()))
            .collect();
        for (site, summary) in self.rollups.period(period, first)? {
            by_site.insert(site, summary);
        }
        let names: BTreeMap<&str, &Option<String>> =
            sites.iter().map(|(s, n)| (s.as_str(), n)).collect();
        let site_ids: Vec<&String> = by_site.keys().collect();
        let index_of: HashMap<&str, usize> = site_ids
            .iter()
            .enumerate()
            .map(|(index, id)| (id.as_str(), index))
            .collect();
        // Rows: the sites, then one per group, then the grand total.
        let mut members: Vec<Vec<usize>> = groups
            .iter()
            .map(|(_, group)| {
                let mut rows: Vec<usize> = group
                    .iter()
                    .filter_map(|id| index_of.get(id.as_str()).copied())
                    .collect();
                rows.sort_unstable();
                rows.dedup();
                rows
            })
            .collect();
        members.push((0..site_ids.len()).collect());
        let mut summaries: Vec<Summary> = by_site.values().cloned().collect();
        for parts in &members {
            let mut sum = Summary::empty();
            for index in parts {
                sum.add(&summaries[*index]);
            }
            summaries.push(sum);
        }
        let values: Vec<Vec<u64>> = summaries.iter().map(|s| s.counts.clone()).collect();
        let mut constraints = Vec::new();
        for (offset, parts) in members.iter().enumerate() {
            let total_row = site_ids.len() + offset;
            for column in 0..COLUMNS.len() {
                constraints.push(Constraint {
                    parts: parts.iter().map(|r| (*r, column)).collect(),
                    total: (total_row, column),
                });
            }
        }
        constraints.extend((0..values.len()).map(|r| Constraint {
            parts: TRIAGE.iter().map(|c| (r, *c)).collect(),
            total: (r, SCREENED),
        }));
        let cells = suppress(&values, &constraints);
        // Disk use only for whole months (or longer) that have ended: day to day, or read
        // every day of a month under way, it grows by the slides imported and would tell them.
        let today = grassroots_wire::coverage::local_day(
            OffsetDateTime::now_utc(),
            grassroots_wire::coverage::DEFAULT_OFFSET_HOURS,
        );
        let with_disk = !matches!(period, Period::Day | Period::Week) && last < today;
        let make = |index: usize, site: &str, name: Option<String>| {
            let mut row = row(site, name, &summaries[index], &cells[index]);
            if !with_disk {
                // Day to day, disk use grows by the slides imported: it would tell them.
                row.disk_bytes = None;
                row.disk_free_share = None;
            }
            row
        };
        let rows = site_ids
            .iter()
            .enumerate()
            .map(|(index, site)| {
                let name = names.get(site.as_str()).and_then(|n| (*n).clone());
                make(index, site, name)
            })
            .collect();
        let group_rows = groups
            .iter()
            .enumerate()
            .map(|(offset, (name, _))| make(site_ids.len() + offset, name, None))
            .collect();
        let total = make(values.len() - 1, "all sites", None);
        Ok(CoverageTable {
            period,
            first_day: day_string(first),
            last_day: day_string(last),
            rows,
            groups: group_rows,
            total,
        })
    }
}

fn row(site: &str, name: Option<String>, summary: &Summary, cells: &[Cell]) -> CoverageRow {
    // Quantiles of fewer answers than the threshold could describe one case.
    let quantiles = cells[ANSWERED]
        .value()
        .filter(|n| *n > 0)
        .and_then(|_| turnaround_quantiles(&summary.turnaround_buckets));
    CoverageRow {
        site: site.to_string(),
        name,
        days_reported: summary.days_reported,
        counts: Counts(cells.to_vec()),
        qc_failure_rate: crate::suppression::rate(cells[NEEDS_RESCAN], cells[SCREENED]),
        referral_rate: crate::suppression::rate(cells[REFERRED], cells[SCREENED]),
        turnaround_median_hours: quantiles.map(|q| q.0),
        turnaround_p90_hours: quantiles.map(|q| q.1),
        model: summary.model.as_ref().map(|m| m.1.clone()),
        screening_seconds_per_slide: cells[SCREENED]
            .value()
            .filter(|n| *n > 0)
            .map(|n| summary.screening_seconds / n as f64),
        disk_bytes: summary.disk_bytes.as_ref().map(|d| d.1),
        disk_free_share: summary
            .disk_space
            .as_ref()
            .filter(|d| d.2 > 0)
            .map(|d| d.1 as f64 / d.2 as f64),
        disk_free_share_now: summary
            .disk_space
            .as_ref()
            .filter(|d| d.2 > 0)
            .map(|d| d.1 as f64 / d.2 as f64),
        linked_share: (summary.uptime_seconds > 0)
            .then(|| summary.linked_seconds as f64 / summary.uptime_seconds as f64),
        demo_days: summary.demo_days,
    }
}

/// Takes a site's coverage report from a received blob: bounded, validated (no day in the
/// site's future, no absurd count, no field the format lacks), then stored. A refused report
/// is logged with its reason and changes nothing stored.
pub(crate) async fn take_report(state: &Arc<HubState>, site: &str, path: &std::path::Path) {
    let Some(bytes) = crate::link::read_bounded(
        site,
        path,
        grassroots_wire::coverage::MAX_COVERAGE_BYTES,
        "coverage report",
    )
    .await
    else {
        return;
    };
    let now = OffsetDateTime::now_utc();
    let report = match CoverageReport::from_json(&bytes) {
        Ok(report) => report,
        Err(error) => {
            tracing::warn!(%site, %error, "coverage report refused");
            return;
        }
    };
    let (days, refused) = report.checked_days(now);
    for error in &refused {
        tracing::warn!(%site, %error, "coverage day refused");
    }
    let kept = CoverageReport { days, ..report };
    let stored = {
        let state = state.clone();
        let site = site.to_string();
        tokio::task::spawn_blocking(move || state.coverage.record(&site, &kept)).await
    };
    let stored = stored
        .map_err(|e| HubError::Config(e.to_string()))
        .and_then(|r| r);
    match stored {
        Ok(days) => tracing::info!(%site, days, refused = refused.len(), "coverage report stored"),
        Err(error) => tracing::error!(%site, %error, "cannot store a coverage report"),
    }
}
