//! Daily coverage figures from an edge to the hub, for health authorities.
//!
//! An edge sends, per local calendar day, counts computed from its own records: what it imported,
//! screened and how it triaged (with the quality-control reasons), what clinicians signed off,
//! what it referred and got answered, how long answers took (as a histogram of fixed buckets, so
//! that medians and p90 over any period can be computed at the hub), screening time, disk use,
//! the model it ran and its part in learning. **Counts only**: no case, slide, patient or free
//! text can be expressed in a [`CoverageDay`] (`deny_unknown_fields`, numbers and a bounded model
//! name). Days travel in a [`CoverageReport`] as a content-addressed bulk transfer labelled
//! [`COVERAGE_LABEL`] through the edge's durable outbox, like the model status: an edge that was
//! offline sends the missed days when its link returns, and the hub keeps one row per site and
//! day, a later report of a day replacing the earlier (late corrections).

use serde::{Deserialize, Serialize};
use time::{Date, OffsetDateTime, UtcOffset};

use crate::WireError;

/// The transfer label of a [`CoverageReport`].
pub const COVERAGE_LABEL: &str = "coverage-days";
/// Most bytes of a report.
pub const MAX_COVERAGE_BYTES: usize = 256 * 1024;
/// Most days in one report (a site offline longer backfills the most recent ones).
pub const MAX_DAYS: usize = 120;
/// Upper bounds of the turnaround buckets, hours (the last bucket is everything longer).
pub const TURNAROUND_BUCKET_HOURS: [u32; 9] = [1, 2, 4, 8, 24, 48, 72, 168, 336];
/// No count of one site's day may exceed this: a county hospital does not screen a hundred
/// thousand slides a day, so a larger figure is a fault, refused with the report.
pub const MAX_DAILY_COUNT: u64 = 100_000;

/// Days older than this are refused (a report covers weeks; older figures would only grow
/// the hub's store).
pub const MAX_AGE_DAYS: i64 = 400;

/// The network's calendar: days are local days at this offset (Asia/Shanghai, no daylight
/// saving; `--time-zone-offset-hours` changes it).
pub const DEFAULT_OFFSET_HOURS: i8 = 8;

/// Triage classes, as the worklist shows them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TriageCounts {
    pub suspicious: u64,
    pub likely_benign: u64,
    pub needs_rescan: u64,
}

/// Why slides needed a re-scan (a slide may have several reasons).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct QcReasons {
    pub no_tissue: u64,
    pub blur: u64,
    pub pen: u64,
    pub fold: u64,
    pub exposure: u64,
}

/// One site's local day.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CoverageDay {
    /// The local calendar day, `YYYY-MM-DD`.
    pub day: String,
    pub slides_imported: u64,
    pub slides_screened: u64,
    pub triage: TriageCounts,
    pub qc_reasons: QcReasons,
    /// Slides a clinician signed off (confirmed or corrected the AI's triage).
    pub signed_off: u64,
    pub referred: u64,
    /// Answers that arrived back at the edge.
    pub answered: u64,
    /// Answers by turnaround, from the referral leaving the edge to the answer arriving back:
    /// one count per [`TURNAROUND_BUCKET_HOURS`] bucket, and one for longer.
    pub turnaround_buckets: Vec<u64>,
    /// Seconds of screening spent on the slides screened that day.
    pub screening_seconds: f64,
    /// Bytes the edge's data directory used at the end of the day (or now, for today).
    pub disk_bytes: Option<u64>,
    /// The screening model active at the end of the day (`name version`), if known.
    pub model: Option<String>,
    /// Federated rounds the site trained for that day.
    pub rounds_trained: u64,
    /// Free and total bytes of the disk holding the edge's data, when last measured that day.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disk_free_bytes: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disk_total_bytes: Option<u64>,
    /// Seconds of the day the edge was running, as it sampled them (absent: not recorded,
    /// as from an edge before this field).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uptime_seconds: Option<u64>,
    /// Seconds of the day the edge held a session with the hub (link quality).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub linked_seconds: Option<u64>,
    /// Invented figures (`grassroots edge --demo-history-days`), for demonstrations only: the
    /// hub marks every table that holds one.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub demo: bool,
}

/// A batch of days (the most recent [`MAX_DAYS`] at most).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CoverageReport {
    /// The offset of the site's calendar, hours east of UTC.
    pub offset_hours: i8,
    /// When the edge computed the figures (RFC 3339).
    pub computed_at: String,
    pub days: Vec<CoverageDay>,
}

