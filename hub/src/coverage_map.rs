//! The coverage page's map and alerts.
//!
//! The map is an SVG drawn here from the sites' provisioned coordinates (no map tiles: the hub
//! may have no internet, and tiles would tell a tile server who looks at what): a dot per site,
//! coloured by slides screened per 10,000 people of its catchment over the period, grey where
//! the count is hidden or the site has no catchment. Alerts are what an authority should act
//! on: a site silent for a day, a certificate about to expire, a quality-control failure rate
//! that suggests a training need, a referral waiting past the network's target.

use std::collections::BTreeMap;

use grassroots_provisioning::SiteLocation;
use grassroots_web::pages::escape;
use serde::Serialize;
use time::OffsetDateTime;

use crate::coverage::CoverageTable;
use crate::sites::SiteStatus;

/// A site silent this long is an alert.
pub const SILENT_HOURS: i64 = 24;
/// A certificate expiring within this many days is an alert.
pub const EXPIRY_DAYS: i64 = 30;
/// A needs-rescan share above this (when shown) is an alert.
pub const QC_FAILURE_ALERT: f64 = 0.2;
/// A referral unanswered this long is an alert.
pub const REFERRAL_TARGET_HOURS: i64 = 72;

/// Colours of the map's five classes, low to high (and grey for hidden).
const COLOURS: [&str; 5] = ["#fde0c5", "#facba6", "#f59e72", "#eb7a52", "#c8553d"];
const HIDDEN: &str = "#b0b0b0";

/// Screened slides per 10,000 people, per site (None: hidden or no catchment).
pub fn screened_per_10k(
    table: &CoverageTable,
    locations: &BTreeMap<String, SiteLocation>,
) -> BTreeMap<String, Option<f64>> {
    table
        .rows
        .iter()
        .map(|row| {
            let rate = row
                .counts
                .get("slides_screened")
                .and_then(|c| c.value())
                .zip(locations.get(&row.site))
                .filter(|(_, l)| l.catchment_population > 0)
                .map(|(n, l)| n as f64 * 10_000.0 / l.catchment_population as f64);
            (row.site.clone(), rate)
        })
        .collect()
}

/// The map as SVG (empty when no site has a location).
pub fn svg(table: &CoverageTable, locations: &BTreeMap<String, SiteLocation>) -> String {
    let placed: Vec<(&String, &SiteLocation)> = table
        .rows
        .iter()
        .filter_map(|row| locations.get(&row.site).map(|l| (&row.site, l)))
        .collect();
    if placed.is_empty() {
        return String::new();
    }
    let (width, height, margin) = (600.0, 400.0, 30.0);
    let lats: Vec<f64> = placed.iter().map(|(_, l)| l.latitude()).collect();
    let lons: Vec<f64> = placed.iter().map(|(_, l)| l.longitude()).collect();
    let (min_lat, max_lat) = bounds(&lats);
    let (min_lon, max_lon) = bounds(&lons);
    // Equirectangular, with longitude shrunk by the cosine of the middle latitude.
    let shrink = ((min_lat + max_lat) / 2.0).to_radians().cos().max(0.1);
    let span_x = ((max_lon - min_lon) * shrink).max(0.2);
    let span_y = (max_lat - min_lat).max(0.2);
    let scale = ((width - 2.0 * margin) / span_x).min((height - 2.0 * margin) / span_y);
    let rates = screened_per_10k(table, locations);
    let highest = rates.values().flatten().fold(0f64, |m, r| m.max(*r));
    let mut dots = String::new();
    for (site, location) in &placed {
        let x = margin + (location.longitude() - min_lon) * shrink * scale;
        let y = height - margin - (location.latitude() - min_lat) * scale;
        let (colour, label) = match rates.get(*site).copied().flatten() {
            Some(rate) => {
                let class = if highest > 0.0 {
                    ((rate / highest) * 4.0).round() as usize
                } else {
                    0
                };
                (COLOURS[class.min(4)], format!("{rate:.1} per 10,000"))
            }
            None => (HIDDEN, "hidden or no catchment".to_string()),
        };
        dots.push_str(&format!(
            r##"<g><circle cx="{x:.1}" cy="{y:.1}" r="9" fill="{colour}" stroke="#333"><title>{site}: {label}</title></circle><text x="{:.1}" y="{:.1}" font-size="12">{site}</text></g>"##,
            x + 12.0,
            y + 4.0,
            site = escape(site),
            label = escape(&label),
        ));
    }
    format!(
        r##"<svg class="coverage-map" viewBox="0 0 {width} {height}" role="img" aria-label="Sites by slides screened per 10,000 people"><rect width="{width}" height="{height}" fill="#f7f7f2"/>{dots}</svg>"##
    )
}

fn bounds(values: &[f64]) -> (f64, f64) {
    let low = values.iter().copied().fold(f64::INFINITY, f64::min);
    let high = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    (low, high)
}

/// One alert.
#[derive(Debug, Clone, Serialize)]
pub struct Alert {
    pub kind: &'static str,
    pub site: String,
    pub detail: String,
}

/// What needs attention now, from the sites' states, the period's table and the referral
/// waiting longest per site.
pub fn alerts(
    statuses: &[SiteStatus],
    table: &CoverageTable,
    oldest_unanswered: &BTreeMap<String, OffsetDateTime>,
    now: OffsetDateTime,
) -> Vec<Alert> {
    let mut alerts = Vec::new();
    for status in statuses.iter().filter(|s| !s.revoked) {
        let silent = status
            .last_seen
            .map(|seen| (now - seen).whole_hours())
            .filter(|hours| *hours >= SILENT_HOURS && !status.online);
        if let Some(hours) = silent {
            alerts.push(Alert {
                kind: "silent",
                site: status.site_id.clone(),
                detail: format!("not heard from for {hours} hours"),
            });
        }
        if let Some(days) = status.certificate_days_left.filter(|d| *d <= EXPIRY_DAYS) {
            alerts.push(Alert {
                kind: "certificate",
                site: status.site_id.clone(),
                detail: format!("certificate expires in {days} days"),
            });
        }
    }
    for row in &table.rows {
        if let Some(rate) = row.qc_failure_rate.filter(|r| *r > QC_FAILURE_ALERT) {
            alerts.push(Alert {
                kind: "quality",
                site: row.site.clone(),
                detail: format!(
                    "{:.0}% of screened slides need a re-scan (above {:.0}%)",
                    rate * 100.0,
                    QC_FAILURE_ALERT * 100.0
                ),
            });
        }
    }
    for (site, since) in oldest_unanswered {
        // Neither how many nor how long: either could describe one patient's case.
        if (now - *since).whole_hours() >= REFERRAL_TARGET_HOURS {
            alerts.push(Alert {
                kind: "turnaround",
                site: site.clone(),
                detail: format!("referrals waiting past the {REFERRAL_TARGET_HOURS}-hour target"),
            });
        }
    }
    alerts
}
