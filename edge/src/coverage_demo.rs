//! Invented coverage history for demonstrations (`grassroots edge --demo-history-days N`), so
//! that a new demo's dashboard has weeks of trends to show.
//!
//! Why a table and not fake records: the invented days must never pass for real screening. They
//! are kept apart from the edge's records (no slide, job or referral is invented), added to the
//! days the edge reports, and every such day carries `demo: true` on the wire, so the hub marks
//! every table, chart and export that holds one. Invented once, on first start, from a seed of
//! the site's id: the same site tells the same story after a restart, and a resent day replaces
//! itself at the hub like any other.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use time::{Duration, OffsetDateTime, Weekday};

use grassroots_store::Table;
use grassroots_wire::coverage::{local_day, CoverageDay};

use crate::{EdgeError, EdgeState};

/// The table of invented days, by day.
pub const DEMO_TABLE: &str = "coverage_demo";

/// Invents the history once (a no-op when it exists or none is asked for).
pub(crate) fn invent_history(state: &EdgeState) -> Result<(), EdgeError> {
    let days = state.config.demo_history_days;
    if days == 0 {
        return Ok(());
    }
    let table: Table<CoverageDay> = state.store.table(DEMO_TABLE)?;
    if !table.is_empty() {
        return Ok(());
    }
    let today = local_day(
        OffsetDateTime::now_utc(),
        state.config.coverage_offset_hours,
    );
    let first = today
        .checked_sub(Duration::days(i64::from(days)))
        .unwrap_or(today);
    for day in invent_days(state.kit.site_id.as_str(), first, i64::from(days)) {
        table.put(&day.day, &day)?;
    }
    table.flush()?;
    tracing::info!(
        days,
        "invented a demo coverage history (marked as demo at the hub)"
    );
    Ok(())
}

/// `count` invented days from `first`, the same for the same site (also the history
/// `grassroots bench coverage` fills its hub with).
pub fn invent_days(site: &str, first: time::Date, count: i64) -> Vec<CoverageDay> {
    let seed = blake3::hash(site.as_bytes());
    let mut rng = StdRng::from_seed(*seed.as_bytes());
    // Sites differ: a busier hospital, a noisier scanner.
    let busyness = rng.gen_range(6.0..22.0);
    let rescan_share = rng.gen_range(0.03..0.25);
    (0..count)
        .filter_map(|offset| first.checked_add(Duration::days(offset)))
        .map(|date| invent_day(&mut rng, date, busyness, rescan_share))
        .collect()
}

fn invent_day(rng: &mut StdRng, date: time::Date, busyness: f64, rescan_share: f64) -> CoverageDay {
    let mut day = CoverageDay::empty(date);
    let weekend = matches!(date.weekday(), Weekday::Saturday | Weekday::Sunday);
    let mean = if weekend { busyness * 0.2 } else { busyness };
    let screened = (mean * rng.gen_range(0.6..1.4)).round() as u64;
    day.slides_imported = screened + u64::from(rng.gen_bool(0.3));
    day.slides_screened = screened;
    let rescan = binomial(rng, screened, rescan_share);
    let suspicious = binomial(rng, screened - rescan, 0.12);
    day.triage.needs_rescan = rescan;
    day.triage.suspicious = suspicious;
    day.triage.likely_benign = screened - rescan - suspicious;
    for _ in 0..rescan {
        match rng.gen_range(0..10) {
            0..=3 => day.qc_reasons.blur += 1,
            4..=5 => day.qc_reasons.pen += 1,
            6..=7 => day.qc_reasons.fold += 1,
            8 => day.qc_reasons.exposure += 1,
            _ => day.qc_reasons.no_tissue += 1,
        }
    }
    day.screening_seconds = screened as f64 * rng.gen_range(35.0..60.0);
    day.signed_off = binomial(rng, screened, 0.85);
    day.referred = binomial(rng, suspicious, 0.8) + binomial(rng, screened, 0.02);
    day.answered = binomial(rng, day.referred, 0.9);
    for _ in 0..day.answered {
        let hours: f64 = rng.gen_range(0.5..60.0);
        day.turnaround_buckets[CoverageDay::bucket(hours)] += 1;
    }
    let uptime = if rng.gen_bool(0.05) {
        rng.gen_range(20_000..80_000)
    } else {
        86_400
    };
    day.uptime_seconds = Some(uptime);
    day.linked_seconds = Some((uptime as f64 * rng.gen_range(0.7..1.0)) as u64);
    day.demo = true;
    day
}

fn binomial(rng: &mut StdRng, trials: u64, p: f64) -> u64 {
    (0..trials)
        .filter(|_| rng.gen_bool(p.clamp(0.0, 1.0)))
        .count() as u64
}

/// Adds the invented figures to the reported days they fall on, and marks those days.
pub(crate) fn add_history(state: &EdgeState, days: &mut [CoverageDay]) -> Result<(), EdgeError> {
    if state.config.demo_history_days == 0 {
        return Ok(());
    }
    let table: Table<CoverageDay> = state.store.table(DEMO_TABLE)?;
    for day in days.iter_mut() {
        if let Some(invented) = table.get(&day.day)? {
            merge(day, &invented);
        }
    }
    Ok(())
}

/// `day` plus `invented`; uptime and link are the invented ones where the day has none.
fn merge(day: &mut CoverageDay, invented: &CoverageDay) {
    day.slides_imported += invented.slides_imported;
    day.slides_screened += invented.slides_screened;
    day.triage.suspicious += invented.triage.suspicious;
    day.triage.likely_benign += invented.triage.likely_benign;
    day.triage.needs_rescan += invented.triage.needs_rescan;
    day.qc_reasons.no_tissue += invented.qc_reasons.no_tissue;
    day.qc_reasons.blur += invented.qc_reasons.blur;
    day.qc_reasons.pen += invented.qc_reasons.pen;
    day.qc_reasons.fold += invented.qc_reasons.fold;
    day.qc_reasons.exposure += invented.qc_reasons.exposure;
    day.signed_off += invented.signed_off;
    day.referred += invented.referred;
    day.answered += invented.answered;
    for (sum, count) in day
        .turnaround_buckets
        .iter_mut()
        .zip(&invented.turnaround_buckets)
    {
        *sum += count;
    }
    day.screening_seconds += invented.screening_seconds;
    day.rounds_trained += invented.rounds_trained;
    if day.uptime_seconds.is_none() {
        day.uptime_seconds = invented.uptime_seconds;
        day.linked_seconds = invented.linked_seconds;
    }
    day.demo = true;
}

#[cfg(test)]
mod tests {
    use super::*;
    use grassroots_wire::coverage::parse_day;

    #[test]
    fn invented_days_are_valid_marked_and_repeatable() {
        let today = parse_day("2026-11-30").unwrap();
        let mut one = StdRng::from_seed([7; 32]);
        let mut two = StdRng::from_seed([7; 32]);
        for back in 1..60 {
            let date = today - Duration::days(back);
            let day = invent_day(&mut one, date, 20.0, 0.2);
            assert_eq!(day, invent_day(&mut two, date, 20.0, 0.2));
            assert!(day.demo);
            day.validate(today).unwrap();
            let mut real = CoverageDay::empty(date);
            real.slides_screened = 3;
            real.triage.suspicious = 3;
            merge(&mut real, &day);
            assert_eq!(real.slides_screened, day.slides_screened + 3);
            real.validate(today).unwrap();
        }
    }
}
