//! The fixed calendar periods health authorities choose from. Fixed, not free date ranges:
//! two overlapping ranges could be subtracted to recover a count suppression hides.

use serde::{Deserialize, Serialize};
use time::{Date, Duration, Month};

/// The periods authorities choose from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Period {
    Day,
    Week,
    Month,
    Quarter,
    Year,
}

impl Period {
    pub const ALL: [Period; 5] = [
        Period::Day,
        Period::Week,
        Period::Month,
        Period::Quarter,
        Period::Year,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Period::Day => "day",
            Period::Week => "week",
            Period::Month => "month",
            Period::Quarter => "quarter",
            Period::Year => "year",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|p| p.name() == text)
    }

    /// The first and last day of the period holding `day`.
    pub fn bounds(self, day: Date) -> (Date, Date) {
        let month_start = |month: Month| Date::from_calendar_date(day.year(), month, 1).ok();
        let (first, last) = match self {
            Period::Day => (Some(day), Some(day)),
            Period::Week => {
                let monday = day.checked_sub(Duration::days(i64::from(
                    day.weekday().number_days_from_monday(),
                )));
                (
                    monday,
                    monday.and_then(|m| m.checked_add(Duration::days(6))),
                )
            }
            Period::Month => (
                month_start(day.month()),
                month_start(day.month().next())
                    .filter(|_| day.month() != Month::December)
                    .and_then(|d| d.previous_day())
                    .or_else(|| Date::from_calendar_date(day.year(), Month::December, 31).ok()),
            ),
            Period::Quarter => {
                let first_month = Month::try_from((u8::from(day.month()) - 1) / 3 * 3 + 1).ok();
                let first = first_month.and_then(month_start);
                let last = first_month
                    .map(|m| m.nth_next(3))
                    .filter(|m| *m != Month::January)
                    .and_then(month_start)
                    .and_then(|d| d.previous_day())
                    .or_else(|| Date::from_calendar_date(day.year(), Month::December, 31).ok());
                (first, last)
            }
            Period::Year => (
                Date::from_calendar_date(day.year(), Month::January, 1).ok(),
                Date::from_calendar_date(day.year(), Month::December, 31).ok(),
            ),
        };
        (first.unwrap_or(day), last.unwrap_or(day))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use grassroots_wire::coverage::parse_day;

    fn day(text: &str) -> Date {
        parse_day(text).unwrap()
    }

    #[test]
    fn periods_are_fixed_calendar_periods() {
        let d = day("2026-11-30"); // a Monday
        assert_eq!(Period::Week.bounds(d), (d, day("2026-12-06")));
        assert_eq!(
            Period::Month.bounds(d),
            (day("2026-11-01"), day("2026-11-30"))
        );
        assert_eq!(
            Period::Quarter.bounds(d),
            (day("2026-10-01"), day("2026-12-31"))
        );
        assert_eq!(
            Period::Month.bounds(day("2026-12-15")),
            (day("2026-12-01"), day("2026-12-31"))
        );
        assert_eq!(
            Period::Quarter.bounds(day("2026-02-28")),
            (day("2026-01-01"), day("2026-03-31"))
        );
        assert_eq!(
            Period::Year.bounds(d),
            (day("2026-01-01"), day("2026-12-31"))
        );
    }
}
