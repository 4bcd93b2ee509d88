//! The printable monthly report (`/coverage/report?at=&region=`): one month of a region's (or
//! the network's) coverage on paper-shaped HTML — key figures, quality-control reasons, the
//! sites, the last twelve months and the alerts — for the browser's print to PDF. No script:
//! what is printed is what the server wrote, suppressed as every other view.

use std::sync::Arc;

use axum::extract::{Query, State};
use axum::response::{IntoResponse, Response};
use axum::Extension;
use grassroots_web::i18n::{tr, tr_any};
use grassroots_web::pages::{escape, page};
use grassroots_web::{CurrentUser, WebError};
use time::OffsetDateTime;

use crate::coverage::{CoverageRow, Period};
use crate::coverage_html::{hours, percent};
use crate::coverage_pages::{current_alerts, resolve, scope, table, CoverageQuery};
use crate::coverage_trends::{trend, Subject};
use crate::HubState;

const QC_REASONS: [(&str, &str); 5] = [
    ("qc_no_tissue", "No tissue found"),
    ("qc_blur", "Out of focus"),
    ("qc_pen", "Pen marks"),
    ("qc_fold", "Tissue folds"),
    ("qc_exposure", "Exposure"),
];

fn count(row: &CoverageRow, column: &str) -> String {
    row.counts.get(column).map(|c| c.text()).unwrap_or_default()
}

