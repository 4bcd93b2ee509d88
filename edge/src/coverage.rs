//! The edge's daily coverage figures for the hub's health-authority view.
//!
//! Counted from the edge's own records (slides, screening jobs, sign-offs, referrals and their
//! outbox entries, federated rounds), never kept as separate counters, so any day can be
//! recomputed and sent again: the hub keeps one row per site and day and a later report of a
//! day replaces the earlier. Every run sends the last [`WINDOW_DAYS`] days, so a week offline is
//! backfilled by the first report after the link returns, and late events (an answer arriving
//! for an old referral counts on the day it arrived) correct their day. Disk use and the active
//! model cannot be recomputed for the past, so each run records them for today
//! ([`SNAPSHOTS_TABLE`]) and past days report what was recorded then.
//!
//! **Privacy line**: what leaves is a [`CoverageReport`] — counts, seconds, bytes and a model
//! name — built here from records that hold names and case numbers; none of those fields exists
//! in the wire format (`deny_unknown_fields` at the hub).

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use grassroots_store::Table;
use grassroots_wire::coverage::{
    day_string, local_day, CoverageDay, CoverageReport, COVERAGE_LABEL,
};
use serde::{Deserialize, Serialize};
use time::{Date, OffsetDateTime};
use tokio::sync::watch;

use crate::outbox::OutboxState;
use crate::{EdgeError, EdgeState};

/// Days each report covers, ending today.
pub const WINDOW_DAYS: i64 = 35;

/// Table of what could not be recomputed later: disk use and model, per local day.
pub const SNAPSHOTS_TABLE: &str = "coverage_snapshots";

/// How often the edge samples its uptime and link for the day's figures.
const SAMPLE_EVERY: Duration = Duration::from_secs(60);

/// What a day's records cannot tell later, as the edge saw it that day: disk use and space,
/// the model, and the seconds it ran and held a session with the hub (sampled).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct DaySnapshot {
    pub disk_bytes: u64,
    pub model: Option<String>,
    #[serde(default)]
    pub disk_free_bytes: Option<u64>,
    #[serde(default)]
    pub disk_total_bytes: Option<u64>,
    #[serde(default)]
    pub uptime_seconds: u64,
    #[serde(default)]
    pub linked_seconds: u64,
}

