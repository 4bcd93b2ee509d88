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
use grassroots_web::i18n::tr;
use grassroots_web::pages::escape;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::coverage::{CoverageRow, CoverageTable};
use crate::sites::SiteStatus;

/// When a figure becomes an alert, and where alerts go (`HubConfig::alerts`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AlertSettings {
    /// A site silent this long (no session with the hub) is an alert.
    pub silent_after_s: u64,
    /// A certificate expiring within this many days is an alert.
    pub certificate_days: i64,
    /// A needs-rescan share of screened slides above this (when shown) is an alert.
    pub qc_failure_rate: f64,
    /// A referral unanswered this long is an alert (the network's target).
    pub referral_target_hours: i64,
    /// A site whose data disk has less than this share free is an alert.
    pub disk_free_share: f64,
    /// Where new and cleared alerts are posted as JSON (`http://` or `https://`); none: shown
    /// on the dashboard only.
    pub webhook: Option<String>,
    /// How often the hub checks for new alerts to post, seconds.
    pub check_every_s: u64,
}

impl Default for AlertSettings {
    fn default() -> Self {
        Self {
            silent_after_s: 24 * 3600,
            certificate_days: 30,
            qc_failure_rate: 0.2,
            referral_target_hours: 72,
            disk_free_share: 0.1,
            webhook: None,
            check_every_s: 300,
        }
    }
}

impl AlertSettings {
    pub fn validate(&self) -> Result<(), String> {
        if !(0.0..=1.0).contains(&self.qc_failure_rate)
            || !(0.0..=1.0).contains(&self.disk_free_share)
        {
            return Err("alert rates and shares are between 0 and 1".into());
        }
        if self.check_every_s == 0 || self.silent_after_s == 0 {
            return Err("alert intervals must be positive".into());
        }
        if let Some(url) = &self.webhook {
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                return Err(format!("alert webhook {url:?} is not an http(s) URL"));
            }
        }
        Ok(())
    }
}

/// Colours of the map's five classes, low to high (and grey for hidden).
const COLOURS: [&str; 5] = ["#fde0c5", "#facba6", "#f59e72", "#eb7a52", "#c8553d"];
const HIDDEN: &str = "#b0b0b0";

/// A row's screened slides per 10,000 of `people` (None: hidden, or no catchment known).
pub fn per_10k(row: &CoverageRow, people: u64) -> Option<f64> {
    row.counts
        .get("slides_screened")
        .and_then(|c| c.value())
        .filter(|_| people > 0)
        .map(|n| n as f64 * 10_000.0 / people as f64)
}

/// Screened slides per 10,000 people, per site (None: hidden or no catchment).
pub fn screened_per_10k(
    table: &CoverageTable,
    locations: &BTreeMap<String, SiteLocation>,
) -> BTreeMap<String, Option<f64>> {
    table
        .rows
        .iter()
        .map(|row| {
            let people = locations
                .get(&row.site)
                .map_or(0, |l| l.catchment_population);
            (row.site.clone(), per_10k(row, people))
        })
        .collect()
}

/// Region outlines from a GeoJSON file the operator supplies (`--region-outlines`): polygons
/// of longitude/latitude rings, drawn under the dots. Never fetched from anywhere.
#[derive(Debug, Clone, Default)]
pub struct Outlines {
    /// Each region's name (its `name` property, if any) and rings.
    pub regions: Vec<(String, Vec<Ring>)>,
}

/// A closed ring of (longitude, latitude) points.
pub type Ring = Vec<(f64, f64)>;

/// Largest outline file read, bytes.
pub const MAX_OUTLINE_BYTES: u64 = 32 * 1024 * 1024;
/// Most points kept over all outlines (a detailed national file is thinned to this).
pub const MAX_OUTLINE_POINTS: usize = 200_000;