fn malformed(reason: impl Into<String>) -> WireError {
    WireError::Malformed(format!("coverage: {}", reason.into()))
}

/// The local calendar day of `at` at `offset_hours`.
pub fn local_day(at: OffsetDateTime, offset_hours: i8) -> Date {
    let offset = UtcOffset::from_hms(offset_hours, 0, 0).unwrap_or(UtcOffset::UTC);
    at.to_offset(offset).date()
}

/// `YYYY-MM-DD`.
pub fn day_string(day: Date) -> String {
    format!(
        "{:04}-{:02}-{:02}",
        day.year(),
        u8::from(day.month()),
        day.day()
    )
}

/// Parses `YYYY-MM-DD`.
pub fn parse_day(text: &str) -> Result<Date, WireError> {
    let format = time::macros::format_description!("[year]-[month]-[day]");
    Date::parse(text, &format).map_err(|e| malformed(format!("day {text:?}: {e}")))
}

impl CoverageDay {
    /// An empty day.
    pub fn empty(day: Date) -> Self {
        Self {
            day: day_string(day),
            slides_imported: 0,
            slides_screened: 0,
            triage: TriageCounts::default(),
            qc_reasons: QcReasons::default(),
            signed_off: 0,
            referred: 0,
            answered: 0,
            turnaround_buckets: vec![0; TURNAROUND_BUCKET_HOURS.len() + 1],
            screening_seconds: 0.0,
            disk_bytes: None,
            model: None,
            rounds_trained: 0,
            disk_free_bytes: None,
            disk_total_bytes: None,
            uptime_seconds: None,
            linked_seconds: None,
            demo: false,
        }
    }

    /// The bucket of a turnaround of `hours`.
    pub fn bucket(hours: f64) -> usize {
        TURNAROUND_BUCKET_HOURS
            .iter()
            .position(|bound| hours <= f64::from(*bound))
            .unwrap_or(TURNAROUND_BUCKET_HOURS.len())
    }

    fn counts(&self) -> [u64; 15] {
        let (t, q) = (&self.triage, &self.qc_reasons);
        [
            self.slides_imported,
            self.slides_screened,
            t.suspicious,
            t.likely_benign,
            t.needs_rescan,
            q.no_tissue,
            q.blur,
            q.pen,
            q.fold,
            q.exposure,
            self.signed_off,
            self.referred,
            self.answered,
            self.rounds_trained,
            self.turnaround_buckets.iter().sum(),
        ]
    }

    /// Checks the day against `today` (the site's local today; a day after it is refused)
    /// and every figure against its bounds.
    pub fn validate(&self, today: Date) -> Result<Date, WireError> {
        let day = parse_day(&self.day)?;
        if day_string(day) != self.day {
            // "+2026-11-30" is the same day under another key: one form only.
            return Err(malformed(format!("day {:?} is not YYYY-MM-DD", self.day)));
        }
        if day > today {
            return Err(malformed(format!("{} is in the future", self.day)));
        }
        if (today - day).whole_days() > MAX_AGE_DAYS {
            return Err(malformed(format!(
                "{} is more than {MAX_AGE_DAYS} days old",
                self.day
            )));
        }
        if let Some(count) = self
            .turnaround_buckets
            .iter()
            .find(|c| **c > MAX_DAILY_COUNT)
        {
            return Err(malformed(format!(
                "{}: a turnaround bucket of {count}",
                self.day
            )));
        }
        if let Some(count) = self.counts().into_iter().find(|c| *c > MAX_DAILY_COUNT) {
            return Err(malformed(format!(
                "{}: a count of {count} (at most {MAX_DAILY_COUNT} a day)",
                self.day
            )));
        }
        if self.turnaround_buckets.len() != TURNAROUND_BUCKET_HOURS.len() + 1 {
            return Err(malformed(format!(
                "{}: {} turnaround buckets (expected {})",
                self.day,
                self.turnaround_buckets.len(),
                TURNAROUND_BUCKET_HOURS.len() + 1
            )));
        }
        if self.turnaround_buckets.iter().sum::<u64>() > self.answered {
            return Err(malformed(format!(
                "{}: more turnarounds than answers",
                self.day
            )));
        }
        let triaged = self.triage.suspicious + self.triage.likely_benign + self.triage.needs_rescan;
        if triaged > self.slides_screened {
            return Err(malformed(format!(
                "{}: {triaged} triaged of {} screened",
                self.day, self.slides_screened
            )));
        }
        if !(0.0..=86_400.0 * 64.0).contains(&self.screening_seconds) {
            return Err(malformed(format!(
                "{}: {} s of screening",
                self.day, self.screening_seconds
            )));
        }
        let day_seconds = 86_400;
        if self.uptime_seconds.is_some_and(|s| s > day_seconds)
            || self.linked_seconds.is_some_and(|s| s > day_seconds)
            || self.linked_seconds.unwrap_or(0) > self.uptime_seconds.unwrap_or(day_seconds)
        {
            return Err(malformed(format!(
                "{}: uptime or link seconds beyond the day",
                self.day
            )));
        }
        if self.disk_free_bytes.unwrap_or(0) > self.disk_total_bytes.unwrap_or(u64::MAX) {
            return Err(malformed(format!(
                "{}: more disk free than in total",
                self.day
            )));
        }
        if let Some(model) = &self.model {
            if model.len() > 128 || model.chars().any(char::is_control) {
                return Err(malformed("a model name that is not a short printable name"));
            }
        }
        Ok(day)
    }
}

