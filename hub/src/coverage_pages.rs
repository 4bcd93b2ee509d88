//! The coverage page and API for health authorities (and admins): per site and in total, over
//! a fixed period, suppressed as `crate::suppression` says; exported as JSON or CSV.

use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use grassroots_web::pages::{escape, page};
use grassroots_web::{Account, CurrentUser, WebError};
use grassroots_wire::coverage::{day_string, local_day, parse_day, DEFAULT_OFFSET_HOURS};
use serde::Deserialize;
use time::{Date, OffsetDateTime};

use std::collections::BTreeMap;

use grassroots_provisioning::SiteLocation;

use crate::coverage::{CoverageRow, CoverageTable, Period, COLUMNS};
use crate::coverage_map::Alert;
use crate::HubState;

#[derive(Debug, Deserialize)]
pub(crate) struct CoverageQuery {
    /// day, week, month (default), quarter or year.
    pub period: Option<String>,
    /// A day inside the period, `YYYY-MM-DD` (default: today in the network's calendar).
    pub at: Option<String>,
    /// json (default) or csv.
    pub format: Option<String>,
    /// Only sites whose region starts with this (`Henan` or `Henan/Kaifeng`).
    pub region: Option<String>,
}

fn bad_request(reason: String) -> Response {
    WebError::BadRequest(reason).into_response()
}

pub(crate) fn resolve(query: &CoverageQuery) -> Result<(Period, Date), String> {
    let period = match query.period.as_deref() {
        None | Some("") => Period::Month,
        Some(text) => Period::parse(text)
            .ok_or_else(|| format!("period {text:?}: one of day, week, month, quarter, year"))?,
    };
    let day = match query.at.as_deref() {
        None | Some("") => local_day(OffsetDateTime::now_utc(), DEFAULT_OFFSET_HOURS),
        Some(text) => parse_day(text).map_err(|e| e.to_string())?,
    };
    if !(2000..=2200).contains(&day.year()) {
        return Err(format!("{} is outside 2000-2200", day_string(day)));
    }
    Ok((period, day))
}

/// A site's id and provisioned name.
type SiteName = (String, Option<String>);
/// Site id to where it is.
type Locations = BTreeMap<String, SiteLocation>;

/// The provisioned sites (a renewed certificate names the same site again) with their names,
/// and the locations the registry holds.
pub(crate) fn registry_sites(state: &HubState) -> (Vec<SiteName>, Locations) {
    let Some(registry) = state.revocations.registry() else {
        return (Vec::new(), BTreeMap::new());
    };
    let sites = registry
        .certificates
        .iter()
        .filter(|s| s.role == grassroots_provisioning::Role::Edge)
        .map(|s| (s.site_id.to_string(), Some(s.name.clone())))
        .collect::<BTreeMap<_, _>>()
        .into_iter()
        .collect();
    (sites, registry.locations)
}

fn in_region(location: Option<&SiteLocation>, region: &str) -> bool {
    let wanted: Vec<&str> = region
        .split('/')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .collect();
    location.is_some_and(|l| {
        wanted.len() <= l.region.len() && wanted.iter().zip(&l.region).all(|(w, r)| *w == r)
    })
}

/// The region an account's request is answered for: what it asked, if the account may see it
/// (an account limited to regions sees only those and regions inside them; unasked, its first);
/// refused otherwise.
pub(crate) fn scope(user: &Account, asked: Option<&str>) -> Result<Option<String>, Box<Response>> {
    let asked = asked
        .map(|r| {
            r.split('/')
                .map(str::trim)
                .filter(|p| !p.is_empty())
                .collect::<Vec<_>>()
                .join("/")
        })
        .filter(|r| !r.is_empty());
    if user.regions.is_empty() {
        return Ok(asked);
    }
    match asked {
        None => Ok(user.regions.first().cloned()),
        Some(region) => {
            let inside = user
                .regions
                .iter()
                .any(|own| region == *own || region.starts_with(&format!("{own}/")));
            if inside {
                Ok(Some(region))
            } else {
                Err(Box::new(
                    WebError::Forbidden(format!(
                        "this account sees {} only",
                        user.regions.join(", ")
                    ))
                    .into_response(),
                ))
            }
        }
    }
}

