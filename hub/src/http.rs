//! The hub's web UI and API: the sites page and `/api/v1/sites` (admins and health
//! authorities), received transfers (admins), on top of the shared login/health/metrics router.
//! Every `/api/v1` route is registered with its OpenAPI description (`grassroots_web::openapi`).

use std::sync::Arc;

use axum::extract::{Extension, State};
use axum::middleware::from_fn_with_state;
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::get;
use axum::{Json, Router};
use grassroots_transport::PartialBlobStatus;
use grassroots_web::i18n::tr;
use grassroots_web::nav::NavItem;
use grassroots_web::pages::{escape, page};
use grassroots_web::{require_role, CurrentUser, StaffRole, WebError, WebState};
use prometheus_client::registry::Registry;
use serde::Serialize;
use time::OffsetDateTime;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::link::ReceivedRecord;
use crate::sites::SiteStatus;
use crate::{
    consult, consult_page, coverage_pages, coverage_report, coverage_trends, live, model_pages,
    referrals, reports, round_pages, study_consult, HubError, HubState,
};

const SITE_VIEWERS: &[StaffRole] = &[StaffRole::Admin, StaffRole::Authority];
const ADMINS: &[StaffRole] = &[StaffRole::Admin];
/// Who sees the referrals (admins, to assign them) and their audit.
const REFERRAL_VIEWERS: &[StaffRole] = &[StaffRole::Expert, StaffRole::Admin];
/// Clinical actions — taking a case, viewing its slides, answering — are the experts' alone:
/// an admin administers, and never sees a patient's tissue or signs a diagnosis.
pub(crate) const EXPERTS: &[StaffRole] = &[StaffRole::Expert];

/// The hub's pages in the header, each with the roles its route is guarded with below (pages
/// about the whole network also refuse accounts limited to regions, as `refuse_region_limited`
/// does for their routes).
pub const NAV: &[NavItem] = &[
    NavItem::new("/referrals", "Referrals", REFERRAL_VIEWERS),
    NavItem::new("/coverage", "Coverage", SITE_VIEWERS),
    NavItem::new("/sites", "Sites", SITE_VIEWERS).whole_network(),
    NavItem::new("/models", "Models", SITE_VIEWERS).whole_network(),
    NavItem::new("/rounds", "Rounds", SITE_VIEWERS).whole_network(),
    NavItem::new("/transfers", "Transfers", ADMINS),
    NavItem::new("/security", "Security", ADMINS),
];

pub fn web_state(state: &HubState, metrics: Arc<Registry>) -> Result<WebState, HubError> {
    let title = format!("Hub — {}", state.kit.network);
    let token = match &state.config.metrics_token_file {
        Some(path) => Some(grassroots_web::read_metrics_token(path)?),
        None => None,
    };
    Ok(
        WebState::new(&state.store, metrics, title, state.config.secure_cookies)?
            .with_metrics_token(token.as_deref())
            .with_trusted_proxies(&state.config.trusted_proxies),
    )
}