impl CoverageReport {
    /// Parses and bounds a report from an edge (its days are checked by [`Self::checked_days`]).
    pub fn from_json(bytes: &[u8]) -> Result<Self, WireError> {
        if bytes.len() > MAX_COVERAGE_BYTES {
            return Err(malformed(format!(
                "a report of {} bytes (at most {MAX_COVERAGE_BYTES})",
                bytes.len()
            )));
        }
        let report: Self = serde_json::from_slice(bytes).map_err(|e| malformed(format!("{e}")))?;
        if !(-12..=14).contains(&report.offset_hours) {
            return Err(malformed(format!(
                "offset of {} hours",
                report.offset_hours
            )));
        }
        if report.days.len() > MAX_DAYS {
            return Err(malformed(format!(
                "{} days (at most {MAX_DAYS})",
                report.days.len()
            )));
        }
        Ok(report)
    }

    /// Splits the days into those that pass [`CoverageDay::validate`] against the site's
    /// today at `now`, and the refused ones with their reasons (one bad day does not cost the
    /// others).
    pub fn checked_days(&self, now: OffsetDateTime) -> (Vec<CoverageDay>, Vec<WireError>) {
        let today = local_day(now, self.offset_hours);
        let mut kept = Vec::new();
        let mut refused = Vec::new();
        for day in &self.days {
            match day.validate(today) {
                Ok(_) => kept.push(day.clone()),
                Err(error) => refused.push(error),
            }
        }
        (kept, refused)
    }
}