/// Every region prefix (`Henan`, `Henan/Kaifeng`, ...) of the located sites, with its sites.
fn region_groups(locations: &Locations) -> Vec<(String, Vec<String>)> {
    let mut groups: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (site, location) in locations {
        for depth in 1..=location.region.len() {
            groups
                .entry(location.region[..depth].join("/"))
                .or_default()
                .push(site.clone());
        }
    }
    groups.into_iter().collect()
}

/// The period's table (every provisioned site, so that one that never reported shows as
/// zeros); for a region, only its sites, and its own total in place of the network's. The
/// suppression is the same whichever view is asked for (see `Coverage::table`).
pub(crate) fn table(
    state: &HubState,
    period: Period,
    day: Date,
    region: Option<&str>,
) -> Result<(CoverageTable, Locations), Box<Response>> {
    let (sites, locations) = registry_sites(state);
    let groups = region_groups(&locations);
    let solved = state
        .coverage
        .table(period, day, &sites, &groups)
        .map_err(|e| Box::new(WebError::Internal(e.to_string()).into_response()))?;
    let mut table = CoverageTable::clone(&solved);
    if let Some(region) = region.map(str::trim).filter(|r| !r.is_empty()) {
        let wanted: Vec<&str> = region.split('/').map(str::trim).collect();
        let name = wanted.join("/");
        let Some(total) = table.groups.iter().find(|g| g.site == name).cloned() else {
            return Err(Box::new(
                WebError::BadRequest(format!("no site is in region {name:?}")).into_response(),
            ));
        };
        table
            .rows
            .retain(|row| in_region(locations.get(&row.site), &name));
        table.total = total;
    }
    Ok((table, locations))
}

fn csv_field(text: &str) -> String {
    // Formula injection: a spreadsheet must not run a site name.
    let text = if text.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        format!("'{text}")
    } else {
        text.to_string()
    };
    if text.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", text.replace('"', "\"\""))
    } else {
        text
    }
}

fn optional(value: Option<f64>, digits: usize) -> String {
    value.map_or(String::new(), |v| format!("{v:.digits$}"))
}

fn csv(table: &CoverageTable) -> String {
    let mut out = String::from("period,first_day,last_day,site,name,days_reported");
    for (name, _) in COLUMNS {
        out.push(',');
        out.push_str(name);
    }
    out.push_str(
        ",qc_failure_rate,referral_rate,turnaround_median_hours,turnaround_p90_hours,model\n",
    );
    for row in table.rows.iter().chain(std::iter::once(&table.total)) {
        out.push_str(&format!(
            "{},{},{},{},{},{}",
            table.period.name(),
            table.first_day,
            table.last_day,
            csv_field(&row.site),
            csv_field(row.name.as_deref().unwrap_or_default()),
            row.days_reported
        ));
        for (name, _) in COLUMNS {
            out.push(',');
            out.push_str(&row.counts.get(name).map(|c| c.text()).unwrap_or_default());
        }
        out.push_str(&format!(
            ",{},{},{},{},{}\n",
            optional(row.qc_failure_rate, 4),
            optional(row.referral_rate, 4),
            optional(row.turnaround_median_hours, 0),
            optional(row.turnaround_p90_hours, 0),
            csv_field(row.model.as_deref().unwrap_or_default())
        ));
    }
    out
}

/// `GET /api/v1/coverage?period=&at=&format=json|csv`.
pub(crate) async fn coverage_api(
    State(state): State<Arc<HubState>>,
    Extension(CurrentUser(user)): Extension<CurrentUser>,
    Query(query): Query<CoverageQuery>,
) -> Response {
    let (period, day) = match resolve(&query) {
        Ok(resolved) => resolved,
        Err(reason) => return bad_request(reason),
    };
    let region = match scope(&user, query.region.as_deref()) {
        Ok(region) => region,
        Err(response) => return *response,
    };
    let table = match table(&state, period, day, region.as_deref()) {
        Ok((table, _)) => table,
        Err(response) => return *response,
    };
    match query.format.as_deref() {
        None | Some("") | Some("json") => Json(table).into_response(),
        Some("csv") => (
            [
                (header::CONTENT_TYPE, "text/csv; charset=utf-8".to_string()),
                (
                    header::CONTENT_DISPOSITION,
                    format!(
                        "attachment; filename=\"coverage-{}-{}.csv\"",
                        period.name(),
                        table.first_day
                    ),
                ),
            ],
            csv(&table),
        )
            .into_response(),
        Some(other) => bad_request(format!("format {other:?}: json or csv")),
    }
}