/// The hub's pages and API on top of the shared router, with the API's document at
/// `/api/v1/openapi.json`.
pub fn router(state: Arc<HubState>, web: WebState) -> Result<Router, HubError> {
    let sites = OpenApiRouter::new()
        .route("/sites", get(sites_page))
        .routes(routes!(sites_api))
        .routes(routes!(model_pages::versions_api))
        .route("/models", get(model_pages::models_page))
        .routes(routes!(round_pages::rounds_api))
        .route("/rounds", get(round_pages::rounds_page))
        // Network-wide pages: an authority account limited to regions sees coverage only.
        .route_layer(axum::middleware::from_fn(refuse_region_limited))
        .route_layer(from_fn_with_state(
            (web.clone(), SITE_VIEWERS),
            require_role,
        ));
    let coverage = OpenApiRouter::new()
        .route("/coverage", get(coverage_pages::coverage_page))
        .route("/coverage/report", get(coverage_report::report_page))
        .route("/coverage/site/{site}", get(coverage_trends::site_page))
        .routes(routes!(coverage_pages::coverage_api))
        .routes(routes!(coverage_pages::alerts_api))
        .routes(routes!(coverage_trends::trend_api))
        .route_layer(from_fn_with_state(
            (web.clone(), SITE_VIEWERS),
            require_role,
        ));
    let admin = OpenApiRouter::new()
        .routes(routes!(model_pages::add_api))
        .routes(routes!(round_pages::start_api))
        .routes(routes!(model_pages::rollback_api))
        .routes(routes!(model_pages::release_api))
        .routes(routes!(model_pages::canary_api))
        .routes(routes!(model_pages::pin_api))
        .route("/transfers", get(transfers_page))
        .routes(routes!(transfers_api))
        .routes(routes!(consult::assign_api))
        .route_layer(from_fn_with_state((web.clone(), ADMINS), require_role));
    let referral_viewers = OpenApiRouter::new()
        .route("/referrals", get(referrals::referrals_page))
        .routes(routes!(referrals::referrals_api))
        .routes(routes!(consult::audit_api))
        .route_layer(from_fn_with_state(
            (web.clone(), REFERRAL_VIEWERS),
            require_role,
        ));
    let experts = OpenApiRouter::new()
        .routes(routes!(consult::claim_api))
        .routes(routes!(reports::report_api))
        .routes(routes!(consult::cache_api))
        .routes(routes!(consult_page::link_api))
        .route("/consult/{referral}", get(consult_page::consult_page))
        .route("/consult/{referral}/live", get(live::live_ws))
        .route("/consult/{referral}/slides/{name}", get(consult::dzi))
        .route(
            "/consult/{referral}/thumbnail/{slide}",
            get(consult::thumbnail),
        )
        .route(
            "/consult/{referral}/slides/{name}/{level}/{file}",
            get(consult::tile),
        )
        .route(
            "/consult/{referral}/studies/{study}/series/{series}",
            get(study_consult::images_page),
        )
        .route(
            "/consult/{referral}/studies/{study}/series/{series}/mpr",
            get(study_consult::mpr_page),
        )
        .route(
            "/consult/{referral}/studies/{study}/series/{series}/3d",
            get(study_consult::volume_page),
        )
        .route(
            "/consult/{referral}/studies/{study}/series/{series}/render",
            get(study_consult::render_ws),
        )
        .route(
            "/consult/{referral}/studies/{study}/series/{series}/stack",
            get(study_consult::stack_figures),
        )
        .route(
            "/consult/{referral}/studies/{study}/series/{series}/region",
            get(study_consult::region_figures),
        )
        .route_layer(from_fn_with_state((web.clone(), EXPERTS), require_role));
    let router = OpenApiRouter::new()
        .merge(
            OpenApiRouter::new()
                .route(
                    "/",
                    get({
                        let node_title = web.node_title.clone();
                        move |user: Extension<CurrentUser>| home(node_title.clone(), user)
                    }),
                )
                .route_layer(from_fn_with_state(
                    (web.clone(), StaffRole::ALL),
                    require_role,
                )),
        )
        .merge(sites)
        .merge(coverage)
        .merge(referral_viewers)
        .merge(experts)
        .merge(admin)
        .route(
            &format!("{}/web/{{*path}}", grassroots_web::assets::PREFIX),
            get(consult_page::scripts),
        )
        .with_state(state)
        .merge(grassroots_web::router(web))
        .layer(from_fn_with_state(NAV, grassroots_web::nav::scope));
    grassroots_web::openapi::finish(
        router,
        "Grassroots hub API",
        "The hub of a Grassroots network: its sites, model versions and federated rounds, \
         regional coverage for health authorities, and the referrals experts answer.",
    )
    .map_err(HubError::Web)
}

/// `GET /`: the first page the account may open (an expert's referrals, an authority's coverage).
/// An account with no page here (a clinician's account on the hub) is told where its work is.
async fn home(
    node_title: String,
    Extension(CurrentUser(user)): Extension<CurrentUser>,
) -> Response {
    match NavItem::home(NAV, &user) {
        Some(item) => Redirect::to(item.href).into_response(),
        None => (
            axum::http::StatusCode::FORBIDDEN,
            page(
                &node_title,
                "No page for this account",
                Some(&user),
                &format!(
                    "<p>{}</p>",
                    grassroots_web::i18n::tr(
                        "The hub's pages are for experts, health authorities and the network's \
                         administrators. A clinician's work is on the edge node of their hospital."
                    )
                ),
            ),
        )
            .into_response(),
    }
}

