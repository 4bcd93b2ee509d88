//! The coverage dashboard's renderings of a suppressed table: the page's HTML (filters, alerts,
//! map, charts, the site table) and the CSV export.
//!
//! Kept apart from the handlers (`crate::coverage_pages`) so that what decides who sees what is
//! short enough to review in one sitting; everything here only formats what it is given, and
//! escapes (HTML) or quotes (CSV, against formula injection) every name that came from outside.

use grassroots_web::i18n::{tr, tr_any};
use grassroots_web::pages::{escape, url_component};
use grassroots_web::Account;
use grassroots_wire::coverage::day_string;
use time::Date;

use crate::coverage::{CoverageRow, CoverageTable, Period, COLUMNS};
use crate::coverage_map::Alert;
use crate::coverage_pages::{scope, Locations};
use crate::HubState;

pub(crate) fn percent(value: Option<f64>) -> String {
    value.map_or("—".into(), |v| format!("{:.1}%", v * 100.0))
}

pub(crate) fn hours(value: Option<f64>) -> String {
    match value {
        None => "—".into(),
        Some(h) if h.is_infinite() => format!("&gt; {}", tr("2 weeks")),
        Some(h) => format!("≤ {h:.0} h"),
    }
}

pub(crate) fn html_row(row: &CoverageRow, class: &str, link_query: &str) -> String {
    let count = |name: &str| row.counts.get(name).map(|c| c.text()).unwrap_or_default();
    let label = match &row.name {
        Some(name) => format!(
            "<a href=\"/coverage/site/{}?{link_query}\">{}</a> <span class=\"muted\">{}</span>",
            escape(&url_component(&row.site)),
            escape(name),
            escape(&row.site)
        ),
        None => escape(&row.site),
    };
    let label = if row.demo_days > 0 {
        format!("{label} <span class=\"demo\">{}</span>", tr("demo"))
    } else {
        label
    };
    format!(
        "<tr class=\"{class}\"><td data-label=\"{l0}\">{label}</td><td data-label=\"{l1}\">{}</td><td data-label=\"{l2}\">{}</td><td data-label=\"{l3}\">{}</td><td data-label=\"{l4}\">{}</td><td data-label=\"{l5}\">{}</td><td data-label=\"{l6}\">{}</td><td data-label=\"{l7}\">{}</td><td data-label=\"{l8}\">{}</td><td data-label=\"{l9}\">{}</td><td data-label=\"{l10}\">{}</td><td data-label=\"{l11}\">{} / {}</td><td data-label=\"{l12}\">{}</td><td data-label=\"{l13}\">{}</td></tr>",
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
        grassroots_web::pages::word(row.model.as_deref().unwrap_or("—")),
        l0 = tr("Site"),
        l1 = tr("Days reported"),
        l2 = tr("Imported"),
        l3 = tr("Screened"),
        l4 = tr("Suspicious"),
        l5 = tr("Likely benign"),
        l6 = tr("Needs re-scan"),
        l7 = tr("QC failure rate"),
        l8 = tr("Referred"),
        l9 = tr("Referral rate"),
        l10 = tr("Answered"),
        l11 = tr("Turnaround median / p90"),
        l12 = tr("Linked to the hub"),
        l13 = tr("Model"),
    )
}

/// `&region=...` for links, or nothing.
fn region_param(region: Option<&str>) -> String {
    region.map_or(String::new(), |r| {
        format!("&amp;region={}", escape(&url_component(r)))
    })
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
                    &format!("↑ {}", parent.unwrap_or(tr("whole network"))),
                ));
            }
            links.push(format!("<strong>{}</strong>", escape(current)));
        }
        None => links.push(format!("<strong>{}</strong>", tr("whole network"))),
    }
    for group in &table.groups {
        let name = group.site.as_str();
        let child = name.split('/').count() == depth + 1
            && region.is_none_or(|r| name.starts_with(&format!("{r}/")));
        if child && scope(user, Some(name)).is_ok() {
            links.push(link(Some(name), name.rsplit('/').next().unwrap_or(name)));
        }
    }
    // A limited account can always go to each of its own regions.
    for own in &user.regions {
        if region != Some(own.as_str()) {
            links.push(link(Some(own), own));
        }
    }
    links.join(" · ")
}