pub(crate) fn percent(value: Option<f64>) -> String {
    value.map_or("—".into(), |v| format!("{:.1}%", v * 100.0))
}

pub(crate) fn hours(value: Option<f64>) -> String {
    match value {
        None => "—".into(),
        Some(h) if h.is_infinite() => "&gt; 2 weeks".into(),
        Some(h) => format!("≤ {h:.0} h"),
    }
}

pub(crate) fn html_row(row: &CoverageRow, class: &str, link_query: &str) -> String {
    let count = |name: &str| row.counts.get(name).map(|c| c.text()).unwrap_or_default();
    let label = match &row.name {
        Some(name) => format!(
            "<a href=\"/coverage/site/{}?{link_query}\">{}</a> <span class=\"muted\">{}</span>",
            escape(&row.site),
            escape(name),
            escape(&row.site)
        ),
        None => escape(&row.site),
    };
    let label = if row.demo_days > 0 {
        format!("{label} <span class=\"demo\">demo</span>")
    } else {
        label
    };
    format!(
        "<tr class=\"{class}\"><td data-label=\"Site\">{label}</td><td data-label=\"Days reported\">{}</td><td data-label=\"Imported\">{}</td><td data-label=\"Screened\">{}</td><td data-label=\"Suspicious\">{}</td><td data-label=\"Likely benign\">{}</td><td data-label=\"Needs re-scan\">{}</td><td data-label=\"QC failure rate\">{}</td><td data-label=\"Referred\">{}</td><td data-label=\"Referral rate\">{}</td><td data-label=\"Answered\">{}</td><td data-label=\"Turnaround median / p90\">{} / {}</td><td data-label=\"Linked to the hub\">{}</td><td data-label=\"Model\">{}</td></tr>",
        row.days_reported,
        count("slides_imported"),
        count("slides_screened"),
        count("suspicious"),
        count("likely_benign"),
        count("needs_rescan"),
        percent(row.qc_failure_rate),
        count("referred"),
        percent(row.referral_rate),
        count("answered"),
        hours(row.turnaround_median_hours),
        hours(row.turnaround_p90_hours),
        percent(row.linked_share),
        escape(row.model.as_deref().unwrap_or("—")),
    )
}

/// `GET /coverage`: the table of one period, with links to the others and the exports.
pub(crate) async fn coverage_page(
    State(state): State<Arc<HubState>>,
    Extension(CurrentUser(user)): Extension<CurrentUser>,
    Query(query): Query<CoverageQuery>,
) -> Response {
    let (period, day) = match resolve(&query) {
        Ok(resolved) => resolved,
        Err(reason) => return bad_request(reason),
    };
    let region = match scope(&user, query.region.as_deref()) {
        Ok(region) => region,
        Err(response) => return *response,
    };
    let (table, locations) = match table(&state, period, day, region.as_deref()) {
        Ok(found) => found,
        Err(response) => return *response,
    };
    let alert_list = current_alerts(&state, &table);
    let body = page_body(
        &state,
        &user,
        &table,
        &locations,
        &alert_list,
        period,
        day,
        region.as_deref(),
    );
    page(
        &format!("Hub — {}", state.kit.network),
        "Regional coverage",
        Some(&user),
        &body,
    )
    .into_response()
}

/// `&region=...` for links, or nothing.
fn region_param(region: Option<&str>) -> String {
    region.map_or(String::new(), |r| format!("&amp;region={}", escape(r)))
}