impl Outlines {
    /// Reads a GeoJSON FeatureCollection (or one Feature or geometry) of Polygons and
    /// MultiPolygons; other geometries are skipped.
    pub fn load(path: &std::path::Path) -> Result<Self, String> {
        let size = std::fs::metadata(path)
            .map_err(|e| format!("{}: {e}", path.display()))?
            .len();
        if size > MAX_OUTLINE_BYTES {
            return Err(format!(
                "{}: {size} bytes (at most {MAX_OUTLINE_BYTES})",
                path.display()
            ));
        }
        let text = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let json: serde_json::Value = serde_json::from_slice(&text)
            .map_err(|e| format!("{}: not JSON: {e}", path.display()))?;
        let features: Vec<&serde_json::Value> = match json["type"].as_str() {
            Some("FeatureCollection") => {
                json["features"].as_array().into_iter().flatten().collect()
            }
            Some("Feature") => vec![&json],
            _ => vec![],
        };
        let mut outlines = Outlines::default();
        let mut add = |name: String, geometry: &serde_json::Value| {
            let polygons: Vec<&serde_json::Value> = match geometry["type"].as_str() {
                Some("Polygon") => vec![&geometry["coordinates"]],
                Some("MultiPolygon") => geometry["coordinates"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .collect(),
                _ => vec![],
            };
            let rings: Vec<Vec<(f64, f64)>> = polygons
                .into_iter()
                .flat_map(|p| p.as_array().into_iter().flatten())
                .map(|ring| {
                    ring.as_array()
                        .into_iter()
                        .flatten()
                        .filter_map(|pt| Some((pt.get(0)?.as_f64()?, pt.get(1)?.as_f64()?)))
                        .filter(|(lon, lat)| lon.abs() <= 180.0 && lat.abs() <= 90.0)
                        .collect::<Vec<_>>()
                })
                .filter(|ring| ring.len() >= 3)
                .collect();
            if !rings.is_empty() {
                outlines.regions.push((name, rings));
            }
        };
        if features.is_empty() {
            add(String::new(), &json);
        }
        for feature in features {
            let name = feature["properties"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            add(name, &feature["geometry"]);
        }
        let points: usize = outlines
            .regions
            .iter()
            .flat_map(|(_, r)| r)
            .map(Vec::len)
            .sum();
        if points > MAX_OUTLINE_POINTS {
            let keep_every = points.div_ceil(MAX_OUTLINE_POINTS);
            for (_, rings) in &mut outlines.regions {
                for ring in rings.iter_mut() {
                    let thinned: Vec<(f64, f64)> =
                        ring.iter().copied().step_by(keep_every).collect();
                    *ring = thinned;
                }
                rings.retain(|ring| ring.len() >= 3);
            }
        }
        if outlines.regions.is_empty() {
            return Err(format!(
                "{}: no Polygon or MultiPolygon in it",
                path.display()
            ));
        }
        Ok(outlines)
    }
}

/// The map as SVG (empty when no site has a location).
pub fn svg(
    table: &CoverageTable,
    locations: &BTreeMap<String, SiteLocation>,
    outlines: &Outlines,
) -> String {
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
    let project = |lon: f64, lat: f64| {
        (
            margin + (lon - min_lon) * shrink * scale,
            height - margin - (lat - min_lat) * scale,
        )
    };
    let mut dots = String::new();
    for (name, rings) in &outlines.regions {
        let mut path = String::new();
        for ring in rings {
            for (index, (lon, lat)) in ring.iter().enumerate() {
                let (x, y) = project(*lon, *lat);
                path.push_str(&format!(
                    "{}{x:.1},{y:.1}",
                    if index == 0 { "M" } else { "L" }
                ));
            }
            path.push('Z');
        }
        dots.push_str(&format!(
            r##"<path class="outline" d="{path}" fill="#e8ece4" stroke="#8a9a8a" stroke-width="1"><title>{}</title></path>"##,
            escape(name)
        ));
    }
    for (site, location) in &placed {
        let (x, y) = project(location.longitude(), location.latitude());
        let (colour, label) = match rates.get(*site).copied().flatten() {
            Some(rate) => {
                let class = if highest > 0.0 {
                    ((rate / highest) * 4.0).round() as usize
                } else {
                    0
                };
                (
                    COLOURS[class.min(4)],
                    tr("{} per 10,000").replace("{}", &format!("{rate:.1}")),
                )
            }
            None => (HIDDEN, tr("hidden or no catchment").to_string()),
        };
        // Labels of dots in the east half go to their left, so none runs off the map.
        let (label_x, anchor) = if x > width / 2.0 {
            (x - 12.0, "end")
        } else {
            (x + 12.0, "start")
        };
        dots.push_str(&format!(
            r##"<g><circle cx="{x:.1}" cy="{y:.1}" r="9" fill="{colour}" stroke="#333"><title>{site}: {label}</title></circle><text x="{label_x:.1}" y="{:.1}" font-size="12" text-anchor="{anchor}">{site}</text></g>"##,
            y + 4.0,
            site = escape(site),
            label = escape(&label),
        ));
    }
    format!(
        r##"<svg class="coverage-map" viewBox="0 0 {width} {height}" role="img" aria-label="{map_label}"><rect width="{width}" height="{height}" fill="#f7f7f2"/>{dots}</svg>"##,
        map_label = tr("Sites by slides screened per 10,000 people"),
    )
}

fn bounds(values: &[f64]) -> (f64, f64) {
    let low = values.iter().copied().fold(f64::INFINITY, f64::min);
    let high = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    (low, high)
}

/// One alert.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Alert {
    /// What needs attention: `silent`, `certificate`, `quality`, `disk` or `turnaround`.
    #[schema(value_type = String)]
    pub kind: &'static str,
    pub site: String,
    pub detail: String,
    /// The detail's figures, to put it in the words of a page's language.
    #[serde(skip)]
    pub figures: AlertFigures,
}

/// What an alert says, as figures: [`AlertFigures::words`] puts them in words.
#[derive(Debug, Clone, Copy)]
pub enum AlertFigures {
    /// Seconds since the site was last heard from.
    Silent(i64),
    /// Days until the site's certificate expires.
    Certificate(i64),
    /// The share of screened slides that need a re-scan, and the threshold.
    Quality(f64, f64),
    /// The free share of the site's data disk.
    Disk(f64),
    /// The network's referral target, hours.
    Turnaround(i64),
}

/// Words as they are: the alerts' details in the API and the notifications are English.
fn as_written(english: &'static str) -> &'static str {
    english
}

impl AlertFigures {
    /// The alert's detail, each phrase passed through `say`: [`as_written`] for the API and the
    /// notifications, `tr` for a page in the reader's language.
    pub fn words(self, say: fn(&'static str) -> &'static str) -> String {
        match self {
            AlertFigures::Silent(seconds) => {
                say("not heard from for {}").replace("{}", &duration_words(seconds, say))
            }
            AlertFigures::Certificate(days) => {
                say("certificate expires in {} days").replace("{}", &days.to_string())
            }
            AlertFigures::Quality(rate, threshold) => {
                say("{rate}% of screened slides need a re-scan (above {threshold}%)")
                    .replace("{rate}", &format!("{:.0}", rate * 100.0))
                    .replace("{threshold}", &format!("{:.0}", threshold * 100.0))
            }
            AlertFigures::Disk(free) => {
                say("{}% of the data disk is free").replace("{}", &format!("{:.0}", free * 100.0))
            }
            AlertFigures::Turnaround(hours) => {
                say("referrals waiting past the {}-hour target").replace("{}", &hours.to_string())
            }
        }
    }
}

impl Alert {
    fn new(kind: &'static str, site: String, figures: AlertFigures) -> Alert {
        Alert {
            kind,
            site,
            detail: figures.words(as_written),
            figures,
        }
    }
}

/// What needs attention now, from the sites' states, the period's table (with each site's
/// latest disk figures) and the referral waiting longest per site.
pub fn alerts(
    statuses: &[SiteStatus],
    table: &CoverageTable,
    oldest_unanswered: &BTreeMap<String, OffsetDateTime>,
    settings: &AlertSettings,
    now: OffsetDateTime,
) -> Vec<Alert> {
    let mut alerts = Vec::new();
    for status in statuses.iter().filter(|s| !s.revoked) {
        let silent = status
            .last_seen
            .map(|seen| (now - seen).whole_seconds())
            .filter(|seconds| {
                !status.online
                    && *seconds >= i64::try_from(settings.silent_after_s).unwrap_or(i64::MAX)
            });
        if let Some(seconds) = silent {
            alerts.push(Alert::new(
                "silent",
                status.site_id.clone(),
                AlertFigures::Silent(seconds),
            ));
        }
        if let Some(days) = status
            .certificate_days_left
            .filter(|d| *d <= settings.certificate_days)
        {
            alerts.push(Alert::new(
                "certificate",
                status.site_id.clone(),
                AlertFigures::Certificate(days),
            ));
        }
    }
    for row in &table.rows {
        if let Some(rate) = row
            .qc_failure_rate
            .filter(|r| *r > settings.qc_failure_rate)
        {
            alerts.push(Alert::new(
                "quality",
                row.site.clone(),
                AlertFigures::Quality(rate, settings.qc_failure_rate),
            ));
        }
        if let Some(free) = row
            .disk_free_share_now
            .filter(|f| *f < settings.disk_free_share)
        {
            alerts.push(Alert::new(
                "disk",
                row.site.clone(),
                AlertFigures::Disk(free),
            ));
        }
    }
    for (site, since) in oldest_unanswered {
        // Neither how many nor how long: either could describe one patient's case.
        if (now - *since).whole_hours() >= settings.referral_target_hours {
            alerts.push(Alert::new(
                "turnaround",
                site.clone(),
                AlertFigures::Turnaround(settings.referral_target_hours),
            ));
        }
    }
    alerts
}

fn duration_words(seconds: i64, say: fn(&'static str) -> &'static str) -> String {
    let (words, count) = match seconds {
        s if s >= 2 * 86_400 => (say("{} days"), s / 86_400),
        s if s >= 3_600 => (say("{} hours"), s / 3_600),
        s if s >= 60 => (say("{} minutes"), s / 60),
        s => (say("{} seconds"), s),
    };
    words.replace("{}", &count.to_string())
}