#[allow(clippy::too_many_arguments)]
pub(crate) fn page_body(
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
                format!("<strong>{}</strong>", tr_any(p.name()))
            } else {
                format!(
                    "<a href=\"/coverage?period={}&amp;at={at}{here}\">{}</a>",
                    p.name(),
                    tr_any(p.name())
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
    let earlier = step(first.previous_day(), tr("← earlier"));
    let later = step(last.next_day(), tr("later →"));
    let link_query = format!("period={}&amp;at={at}", period.name());
    let mut rows: String = table
        .rows
        .iter()
        .map(|r| html_row(r, "", &link_query))
        .collect();
    if table.rows.is_empty() {
        rows.push_str(&format!(
            r#"<tr><td colspan="14" class="muted">{}</td></tr>"#,
            tr("No site has reported yet. Edges send their daily figures about an hour apart, and at start.")
        ));
    }
    rows.push_str(&html_row(&table.total, "total", &link_query));
    let export = format!(
        "/api/v1/coverage?period={}&amp;at={at}{here}",
        period.name()
    );
    let map = crate::coverage_map::svg(table, locations, &state.outlines);
    let map = if map.is_empty() {
        format!(
            r#"<p class="muted">{}</p>"#,
            tr("No site has a location yet: {} records one.")
                .replace("{}", "<code>grassroots provision locate-site</code>")
        )
    } else {
        format!(
            "{map}<p class=\"muted\">{}</p>",
            tr("Dots: slides screened per 10,000 people of the catchment, darker is more; grey where the count is hidden.")
        )
    };
    let alerts_html = if alert_list.is_empty() {
        format!(r#"<p class="muted">{}</p>"#, tr("No alerts."))
    } else {
        let items: String = alert_list
            .iter()
            .map(|a| {
                format!(
                    "<li><strong>{}</strong> {}: {}</li>",
                    escape(&tr_any(a.kind)),
                    escape(&a.site),
                    escape(&a.figures.words(tr))
                )
            })
            .collect();
        format!("<ul class=\"alerts\">{items}</ul>")
    };
    let demo_days = table.total.demo_days;
    let demo = if demo_days > 0 {
        format!(
            "<p class=\"demo-banner\">{}</p>",
            tr("Demo data: {days} site-days in this period are invented figures ({flag}), not real screening.")
                .replace("{days}", &demo_days.to_string())
                .replace("{flag}", "<code>--demo-history-days</code>")
        )
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
<nav class="card filters"><p>{period_line}</p><p>{region_line}</p></nav>
<div class="card"><h2>Alerts</h2>{alerts_html}</div>
<div class="card"><h2>Sites</h2>{map}</div>
<div class="card"><h2>Over time</h2><div class="trend-chart" data-api="{trend_api}"><p class="muted">{charts_need_js}</p></div></div>
<div class="card"><p>{period_days}</p>
<p>{export_word} <a href="{export}&amp;format=csv">CSV</a> · <a href="{export}&amp;format=json">JSON</a> · <a href="{report}">{printable}</a></p>
<p class="muted">{hidden_counts}</p></div>
<div class="table-wrap"><table class="cards"><thead><tr><th>Site</th><th>Days reported</th><th>Imported</th><th>Screened</th><th>Suspicious</th><th>Likely benign</th><th>Needs re-scan</th><th>QC failure rate</th><th>Referred</th><th>Referral rate</th><th>Answered</th><th>Turnaround median / p90</th><th>Linked to the hub</th><th>Model</th></tr></thead>
<tbody>{rows}</tbody></table></div>
<script src="{prefix}/uplot/uPlot.iife.min.js"></script>
<script src="{prefix}/web/coverage.js"></script>"#,
        period_line = tr("Period: {}")
            .replace("{}", &format!("{} · {earlier} {later}", periods.join(" · "))),
        region_line = tr("Region: {}")
            .replace("{}", &region_links(user, table, period, &at, region)),
        charts_need_js = tr("Charts need JavaScript; each site's page has the same figures as a table."),
        period_days = tr("{period}: {first} to {last} (the network's calendar).")
            .replace("{first}", &table.first_day.to_string())
            .replace("{last}", &table.last_day.to_string())
            .replace("{period}", &tr_any(period.name())),
        export_word = tr("Export:"),
        printable = tr("printable monthly report"),
        hidden_counts = tr("Counts from 1 to 4 show as {}, and so does a second count wherever the first could be worked out from a total; rates and turnaround built on a hidden count are hidden too. Turnaround is from the referral leaving the site to the answer arriving back, given as the upper bound of its bucket.")
            .replace("{}", "&lt;5"),
    )
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

pub(crate) fn csv(table: &CoverageTable) -> String {
    let mut out = String::from("period,first_day,last_day,site,name,days_reported");
    for (name, _) in COLUMNS {
        out.push(',');
        out.push_str(name);
    }
    out.push_str(
        ",qc_failure_rate,referral_rate,turnaround_median_hours,turnaround_p90_hours,screening_seconds_per_slide,linked_share,demo_days,model\n",
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
            ",{},{},{},{},{},{},{},{}\n",
            optional(row.qc_failure_rate, 4),
            optional(row.referral_rate, 4),
            optional(row.turnaround_median_hours, 0),
            optional(row.turnaround_p90_hours, 0),
            optional(row.screening_seconds_per_slide, 1),
            optional(row.linked_share, 4),
            row.demo_days,
            csv_field(row.model.as_deref().unwrap_or_default())
        ));
    }
    out
}