/// Links to the region above the current one and the regions inside it (the account's own
/// regions when it is limited and at the top).
fn region_links(
    user: &Account,
    table: &CoverageTable,
    period: Period,
    at: &str,
    region: Option<&str>,
) -> String {
    let link = |target: Option<&str>, label: &str| {
        format!(
            "<a href=\"/coverage?period={}&amp;at={at}{}\">{}</a>",
            period.name(),
            region_param(target),
            escape(label)
        )
    };
    let depth = region.map_or(0, |r| r.split('/').count());
    let mut links = Vec::new();
    match region {
        Some(current) => {
            let parent = current.rsplit_once('/').map(|(p, _)| p);
            let parent_allowed = match parent {
                None => user.regions.is_empty(),
                Some(p) => scope(user, Some(p)).is_ok(),
            };
            if parent_allowed {
                links.push(link(
                    parent,
                    &format!("↑ {}", parent.unwrap_or("whole network")),
                ));
            }
            links.push(format!("<strong>{}</strong>", escape(current)));
        }
        None => links.push("<strong>whole network</strong>".into()),
    }
    for group in &table.groups {
        let name = group.site.as_str();
        let child = name.split('/').count() == depth + 1
            && region.is_none_or(|r| name.starts_with(&format!("{r}/")));
        if child && scope(user, Some(name)).is_ok() {
            links.push(link(Some(name), name.rsplit('/').next().unwrap_or(name)));
        }
    }
    for own in &user.regions {
        if region != Some(own.as_str()) && depth == 0 {
            links.push(link(Some(own), own));
        }
    }
    links.join(" · ")
}