/// `GET /coverage/report?at=YYYY-MM-DD&region=`: the month holding `at`.
pub(crate) async fn report_page(
    State(state): State<Arc<HubState>>,
    Extension(CurrentUser(user)): Extension<CurrentUser>,
    Query(query): Query<CoverageQuery>,
) -> Response {
    let (_, day) = match resolve(&CoverageQuery {
        period: Some("month".into()),
        at: query.at.clone(),
        format: None,
        region: None,
    }) {
        Ok(resolved) => resolved,
        Err(reason) => return WebError::BadRequest(reason).into_response(),
    };
    let region = match scope(&user, query.region.as_deref()) {
        Ok(region) => region,
        Err(response) => return *response,
    };
    let built = {
        let state = state.clone();
        let region = region.clone();
        tokio::task::spawn_blocking(move || {
            let (table, locations) = table(&state, Period::Month, day, region.as_deref())?;
            let subject = match &region {
                Some(region) => Subject::Region(region.clone()),
                None => Subject::Network,
            };
            let year = trend(&state, Period::Month, day, 12, &subject)?;
            let alerts = current_alerts(&state, &table);
            Ok::<_, Box<Response>>((table, locations, year, alerts))
        })
        .await
    };
    let (table, locations, year, alerts) = match built {
        Ok(Ok(built)) => built,
        Ok(Err(response)) => return *response,
        Err(error) => return WebError::Internal(error.to_string()).into_response(),
    };
    let total = &table.total;
    let subject = region
        .clone()
        .unwrap_or_else(|| tr("the whole network").into());
    let located: u64 = table
        .rows
        .iter()
        .filter_map(|r| locations.get(&r.site))
        .map(|l| l.catchment_population)
        .sum();
    let per_10k = |row: &CoverageRow, people: u64| {
        crate::coverage_map::per_10k(row, people).map_or("—".into(), |r| format!("{r:.2}"))
    };
    let reporting = table.rows.iter().filter(|r| r.days_reported > 0).count();
    let facts = format!(
        "<dl class=\"facts\"><dt>Sites reporting</dt><dd>{reporting}</dd><dt>Slides imported</dt><dd>{}</dd><dt>Slides screened</dt><dd>{}</dd><dt>Screened per 10,000 people</dt><dd>{}</dd><dt>Suspicious / likely benign / needs re-scan</dt><dd>{} / {} / {}</dd><dt>Screening time per slide</dt><dd>{}</dd><dt>QC failure rate</dt><dd>{}</dd><dt>Referred</dt><dd>{} {}</dd><dt>Answered</dt><dd>{}</dd><dt>Turnaround median / p90</dt><dd>{} / {}</dd><dt>Time linked to the hub</dt><dd>{}</dd></dl>",
        count(total, "slides_imported"),
        count(total, "slides_screened"),
        per_10k(total, located),
        count(total, "suspicious"),
        count(total, "likely_benign"),
        count(total, "needs_rescan"),
        total
            .screening_seconds_per_slide
            .map_or("—".into(), |s| format!("{s:.0} s")),
        percent(total.qc_failure_rate),
        count(total, "referred"),
        tr("({} of screened)").replace("{}", &percent(total.referral_rate)),
        count(total, "answered"),
        hours(total.turnaround_median_hours),
        hours(total.turnaround_p90_hours),
        percent(total.linked_share),
        reporting = tr("{count} of {total}")
            .replace("{count}", &reporting.to_string())
            .replace("{total}", &table.rows.len().to_string()),
    );
    let reasons: String = QC_REASONS
        .iter()
        .map(|(column, label)| {
            format!(
                "<tr><td>{}</td><td>{}</td></tr>",
                tr(label),
                count(total, column)
            )
        })
        .collect();
    let sites: String = table
        .rows
        .iter()
        .map(|row| {
            let people = locations.get(&row.site).map_or(0, |l| l.catchment_population);
            format!(
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                escape(row.name.as_deref().unwrap_or(&row.site)),
                row.days_reported,
                count(row, "slides_screened"),
                per_10k(row, people),
                percent(row.qc_failure_rate),
                count(row, "referred"),
                percent(row.referral_rate),
                hours(row.turnaround_median_hours),
                escape(row.model.as_deref().unwrap_or("—")),
            )
        })
        .collect();
    let months: String = year
        .points
        .iter()
        .map(|p| {
            format!(
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                escape(&p.first_day[..7]),
                p.slides_screened.text(),
                p.screened_per_10k.map_or("—".into(), |r| format!("{r:.2}")),
                percent(p.qc_failure_rate),
                percent(p.referral_rate),
                p.turnaround_median_hours
                    .map_or("—".into(), |h| format!("≤ {h:.0} h")),
            )
        })
        .collect();
    let alert_items: String = if alerts.is_empty() {
        format!("<p>{}</p>", tr("No alerts."))
    } else {
        let items: String = alerts
            .iter()
            .map(|a| {
                format!(
                    "<li>{} — {}: {}</li>",
                    escape(&tr_any(a.kind)),
                    escape(&a.site),
                    escape(&a.figures.words(tr))
                )
            })
            .collect();
        format!("<ul>{items}</ul>")
    };
    let demo = if total.demo_days > 0 || year.points.iter().any(|p| p.demo_days > 0) {
        format!(
            "<p class=\"demo-banner\">{}</p>",
            tr("Demo data: this report includes invented figures, not real screening.")
        )
    } else {
        String::new()
    };
    let printed = OffsetDateTime::now_utc().date();
    let body = format!(
        r#"<div class="report">{demo}
<p class="muted no-print">{print_hint} <a href="/coverage?period=month&amp;at={first}">{back}</a></p>
<p><strong>{network}</strong> · {subject} · {first_to_last} · {printed}</p>
<section class="card"><h2>Key figures</h2>{facts}</section>
<section class="card"><h2>Why slides needed a re-scan</h2><table><thead><tr><th>Reason</th><th>Slides</th></tr></thead><tbody>{reasons}</tbody></table></section>
<section class="card"><h2>Sites</h2><table><thead><tr><th>Site</th><th>Days reported</th><th>Screened</th><th>Per 10,000</th><th>QC failure</th><th>Referred</th><th>Referral rate</th><th>Median turnaround</th><th>Model</th></tr></thead><tbody>{sites}</tbody></table></section>
<section class="card"><h2>The last twelve months</h2><table><thead><tr><th>Month</th><th>Screened</th><th>Per 10,000</th><th>QC failure</th><th>Referral rate</th><th>Median turnaround</th></tr></thead><tbody>{months}</tbody></table></section>
<section class="card"><h2>Alerts at printing</h2>{alert_items}</section>
<p class="muted">{hidden_counts}</p></div>"#,
        print_hint = tr("Use the browser's Print (Ctrl+P) to save this page as a PDF."),
        back = tr("Back to the dashboard"),
        first_to_last = tr("{first} to {last}")
            .replace("{first}", &table.first_day)
            .replace("{last}", &table.last_day),
        printed = tr("printed {}").replace("{}", &printed.to_string()),
        hidden_counts = tr("Counts from 1 to 4 are shown as {}, with a second count hidden wherever a total would give the first away; rates built on a hidden count are hidden too. Turnaround runs from a referral leaving its site to the answer arriving back (upper bound of its bucket). Aggregates only: no patient, case or slide is named in this report.")
            .replace("{}", "&lt;5"),
        network = escape(&state.kit.network),
        subject = escape(&subject),
        first = table.first_day,
    );
    page(
        &format!("Hub — {}", state.kit.network),
        "Monthly coverage report",
        Some(&user),
        &body,
    )
    .into_response()
}