pub(crate) fn statuses(state: &HubState) -> Result<Vec<SiteStatus>, HubError> {
    let registry = state.revocations.registry();
    state.sites.statuses(
        registry.as_deref(),
        |serial| state.revocations.is_revoked(serial),
        OffsetDateTime::now_utc(),
    )
}

fn internal(error: HubError) -> Response {
    WebError::Internal(error.to_string()).into_response()
}

/// `GET /api/v1/sites` (admins, health authorities not limited to regions).
#[utoipa::path(get, path = "/api/v1/sites", tag = "sites",
    responses(
        (status = 200, description = "Every site: online state, last seen, certificate expiry", body = Vec<SiteStatus>),
        grassroots_web::openapi::Refusals))]
async fn sites_api(State(state): State<Arc<HubState>>) -> Response {
    match statuses(&state) {
        Ok(rows) => Json(rows).into_response(),
        Err(error) => internal(error),
    }
}

fn ago(then: Option<OffsetDateTime>, now: OffsetDateTime) -> String {
    let Some(then) = then else {
        return tr("never").into();
    };
    let seconds = (now - then).whole_seconds().max(0);
    match seconds {
        0..=4 => tr("just now").into(),
        5..=119 => tr("{} s ago").replace("{}", &seconds.to_string()),
        120..=7199 => tr("{} min ago").replace("{}", &(seconds / 60).to_string()),
        7200..=172_799 => tr("{} h ago").replace("{}", &(seconds / 3600).to_string()),
        _ => tr("{} days ago").replace("{}", &(seconds / 86_400).to_string()),
    }
}

async fn sites_page(
    State(state): State<Arc<HubState>>,
    Extension(CurrentUser(user)): Extension<CurrentUser>,
) -> Response {
    let rows = match statuses(&state) {
        Ok(rows) => rows,
        Err(error) => return internal(error),
    };
    let now = OffsetDateTime::now_utc();
    let warn_days = state.config.expiry_warning_days;
    let mut table = String::new();
    for row in &rows {
        let (class, label) = match (row.revoked, row.online, row.last_seen) {
            (true, _, _) => ("revoked", tr("revoked")),
            (false, true, _) => ("online", tr("online")),
            (false, false, Some(_)) => ("offline", tr("offline")),
            (false, false, None) => ("muted", tr("never connected")),
        };
        let expiry = match (row.certificate_not_after, row.certificate_days_left) {
            (Some(date), Some(days)) => {
                let class = if days < warn_days { "error" } else { "" };
                format!(
                    r#"<span class="{class}">{} {}</span>"#,
                    date.date(),
                    tr("({} days)").replace("{}", &days.to_string())
                )
            }
            _ => "—".into(),
        };
        table.push_str(&format!(
            "<tr><td><b>{}</b><br><span class=\"muted\">{}</span></td><td class=\"{class}\">{label}</td><td>{}</td><td>{}</td><td>{}</td><td>{expiry}</td></tr>",
            escape(&row.site_id),
            escape(row.name.as_deref().unwrap_or("")),
            escape(&ago(row.last_seen, now)),
            row.rtt_ms.map(|rtt| format!("{rtt:.1} ms")).unwrap_or_else(|| "—".into()),
            row.protocol_version.map(|v| format!("v{v}")).unwrap_or_else(|| "—".into()),
        ));
    }
    if rows.is_empty() {
        table.push_str(&format!(
            r#"<tr><td colspan="6" class="muted">{}</td></tr>"#,
            tr("No sites yet: add one with {}.")
                .replace("{}", "<code>grassroots provision add-site</code>")
        ));
    }
    let online = rows.iter().filter(|r| r.online).count();
    let hub_expiry = state
        .kit
        .identity()
        .map(|identity| {
            format!(
                "{} {}",
                identity.not_after.date(),
                tr("({} days)").replace("{}", &identity.days_left(now).to_string())
            )
        })
        .unwrap_or_default();
    let live = grassroots_web::pages::live_updates(5);
    let body = format!(
        r#"{live}
<div class="card"><dl class="facts"><dt>Network</dt><dd>{network}</dd><dt>Sites online</dt><dd>{online_of_total}</dd>
<dt>Hub certificate expires</dt><dd>{hub_expiry}</dd><dt>Revocation list</dt><dd>{crl}</dd></dl></div>
<div class="table-wrap"><table><thead><tr><th>Site</th><th>State</th><th>Last seen</th><th>Round trip</th><th>Protocol</th><th>Certificate expires</th></tr></thead>
<tbody>{table}</tbody></table></div>"#,
        network = escape(&state.kit.network),
        online_of_total = tr("{count} of {total}")
            .replace("{count}", &online.to_string())
            .replace("{total}", &rows.len().to_string()),
        crl = if state.config.revocation_list.is_some() {
            tr("watched").to_string()
        } else {
            format!("<span class=\"error\">{}</span>", tr("not configured"))
        },
    );
    page(
        &format!("Hub — {}", state.kit.network),
        "Sites",
        Some(&user),
        &body,
    )
    .into_response()
}

