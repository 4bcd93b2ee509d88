//! The coverage page and API for health authorities (and admins): who may see which region,
//! the period's table cut to that region, and the handlers that serve it as a page, JSON or
//! CSV (rendered by `crate::coverage_html`).
//!
//! Why one place decides the scope: every view — page, export, trend, site page, report,
//! alerts — must show an account limited to its regions nothing wider, and every view of a
//! period must hide the same cells (`Coverage::table` solves suppression once per period).

use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use grassroots_web::pages::page;
use grassroots_web::{normalize_region, Account, CurrentUser, WebError};
use grassroots_wire::coverage::{day_string, local_day, parse_day, DEFAULT_OFFSET_HOURS};
use serde::Deserialize;
use time::{Date, OffsetDateTime};

use std::collections::BTreeMap;

use grassroots_provisioning::SiteLocation;

use crate::coverage::{CoverageTable, Period};
use crate::coverage_map::Alert;
use crate::HubState;

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
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
pub(crate) type Locations = BTreeMap<String, SiteLocation>;

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
    (sites, registry.locations.clone())
}

fn in_region(location: Option<&SiteLocation>, region: &str) -> bool {
    let region = normalize_region(region);
    let wanted: Vec<&str> = region.split('/').collect();
    location.is_some_and(|l| {
        wanted.len() <= l.region.len() && wanted.iter().zip(&l.region).all(|(w, r)| *w == r)
    })
}

/// The region an account's request is answered for: what it asked, if the account may see it
/// (an account limited to regions sees only those and regions inside them; unasked, its first);
/// refused otherwise.
pub(crate) fn scope(user: &Account, asked: Option<&str>) -> Result<Option<String>, Box<Response>> {
    let asked = asked.map(normalize_region).filter(|r| !r.is_empty());
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

/// Whether `user` may see the site at `location`: any site for an unlimited account; for one
/// limited to regions, a site located inside one of them.
pub(crate) fn may_see_site(user: &Account, location: Option<&SiteLocation>) -> bool {
    user.regions.is_empty() || user.regions.iter().any(|own| in_region(location, own))
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
    if let Some(name) = region.map(normalize_region).filter(|r| !r.is_empty()) {
        let Some(total) = table.groups.iter().find(|g| g.site == name).cloned() else {
            return Err(Box::new(
                WebError::BadRequest(format!("no site is in region {name:?}")).into_response(),
            ));
        };
        table
            .rows
            .retain(|row| in_region(locations.get(&row.site), &name));
        // Only the region's own sub-regions: a wider or a sibling region's total is not its.
        let inside = format!("{name}/");
        table
            .groups
            .retain(|g| g.site == name || g.site.starts_with(&inside));
        table.total = total;
    }
    Ok((table, locations))
}

/// [`table`] off the async workers (a cold table of 2,000 sites is solved in tens of ms).
pub(crate) async fn table_blocking(
    state: &Arc<HubState>,
    period: Period,
    day: Date,
    region: Option<String>,
) -> Result<(CoverageTable, Locations), Box<Response>> {
    let state = state.clone();
    tokio::task::spawn_blocking(move || table(&state, period, day, region.as_deref()))
        .await
        .unwrap_or_else(|e| Err(Box::new(WebError::Internal(e.to_string()).into_response())))
}

/// `GET /api/v1/coverage?period=&at=&format=json|csv`.
#[utoipa::path(get, path = "/api/v1/coverage", tag = "coverage", params(CoverageQuery),
    responses(
        (status = 200, description = "The period's table, suppressed, for the account's region: as JSON, or as CSV with `format=csv`",
            content((CoverageTable = "application/json"), (String = "text/csv"))),
        (status = 400, description = "A bad period, day, format or region (no site in it)", body = grassroots_web::openapi::ApiError),
        grassroots_web::openapi::Refusals, grassroots_web::openapi::InputRefusals))]
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
    let table = match table_blocking(&state, period, day, region).await {
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
            crate::coverage_html::csv(&table),
        )
            .into_response(),
        Some(other) => bad_request(format!("format {other:?}: json or csv")),
    }
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
    let (table, locations) = match table_blocking(&state, period, day, region.clone()).await {
        Ok(found) => found,
        Err(response) => return *response,
    };
    let alert_list = current_alerts(&state, &table);
    let body = crate::coverage_html::page_body(
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
#[utoipa::path(get, path = "/api/v1/coverage/alerts", tag = "coverage",
    responses(
        (status = 200, description = "What needs attention now, at the sites the account may see", body = Vec<Alert>),
        grassroots_web::openapi::Refusals))]
pub(crate) async fn alerts_api(
    State(state): State<Arc<HubState>>,
    Extension(CurrentUser(user)): Extension<CurrentUser>,
) -> Response {
    let today = local_day(OffsetDateTime::now_utc(), DEFAULT_OFFSET_HOURS);
    // The whole network's alerts, kept to the sites the account may see (all its regions).
    match table_blocking(&state, Period::Month, today, None).await {
        Ok((table, locations)) => {
            let alerts: Vec<Alert> = current_alerts(&state, &table)
                .into_iter()
                .filter(|a| may_see_site(&user, locations.get(&a.site)))
                .collect();
            Json(alerts).into_response()
        }
        Err(response) => *response,
    }
}