/// The events a day's figures are counted from (times are UTC; days are local).
#[derive(Debug, Default)]
pub struct Events {
    pub imported: Vec<OffsetDateTime>,
    /// Finished screenings: when, how long, the triage class (`suspicious`, `likely-benign`,
    /// `needs-rescan`) and the quality-control codes.
    pub screened: Vec<(OffsetDateTime, f64, String, Vec<&'static str>)>,
    pub signed_off: Vec<OffsetDateTime>,
    pub referred: Vec<OffsetDateTime>,
    /// Answers arrived: when, and hours since the referral left the edge.
    pub answered: Vec<(OffsetDateTime, f64)>,
    pub rounds_trained: Vec<OffsetDateTime>,
}

/// The days from `first` to `today`, counted from `events` at `offset_hours`.
pub fn tally(
    events: &Events,
    snapshots: &BTreeMap<String, DaySnapshot>,
    offset_hours: i8,
    first: Date,
    today: Date,
) -> Vec<CoverageDay> {
    let mut days: BTreeMap<Date, CoverageDay> = BTreeMap::new();
    let mut day = first;
    while day <= today {
        days.insert(day, CoverageDay::empty(day));
        match day.next_day() {
            Some(next) => day = next,
            None => break,
        }
    }
    let day_of = |when: OffsetDateTime| local_day(when, offset_hours);
    for when in &events.imported {
        if let Some(day) = days.get_mut(&day_of(*when)) {
            day.slides_imported += 1;
        }
    }
    for (when, seconds, class, codes) in &events.screened {
        if let Some(day) = days.get_mut(&day_of(*when)) {
            day.slides_screened += 1;
            day.screening_seconds += seconds.max(0.0);
            match class.as_str() {
                "suspicious" => day.triage.suspicious += 1,
                "likely-benign" => day.triage.likely_benign += 1,
                "needs-rescan" => day.triage.needs_rescan += 1,
                _ => {}
            }
            for code in codes {
                let reasons = &mut day.qc_reasons;
                match *code {
                    "no-tissue" => reasons.no_tissue += 1,
                    "blur" => reasons.blur += 1,
                    // Inflicted-style strokes found by the tile model and real marker on
                    // the glass found on the overview are one reason to a health authority.
                    "pen" | "pen-mark" => reasons.pen += 1,
                    "fold" => reasons.fold += 1,
                    "exposure" => reasons.exposure += 1,
                    // A coverslip's edge has no reason of its own in the wire's counts (an
                    // old hub refuses unknown fields): the slide counts as a re-scan only.
                    _ => {}
                }
            }
        }
    }
    for when in &events.signed_off {
        if let Some(day) = days.get_mut(&day_of(*when)) {
            day.signed_off += 1;
        }
    }
    for when in &events.referred {
        if let Some(day) = days.get_mut(&day_of(*when)) {
            day.referred += 1;
        }
    }
    for (when, hours) in &events.answered {
        if let Some(day) = days.get_mut(&day_of(*when)) {
            day.answered += 1;
            day.turnaround_buckets[CoverageDay::bucket(*hours)] += 1;
        }
    }
    for when in &events.rounds_trained {
        if let Some(day) = days.get_mut(&day_of(*when)) {
            day.rounds_trained += 1;
        }
    }
    days.into_values()
        .map(|mut day| {
            if let Some(snapshot) = snapshots.get(&day.day) {
                day.disk_bytes = Some(snapshot.disk_bytes);
                day.model = snapshot.model.clone();
                day.disk_free_bytes = snapshot.disk_free_bytes;
                day.disk_total_bytes = snapshot.disk_total_bytes;
                if snapshot.uptime_seconds > 0 {
                    let uptime = snapshot.uptime_seconds.min(86_400);
                    day.uptime_seconds = Some(uptime);
                    day.linked_seconds = Some(snapshot.linked_seconds.min(uptime));
                }
            }
            day
        })
        .collect()
}

fn parse_time(text: &str) -> Option<OffsetDateTime> {
    OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339).ok()
}

/// Collects the events from the edge's records.
fn events(state: &EdgeState) -> Result<Events, EdgeError> {
    let mut events = Events {
        imported: state
            .slides
            .records()?
            .into_iter()
            .map(|s| s.imported_at)
            .collect(),
        ..Events::default()
    };
    for job in state.screening.jobs()? {
        let (Some(finished), Some(result)) = (job.finished_at, &job.result) else {
            continue;
        };
        let class = serde_json::to_value(result.triage.class)
            .ok()
            .and_then(|v| v.as_str().map(String::from))
            .unwrap_or_default();
        events
            .screened
            .push((finished, job.seconds, class, result.triage.qc_codes()));
    }
    events.signed_off = state
        .labels
        .signoffs()?
        .into_iter()
        .map(|(_, s)| s.at)
        .collect();
    let left: BTreeMap<String, OffsetDateTime> = state
        .outbox
        .statuses()?
        .into_iter()
        .filter_map(|s| s.entry.delivered_at.map(|at| (s.entry.id, at)))
        .collect();
    for local in state.referrals.list()? {
        let Some(referred) = parse_time(&local.referral.referred_at) else {
            continue;
        };
        events.referred.push(referred);
        if let Some(arrived) = local.report_received_at {
            let sent = left.get(&local.outbox_id).copied().unwrap_or(referred);
            let hours = (arrived - sent).as_seconds_f64().max(0.0) / 3600.0;
            events.answered.push((arrived, hours));
        }
    }
    events.rounds_trained = state
        .federated
        .records()?
        .into_iter()
        .filter(|r| {
            matches!(
                r.state,
                crate::federated::Participation::Trained | crate::federated::Participation::Sent
            )
        })
        .filter_map(|r| r.finished_at)
        .collect();
    Ok(events)
}