fn received(state: &HubState) -> Result<Vec<ReceivedRecord>, HubError> {
    let mut rows: Vec<ReceivedRecord> = state
        .received
        .entries()?
        .into_iter()
        .map(|(_, r)| r)
        .collect();
    rows.sort_by_key(|row| std::cmp::Reverse(row.received_at));
    Ok(rows)
}

/// The answer of `GET /api/v1/transfers`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
struct Transfers {
    /// Blobs the edges delivered, newest first.
    received: Vec<ReceivedRecord>,
    /// Blobs being received now.
    in_progress: Vec<PartialBlobStatus>,
}

/// `GET /api/v1/transfers` (admins): bulk transfers received and in progress.
#[utoipa::path(get, path = "/api/v1/transfers", tag = "transfers",
    responses(
        (status = 200, description = "Blobs received from the edges, newest first, and those in progress", body = Transfers),
        grassroots_web::openapi::Refusals))]
async fn transfers_api(State(state): State<Arc<HubState>>) -> Response {
    match received(&state) {
        Ok(rows) => Json(Transfers {
            received: rows,
            in_progress: state.blobs.partials(),
        })
        .into_response(),
        Err(error) => internal(error),
    }
}

async fn transfers_page(
    State(state): State<Arc<HubState>>,
    Extension(CurrentUser(user)): Extension<CurrentUser>,
) -> Response {
    let rows = match received(&state) {
        Ok(rows) => rows,
        Err(error) => return internal(error),
    };
    let mut body = grassroots_web::pages::live_updates(5);
    body.push_str(
        r#"<h2>In progress</h2><div class="table-wrap"><table><thead><tr><th>Blob</th><th>What</th><th>Progress</th></tr></thead><tbody>"#,
    );
    for partial in state.blobs.partials() {
        let percent = if partial.size == 0 {
            100.0
        } else {
            partial.durable_bytes as f64 * 100.0 / partial.size as f64
        };
        body.push_str(&format!(
            "<tr><td><code>{}</code></td><td>{}</td><td><progress max=\"100\" value=\"{percent:.0}\"></progress> {}</td></tr>",
            escape(&partial.id[..16]),
            escape(&partial.label),
            tr("{percent}% of {size} bytes")
                .replace("{percent}", &format!("{percent:.0}"))
                .replace("{size}", &partial.size.to_string())
        ));
    }
    body.push_str(r#"</tbody></table></div><h2>Received</h2><div class="table-wrap"><table><thead><tr><th>Blob</th><th>What</th><th>From</th><th>Size</th><th>Received</th></tr></thead><tbody>"#);
    for row in rows {
        body.push_str(&format!(
            "<tr><td><code>{}</code></td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            escape(&row.id[..16]),
            escape(&row.label),
            escape(&row.from_site),
            row.size,
            row.received_at
        ));
    }
    body.push_str("</tbody></table></div>");
    Html(
        page(
            &format!("Hub — {}", state.kit.network),
            "Transfers",
            Some(&user),
            &body,
        )
        .0,
    )
    .into_response()
}

/// Refuses an authority account limited to regions (`Account.regions`) on the network-wide
/// pages (sites, models, rounds): they list every site, and such an account sees its regions'
/// coverage only.
async fn refuse_region_limited(
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let limited = request
        .extensions()
        .get::<CurrentUser>()
        .is_some_and(|CurrentUser(user)| !user.regions.is_empty());
    if limited {
        return WebError::Forbidden(
            "this account sees the coverage of its regions only (/coverage)".into(),
        )
        .into_response();
    }
    next.run(request).await
}