/// The median and 90th percentile of turnaround, hours, from summed buckets: the upper bound of
/// the bucket holding the quantile (`None` when there are no answers; `f64::INFINITY` when it
/// falls in the open last bucket).
pub fn turnaround_quantiles(buckets: &[u64]) -> Option<(f64, f64)> {
    let total: u64 = buckets.iter().sum();
    if total == 0 {
        return None;
    }
    let at = |q: f64| {
        let rank = (q * total as f64).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (index, count) in buckets.iter().enumerate() {
            seen += count;
            if seen >= rank {
                return TURNAROUND_BUCKET_HOURS
                    .get(index)
                    .map_or(f64::INFINITY, |h| f64::from(*h));
            }
        }
        f64::INFINITY
    };
    Some((at(0.5), at(0.9)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    fn day(text: &str) -> CoverageDay {
        CoverageDay::empty(parse_day(text).unwrap())
    }

    fn report(days: Vec<CoverageDay>) -> Vec<u8> {
        serde_json::to_vec(&CoverageReport {
            offset_hours: 8,
            computed_at: "2026-11-30T10:00:00Z".into(),
            days,
        })
        .unwrap()
    }

    #[test]
    fn a_valid_report_parses_and_today_is_the_sites_local_day() {
        // 17:00 UTC on the 30th is already the 1st in Shanghai.
        let now = datetime!(2026-11-30 17:00 UTC);
        let mut first = day("2026-12-01");
        first.slides_imported = 12;
        first.slides_screened = 10;
        first.triage.suspicious = 2;
        first.triage.likely_benign = 8;
        first.answered = 1;
        first.turnaround_buckets[CoverageDay::bucket(30.0)] = 1;
        let parsed = CoverageReport::from_json(&report(vec![first.clone()])).unwrap();
        assert_eq!(parsed.checked_days(now).0, vec![first]);
        assert_eq!(local_day(now, 8), parse_day("2026-12-01").unwrap());
    }

    #[test]
    fn future_days_absurd_counts_and_free_text_are_refused() {
        let now = datetime!(2026-11-30 10:00 UTC);
        let refused = |days: Vec<CoverageDay>| {
            CoverageReport::from_json(&report(days))
                .map(|r| r.checked_days(now).0.is_empty())
                .unwrap_or(true)
        };
        assert!(refused(vec![day("2026-12-02")]), "a future day");
        assert!(refused(vec![day("2024-01-01")]), "a day far in the past");
        let mut signed = day("2026-11-29");
        signed.day = "+2026-11-29".into();
        assert!(refused(vec![signed]), "a second spelling of a day");
        let mut overflow = day("2026-11-29");
        overflow.answered = 1;
        overflow.turnaround_buckets[0] = u64::MAX;
        overflow.turnaround_buckets[1] = 2;
        assert!(refused(vec![overflow]), "buckets that wrap around");
        // One bad day costs only itself.
        let (kept, dropped) =
            CoverageReport::from_json(&report(vec![day("2026-11-29"), day("2026-12-02")]))
                .unwrap()
                .checked_days(now);
        assert_eq!((kept.len(), dropped.len()), (1, 1));
        let mut absurd = day("2026-11-29");
        absurd.referred = MAX_DAILY_COUNT + 1;
        assert!(refused(vec![absurd]));
        let mut triaged = day("2026-11-29");
        triaged.triage.suspicious = 3;
        triaged.slides_screened = 2;
        assert!(refused(vec![triaged]));
        let mut unanswered = day("2026-11-29");
        unanswered.turnaround_buckets[0] = 1;
        assert!(refused(vec![unanswered]));
        // A field that could carry a name is not part of the format.
        let mut value = serde_json::to_value(CoverageReport {
            offset_hours: 8,
            computed_at: String::new(),
            days: vec![day("2026-11-29")],
        })
        .unwrap();
        value["days"][0]["patient"] = "Wang Fang".into();
        let bytes = serde_json::to_vec(&value).unwrap();
        assert!(CoverageReport::from_json(&bytes).is_err());
        let negative = String::from_utf8(report(vec![day("2026-11-29")]))
            .unwrap()
            .replace("\"referred\":0", "\"referred\":-3");
        assert!(CoverageReport::from_json(negative.as_bytes()).is_err());
        let mut long_day = day("2026-11-29");
        long_day.uptime_seconds = Some(90_000);
        assert!(refused(vec![long_day]), "more than a day of uptime");
        let mut linked = day("2026-11-29");
        linked.uptime_seconds = Some(100);
        linked.linked_seconds = Some(200);
        assert!(refused(vec![linked]), "linked longer than up");
        let mut disk = day("2026-11-29");
        disk.disk_free_bytes = Some(10);
        disk.disk_total_bytes = Some(5);
        assert!(refused(vec![disk]), "more disk free than in total");
    }

    #[test]
    fn a_report_from_an_edge_before_uptime_and_demo_marks_still_parses() {
        let now = datetime!(2026-11-30 10:00 UTC);
        let mut value = serde_json::to_value(CoverageReport {
            offset_hours: 8,
            computed_at: String::new(),
            days: vec![day("2026-11-29")],
        })
        .unwrap();
        let fields = value["days"][0].as_object_mut().unwrap();
        assert!(!fields.contains_key("demo"), "real days do not say demo");
        fields.remove("uptime_seconds");
        let parsed = CoverageReport::from_json(&serde_json::to_vec(&value).unwrap()).unwrap();
        let (kept, _) = parsed.checked_days(now);
        assert_eq!(kept[0].uptime_seconds, None);
        assert!(!kept[0].demo);
    }

    #[test]
    fn turnaround_quantiles_come_from_the_buckets() {
        let mut buckets = vec![0u64; TURNAROUND_BUCKET_HOURS.len() + 1];
        assert_eq!(turnaround_quantiles(&buckets), None);
        buckets[CoverageDay::bucket(3.0)] = 6; // <= 4 h
        buckets[CoverageDay::bucket(30.0)] = 3; // <= 48 h
        buckets[CoverageDay::bucket(1000.0)] = 1; // longer than two weeks
        assert_eq!(turnaround_quantiles(&buckets), Some((4.0, 48.0)));
    }
}