#[allow(clippy::too_many_arguments)]
fn page_body(
    state: &HubState,
    user: &Account,
    table: &CoverageTable,
    locations: &Locations,
    alert_list: &[Alert],
    period: Period,
    day: Date,
    region: Option<&str>,
) -> String {
    let at = day_string(day);
    let here = region_param(region);
    let periods: Vec<String> = Period::ALL
        .iter()
        .map(|p| {
            if *p == period {
                format!("<strong>{}</strong>", p.name())
            } else {
                format!(
                    "<a href=\"/coverage?period={}&amp;at={at}{here}\">{}</a>",
                    p.name(),
                    p.name()
                )
            }
        })
        .collect();
    let (first, last) = period.bounds(day);
    let step = |to: Option<Date>, label: &str| {
        to.map_or(String::new(), |d| {
            format!(
                "<a href=\"/coverage?period={}&amp;at={}{here}\">{label}</a>",
                period.name(),
                day_string(d)
            )
        })
    };
    let earlier = step(first.previous_day(), "← earlier");
    let later = step(last.next_day(), "later →");
    let link_query = format!("period={}&amp;at={at}", period.name());
    let mut rows: String = table
        .rows
        .iter()
        .map(|r| html_row(r, "", &link_query))
        .collect();
    if table.rows.is_empty() {
        rows.push_str(r#"<tr><td colspan="14" class="muted">No site has reported yet. Edges send their daily figures about an hour apart, and at start.</td></tr>"#);
    }
    rows.push_str(&html_row(&table.total, "total", &link_query));
    let export = format!(
        "/api/v1/coverage?period={}&amp;at={at}{here}",
        period.name()
    );
    let map = crate::coverage_map::svg(table, locations, &state.outlines);
    let map = if map.is_empty() {
        r#"<p class="muted">No site has a location yet: <code>grassroots provision locate-site</code> records one.</p>"#.to_string()
    } else {
        format!("{map}<p class=\"muted\">Dots: slides screened per 10,000 people of the catchment, darker is more; grey where the count is hidden.</p>")
    };
    let alerts_html = if alert_list.is_empty() {
        r#"<p class="muted">No alerts.</p>"#.to_string()
    } else {
        let items: String = alert_list
            .iter()
            .map(|a| {
                format!(
                    "<li><strong>{}</strong> {}: {}</li>",
                    escape(a.kind),
                    escape(&a.site),
                    escape(&a.detail)
                )
            })
            .collect();
        format!("<ul class=\"alerts\">{items}</ul>")
    };
    let demo_days = table.total.demo_days;
    let demo = if demo_days > 0 {
        format!("<p class=\"demo-banner\">Demo data: {demo_days} site-days in this period are invented figures (<code>--demo-history-days</code>), not real screening.</p>")
    } else {
        String::new()
    };
    let trend_api = format!(
        "/api/v1/coverage/trend?period={}&amp;at={at}{here}",
        period.name()
    );
    let report = format!("/coverage/report?at={at}{here}");
    let prefix = grassroots_web::assets::PREFIX;
    format!(
        r#"<link rel="stylesheet" href="{prefix}/uplot/uPlot.min.css">{demo}
<nav class="card filters"><p>Period: {periods} · {earlier} {later}</p><p>Region: {regions}</p></nav>
<div class="card"><h2>Alerts</h2>{alerts_html}</div>
<div class="card"><h2>Sites</h2>{map}</div>
<div class="card"><h2>Over time</h2><div class="trend-chart" data-api="{trend_api}"><p class="muted">Charts need JavaScript; each site's page has the same figures as a table.</p></div></div>
<div class="card"><p>{period_name}: {first_day} to {last_day} (the network's calendar).</p>
<p>Export: <a href="{export}&amp;format=csv">CSV</a> · <a href="{export}&amp;format=json">JSON</a> · <a href="{report}">printable monthly report</a></p>
<p class="muted">Counts from 1 to 4 show as &lt;5, and so does a second count wherever the first could be worked out from a total; rates and turnaround built on a hidden count are hidden too. Turnaround is from the referral leaving the site to the answer arriving back, given as the upper bound of its bucket.</p></div>
<div class="table-wrap"><table class="cards"><thead><tr><th>Site</th><th>Days reported</th><th>Imported</th><th>Screened</th><th>Suspicious</th><th>Likely benign</th><th>Needs re-scan</th><th>QC failure rate</th><th>Referred</th><th>Referral rate</th><th>Answered</th><th>Turnaround median / p90</th><th>Linked to the hub</th><th>Model</th></tr></thead>
<tbody>{rows}</tbody></table></div>
<script src="{prefix}/uplot/uPlot.iife.min.js"></script>
<script src="{prefix}/web/coverage.js"></script>"#,
        periods = periods.join(" · "),
        regions = region_links(user, table, period, &at, region),
        period_name = period.name(),
        first_day = table.first_day,
        last_day = table.last_day,
    )
}

/// The alerts of now, against the period's table.
pub(crate) fn current_alerts(state: &HubState, table: &CoverageTable) -> Vec<Alert> {
    let statuses = crate::http::statuses(state).unwrap_or_default();
    let mut oldest: BTreeMap<String, OffsetDateTime> = BTreeMap::new();
    for referral in state.referrals.worklist().unwrap_or_default() {
        if referral.report.is_none() {
            let entry = oldest
                .entry(referral.site.clone())
                .or_insert(referral.received_at);
            *entry = (*entry).min(referral.received_at);
        }
    }
    let shown: std::collections::BTreeSet<&str> =
        table.rows.iter().map(|r| r.site.as_str()).collect();
    crate::coverage_map::alerts(
        &statuses,
        table,
        &oldest,
        &state.config.alerts,
        OffsetDateTime::now_utc(),
    )
    .into_iter()
    .filter(|alert| shown.contains(alert.site.as_str()))
    .collect()
}

/// `GET /api/v1/coverage/alerts`: what needs attention now (this month's figures), in the
/// account's regions.
pub(crate) async fn alerts_api(
    State(state): State<Arc<HubState>>,
    Extension(CurrentUser(user)): Extension<CurrentUser>,
) -> Response {
    let today = local_day(OffsetDateTime::now_utc(), DEFAULT_OFFSET_HOURS);
    let region = match scope(&user, None) {
        Ok(region) => region,
        Err(response) => return *response,
    };
    match table(&state, Period::Month, today, region.as_deref()) {
        Ok((table, _)) => Json(current_alerts(&state, &table)).into_response(),
        Err(response) => *response,
    }
}
