//! Coverage over time: a region's, a site's or the network's figures across consecutive fixed
//! periods (`/api/v1/coverage/trend`, drawn by `coverage.js` with uPlot), and the site page.
//!
//! Each point is that period's row as the period's own table shows it — the same suppression,
//! solved over the whole network (`Coverage::table`) — so a chart can never show a count the
//! table hides, nor two charts be subtracted into one.

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use grassroots_web::i18n::{tr, tr_any};
use grassroots_web::pages::{escape, page, url_component};
use grassroots_web::{Account, CurrentUser, WebError};
use grassroots_wire::coverage::day_string;
use serde::{Deserialize, Serialize};
use time::Date;

use crate::coverage::{CoverageRow, CoverageTable, Period};
use crate::coverage_pages::{may_see_site, resolve, scope, table, CoverageQuery, Locations};
use crate::suppression::Cell;
use crate::HubState;

/// Most periods in one trend.
pub const MAX_POINTS: usize = 60;

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct TrendQuery {
    /// day, week, month (default), quarter or year.
    period: Option<String>,
    /// A day inside the last period, `YYYY-MM-DD` (default: today in the network's calendar).
    at: Option<String>,
    /// Periods, ending with the one holding `at` (default: 30 days, 26 weeks, 12 months, 8
    /// quarters or 5 years).
    count: Option<usize>,
    /// The trend of a region (`Henan` or `Henan/Kaifeng`) rather than the whole network's.
    region: Option<String>,
    /// The trend of one site (its id); takes precedence over `region`.
    site: Option<String>,
}

/// One period of a trend.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct TrendPoint {
    pub first_day: String,
    pub last_day: String,
    pub days_reported: u64,
    pub slides_screened: Cell,
    pub screened_per_10k: Option<f64>,
    pub qc_failure_rate: Option<f64>,
    pub referral_rate: Option<f64>,
    pub turnaround_median_hours: Option<f64>,
    pub linked_share: Option<f64>,
    pub demo_days: u64,
}

/// A site's, a region's or the network's figures over consecutive periods, oldest first.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Trend {
    pub period: Period,
    /// The site, the region, or `all sites`.
    pub subject: String,
    /// People the subject's located sites serve (for the rate per 10,000).
    pub population: Option<u64>,
    pub points: Vec<TrendPoint>,
}

pub(crate) fn default_count(period: Period) -> usize {
    match period {
        Period::Day => 30,
        Period::Week => 26,
        Period::Month => 12,
        Period::Quarter => 8,
        Period::Year => 5,
    }
}

/// The first days of `count` periods ending with the one holding `day`, oldest first.
fn period_starts(period: Period, day: Date, count: usize) -> Vec<Date> {
    let mut starts = Vec::with_capacity(count);
    let mut first = period.bounds(day).0;
    for _ in 0..count {
        starts.push(first);
        match first.previous_day() {
            Some(before) => first = period.bounds(before).0,
            None => break,
        }
    }
    starts.reverse();
    starts
}

/// What a trend is of: a site, a region, or the whole network.
pub(crate) enum Subject {
    Site(String),
    Region(String),
    Network,
}

fn point(row: &CoverageRow, population: Option<u64>, first: &str, last: &str) -> TrendPoint {
    let screened = row
        .counts
        .get("slides_screened")
        .copied()
        .unwrap_or(Cell::Shown(0));
    TrendPoint {
        first_day: first.to_string(),
        last_day: last.to_string(),
        days_reported: row.days_reported,
        slides_screened: screened,
        screened_per_10k: crate::coverage_map::per_10k(row, population.unwrap_or(0)),
        qc_failure_rate: row.qc_failure_rate,
        referral_rate: row.referral_rate,
        turnaround_median_hours: row.turnaround_median_hours.filter(|h| h.is_finite()),
        linked_share: row.linked_share,
        demo_days: row.demo_days,
    }
}