/// Bytes of every file under `dir`.
fn disk_use(dir: &Path) -> u64 {
    let mut total = 0;
    let mut pending = vec![dir.to_path_buf()];
    while let Some(dir) = pending.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            match entry.metadata() {
                Ok(meta) if meta.is_dir() => pending.push(entry.path()),
                Ok(meta) => total += meta.len(),
                Err(_) => {}
            }
        }
    }
    total
}

/// Records today's disk use and model, and computes the report of the last days.
pub(crate) async fn compute(
    state: &Arc<EdgeState>,
    now: OffsetDateTime,
) -> Result<CoverageReport, EdgeError> {
    let offset = state.config.coverage_offset_hours;
    let today = local_day(now, offset);
    let snapshots: Table<DaySnapshot> = state.store.table(SNAPSHOTS_TABLE)?;
    let dir = state.config.data_dir.clone();
    let disk_bytes = tokio::task::spawn_blocking(move || disk_use(&dir))
        .await
        .unwrap_or(0);
    let model = state
        .screening
        .model
        .status_report()
        .active
        // Bounded and printable, as the hub requires of every day it keeps.
        .map(|m| {
            format!("{} {}", m.name, m.version)
                .chars()
                .filter(|c| !c.is_control())
                .take(120)
                .collect::<String>()
        });
    let (free, total) = {
        let dir = state.config.data_dir.clone();
        tokio::task::spawn_blocking(move || {
            (fs2::available_space(&dir).ok(), fs2::total_space(&dir).ok())
        })
        .await
        .unwrap_or((None, None))
    };
    snapshots.update(&day_string(today), |old| {
        Some(DaySnapshot {
            disk_bytes,
            model: model.clone(),
            disk_free_bytes: free,
            disk_total_bytes: total.filter(|t| *t >= free.unwrap_or(0)),
            ..old.unwrap_or_default()
        })
    })?;
    let snapshots: BTreeMap<String, DaySnapshot> = snapshots.entries()?.into_iter().collect();
    let events = {
        let state = state.clone();
        tokio::task::spawn_blocking(move || events(&state))
            .await
            .map_err(|e| EdgeError::Config(format!("coverage: {e}")))??
    };
    // The window reaches back over any invented demo history, so all of it is shown.
    let window = WINDOW_DAYS.max(i64::from(state.config.demo_history_days) + 1);
    let first = today
        .checked_sub(time::Duration::days(window - 1))
        .unwrap_or(today);
    let mut days = tally(&events, &snapshots, offset, first, today);
    crate::coverage_demo::add_history(state, &mut days)?;
    // A day the hub would refuse is left out here, with the reason, so it costs only itself.
    let days = days
        .into_iter()
        .filter(|day| match day.validate(today) {
            Ok(_) => true,
            Err(error) => {
                tracing::warn!(day = %day.day, %error, "coverage day not sent");
                false
            }
        })
        .collect();
    Ok(CoverageReport {
        offset_hours: offset,
        computed_at: now
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default(),
        days,
    })
}

/// Queues a report for the hub, unless one is still waiting in the outbox (it will go when the
/// link returns, and the next run sends fresher figures).
async fn send(state: &Arc<EdgeState>) -> Result<(), EdgeError> {
    let waiting = state
        .outbox
        .statuses()?
        .iter()
        .any(|s| s.entry.label == COVERAGE_LABEL && s.entry.state == OutboxState::Pending);
    if waiting {
        return Ok(());
    }
    let report = compute(state, OffsetDateTime::now_utc()).await?;
    let bytes = serde_json::to_vec(&report).map_err(|e| EdgeError::Config(e.to_string()))?;
    let path = state.config.data_dir.join("coverage/report.json");
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(crate::io_error(dir))?;
    }
    grassroots_store::durable::write_file(&path, &bytes).map_err(crate::io_error(&path))?;
    state.outbox.enqueue_file(&path, COVERAGE_LABEL).await?;
    Ok(())
}