/// The tables of the periods starting on `starts`, in order, solved on up to one thread per
/// core: a cold twelve-month trend of 2,000 sites is twelve solves.
fn tables(
    state: &HubState,
    period: Period,
    starts: &[Date],
    region: Option<&str>,
) -> Vec<Result<(CoverageTable, Locations), Box<Response>>> {
    let workers = std::thread::available_parallelism().map_or(1, |n| n.get().min(4));
    let chunk = starts.len().div_ceil(workers).max(1);
    std::thread::scope(|scope| {
        let handles: Vec<_> = starts
            .chunks(chunk)
            .map(|part| {
                scope.spawn(move || {
                    part.iter()
                        .map(|first| table(state, period, *first, region))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|handle| {
                handle.join().unwrap_or_else(|_| {
                    vec![Err(Box::new(
                        WebError::Internal("a trend's table failed".into()).into_response(),
                    ))]
                })
            })
            .collect()
    })
}

pub(crate) fn trend(
    state: &HubState,
    period: Period,
    day: Date,
    count: usize,
    subject: &Subject,
) -> Result<Trend, Box<Response>> {
    let region = match subject {
        Subject::Region(region) => Some(region.as_str()),
        _ => None,
    };
    let mut points = Vec::new();
    let mut population = None;
    let mut name = "all sites".to_string();
    for solved in tables(state, period, &period_starts(period, day, count), region) {
        let (table, locations) = solved?;
        let row = match subject {
            Subject::Site(site) => table.rows.iter().find(|r| r.site == *site).cloned(),
            _ => Some(table.total.clone()),
        };
        let Some(row) = row else {
            return Err(Box::new(
                WebError::NotFound("no such site".into()).into_response(),
            ));
        };
        if population.is_none() {
            let people: u64 = match subject {
                Subject::Site(site) => locations.get(site).map_or(0, |l| l.catchment_population),
                _ => table
                    .rows
                    .iter()
                    .filter_map(|r| locations.get(&r.site))
                    .map(|l| l.catchment_population)
                    .sum(),
            };
            population = Some(people).filter(|p| *p > 0);
            name = row.name.clone().unwrap_or_else(|| row.site.clone());
        }
        points.push(point(&row, population, &table.first_day, &table.last_day));
    }
    Ok(Trend {
        period,
        subject: name,
        population,
        points,
    })
}

/// `GET /api/v1/coverage/trend?period=&at=&count=&region=|site=`.
#[utoipa::path(get, path = "/api/v1/coverage/trend", tag = "coverage", params(TrendQuery),
    responses(
        (status = 200, description = "The figures of consecutive periods, oldest first, as each period's table shows them", body = Trend),
        (status = 400, description = "A bad period, day or count, or a region with no site in it", body = grassroots_web::openapi::ApiError),
        (status = 404, description = "No such site, or one outside the account's regions", body = grassroots_web::openapi::ApiError),
        grassroots_web::openapi::Refusals, grassroots_web::openapi::InputRefusals))]
pub(crate) async fn trend_api(
    State(state): State<Arc<HubState>>,
    Extension(CurrentUser(user)): Extension<CurrentUser>,
    Query(query): Query<TrendQuery>,
) -> Response {
    let resolved = resolve(&CoverageQuery {
        period: query.period.clone(),
        at: query.at.clone(),
        format: None,
        region: None,
    });
    let (period, day) = match resolved {
        Ok(resolved) => resolved,
        Err(reason) => return WebError::BadRequest(reason).into_response(),
    };
    let count = query.count.unwrap_or_else(|| default_count(period));
    if !(1..=MAX_POINTS).contains(&count) {
        return WebError::BadRequest(format!("count from 1 to {MAX_POINTS}")).into_response();
    }
    let subject = match (&query.site, scope(&user, query.region.as_deref())) {
        (_, Err(response)) => return *response,
        (Some(site), Ok(_)) => {
            // A site outside the account's regions is as absent as an unknown one.
            if let Err(response) = site_in_scope(&state, site, &user) {
                return *response;
            }
            Subject::Site(site.clone())
        }
        (None, Ok(Some(region))) => Subject::Region(region),
        (None, Ok(None)) => Subject::Network,
    };
    let state2 = state.clone();
    let computed =
        tokio::task::spawn_blocking(move || trend(&state2, period, day, count, &subject)).await;
    match computed {
        Ok(Ok(trend)) => Json(trend).into_response(),
        Ok(Err(response)) => *response,
        Err(error) => WebError::Internal(error.to_string()).into_response(),
    }
}

/// Refuses a site the account may not see as if it did not exist.
fn site_in_scope(state: &HubState, site: &str, user: &Account) -> Result<(), Box<Response>> {
    let (sites, locations) = crate::coverage_pages::registry_sites(state);
    let known = sites.iter().any(|(id, _)| id == site);
    if known && may_see_site(user, locations.get(site)) {
        Ok(())
    } else {
        Err(Box::new(
            WebError::NotFound(format!("no site {site:?} here")).into_response(),
        ))
    }
}

/// `GET /coverage/site/{site}?period=&at=`: one site's figures over time, its place and model.
pub(crate) async fn site_page(
    State(state): State<Arc<HubState>>,
    Extension(CurrentUser(user)): Extension<CurrentUser>,
    Path(site): Path<String>,
    Query(query): Query<CoverageQuery>,
) -> Response {
    let (period, day) = match resolve(&query) {
        Ok(resolved) => resolved,
        Err(reason) => return WebError::BadRequest(reason).into_response(),
    };
    if let Err(response) = site_in_scope(&state, &site, &user) {
        return *response;
    }
    let computed = {
        let state = state.clone();
        let site = site.clone();
        tokio::task::spawn_blocking(move || {
            trend(
                &state,
                period,
                day,
                default_count(period),
                &Subject::Site(site),
            )
        })
        .await
    };
    let trend = match computed {
        Ok(Ok(trend)) => trend,
        Ok(Err(response)) => return *response,
        Err(error) => return WebError::Internal(error.to_string()).into_response(),
    };
    let (_, locations) = crate::coverage_pages::registry_sites(&state);
    let place = locations
        .get(&site)
        .map_or(tr("not located").to_string(), |l| {
            format!(
                "{} · {:.3}, {:.3} · {}",
                l.region.join(" / "),
                l.latitude(),
                l.longitude(),
                tr("catchment {} people").replace("{}", &l.catchment_population.to_string())
            )
        });
    let rows: String = trend
        .points
        .iter()
        .rev()
        .map(|p| {
            format!(
                "<tr><td data-label=\"{l0}\">{}{}</td><td data-label=\"{l1}\">{}</td><td data-label=\"{l2}\">{}</td><td data-label=\"{l3}\">{}</td><td data-label=\"{l4}\">{}</td><td data-label=\"{l5}\">{}</td><td data-label=\"{l6}\">{}</td><td data-label=\"{l7}\">{}</td></tr>",
                escape(&p.first_day),
                if p.demo_days > 0 {
                    format!(" <span class=\"demo\">{}</span>", tr("demo"))
                } else {
                    String::new()
                },
                p.days_reported,
                p.slides_screened.text(),
                p.screened_per_10k.map_or("—".into(), |r| format!("{r:.2}")),
                crate::coverage_html::percent(p.qc_failure_rate),
                crate::coverage_html::percent(p.referral_rate),
                p.turnaround_median_hours.map_or("—".into(), |h| format!("≤ {h:.0} h")),
                crate::coverage_html::percent(p.linked_share),
                l0 = tr("Period"),
                l1 = tr("Days reported"),
                l2 = tr("Screened"),
                l3 = tr("Per 10,000"),
                l4 = tr("QC failure rate"),
                l5 = tr("Referral rate"),
                l6 = tr("Median turnaround"),
                l7 = tr("Linked to the hub"),
            )
        })
        .collect();
    let at = day_string(day);
    let api = format!(
        "/api/v1/coverage/trend?period={}&amp;at={at}&amp;site={}",
        period.name(),
        escape(&url_component(&site))
    );
    let prefix = grassroots_web::assets::PREFIX;
    let body = format!(
        r#"<link rel="stylesheet" href="{prefix}/uplot/uPlot.min.css">
<p><a href="/coverage?period={period}&amp;at={at}">{back}</a></p>
<div class="card"><dl class="facts"><dt>Site</dt><dd>{site}</dd><dt>Where</dt><dd>{place}</dd></dl></div>
<div class="card"><h2>{over_time}</h2><div class="trend-chart" data-api="{api}"><p class="muted">{charts_need_js}</p></div></div>
<div class="table-wrap"><table class="cards"><thead><tr><th>Period</th><th>Days reported</th><th>Screened</th><th>Per 10,000</th><th>QC failure rate</th><th>Referral rate</th><th>Median turnaround</th><th>Linked to the hub</th></tr></thead><tbody>{rows}</tbody></table></div>
<script src="{prefix}/uplot/uPlot.iife.min.js"></script>
<script src="{prefix}/web/coverage.js"></script>"#,
        period = period.name(),
        back = tr("← Regional coverage"),
        over_time = tr("Over time ({}s)").replace("{}", &tr_any(period.name())),
        charts_need_js = tr("Charts need JavaScript; the table below has the same figures."),
        site = escape(&trend.subject),
        place = escape(&place),
    );
    page(
        &format!("Hub — {}", state.kit.network),
        &tr("Coverage · {}").replace("{}", &trend.subject),
        Some(&user),
        &body,
    )
    .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use grassroots_wire::coverage::parse_day;

    #[test]
    fn trends_step_back_through_whole_periods() {
        let day = parse_day("2026-11-30").unwrap();
        let months: Vec<String> = period_starts(Period::Month, day, 3)
            .into_iter()
            .map(day_string)
            .collect();
        assert_eq!(months, ["2026-09-01", "2026-10-01", "2026-11-01"]);
        let weeks = period_starts(Period::Week, day, 2);
        assert_eq!(day_string(weeks[0]), "2026-11-23");
        let quarters = period_starts(Period::Quarter, parse_day("2026-02-01").unwrap(), 2);
        assert_eq!(day_string(quarters[0]), "2025-10-01");
    }
}