/// Adds the time since the last sample to today's uptime (and link time, if the edge holds a
/// session with the hub). A gap longer than two samples (the edge was stopped) counts as one.
fn sample(state: &EdgeState, elapsed: Duration) -> Result<(), EdgeError> {
    let seconds = elapsed.min(SAMPLE_EVERY * 2).as_secs();
    let linked = state.link.connection.borrow().is_some();
    let today = local_day(
        OffsetDateTime::now_utc(),
        state.config.coverage_offset_hours,
    );
    let snapshots: Table<DaySnapshot> = state.store.table(SNAPSHOTS_TABLE)?;
    snapshots.update(&day_string(today), |old| {
        let mut snapshot = old.unwrap_or_default();
        snapshot.uptime_seconds = (snapshot.uptime_seconds + seconds).min(86_400);
        if linked {
            snapshot.linked_seconds =
                (snapshot.linked_seconds + seconds).min(snapshot.uptime_seconds);
        }
        Some(snapshot)
    })?;
    Ok(())
}

/// Sends a report shortly after start and then every `every`, and samples uptime and link every
/// [`SAMPLE_EVERY`], until shutdown.
pub(crate) async fn run(
    state: Arc<EdgeState>,
    every: Duration,
    mut shutdown: watch::Receiver<bool>,
) {
    if let Err(error) = crate::coverage_demo::invent_history(&state) {
        tracing::warn!(%error, "cannot invent the demo history");
    }
    let mut next_report = tokio::time::Instant::now() + Duration::from_secs(2);
    let mut last_sample = tokio::time::Instant::now();
    let mut sampling = tokio::time::interval(SAMPLE_EVERY.min(every));
    sampling.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tokio::time::sleep_until(next_report) => {
                if let Err(error) = send(&state).await {
                    tracing::warn!(%error, "cannot send the coverage report");
                }
                next_report = tokio::time::Instant::now() + every;
            }
            now = sampling.tick() => {
                if let Err(error) = sample(&state, now - last_sample) {
                    tracing::warn!(%error, "cannot record uptime");
                }
                last_sample = now;
            }
            _ = shutdown.changed() => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use grassroots_wire::coverage::parse_day;
    use time::macros::datetime;

    #[test]
    fn events_fall_on_the_sites_local_day() {
        let events = Events {
            // 23:30 UTC on the 28th is the 29th in Shanghai.
            imported: vec![
                datetime!(2026-11-28 23:30 UTC),
                datetime!(2026-11-29 10:00 UTC),
            ],
            screened: vec![
                (
                    datetime!(2026-11-29 01:00 UTC),
                    40.0,
                    "suspicious".into(),
                    vec![],
                ),
                (
                    datetime!(2026-11-29 02:00 UTC),
                    30.0,
                    "needs-rescan".into(),
                    vec!["blur", "pen"],
                ),
                (
                    datetime!(2026-11-29 04:00 UTC),
                    20.0,
                    "needs-rescan".into(),
                    vec!["pen-mark"],
                ),
            ],
            referred: vec![datetime!(2026-11-29 03:00 UTC)],
            answered: vec![(datetime!(2026-11-30 03:00 UTC), 24.0)],
            ..Events::default()
        };
        let days = tally(
            &events,
            &BTreeMap::new(),
            8,
            parse_day("2026-11-28").unwrap(),
            parse_day("2026-11-30").unwrap(),
        );
        assert_eq!(days.len(), 3);
        assert_eq!(days[0].slides_imported, 0);
        assert_eq!(days[1].slides_imported, 2);
        assert_eq!(days[1].slides_screened, 3);
        assert_eq!(days[1].triage.needs_rescan, 2);
        assert_eq!(days[1].qc_reasons.pen, 2, "a real pen mark counts as pen");
        assert_eq!(days[1].screening_seconds, 90.0);
        assert_eq!(days[1].referred, 1);
        assert_eq!(days[2].answered, 1);
        assert_eq!(days[2].turnaround_buckets[CoverageDay::bucket(24.0)], 1);
        let today = parse_day("2026-11-30").unwrap();
        for day in &days {
            day.validate(today).unwrap();
        }
    }
}
