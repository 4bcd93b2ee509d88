//! Referrals arriving from edges, and the experts' worklist of them.
//!
//! A referral reaches the hub as a bulk transfer labelled `referral` (see
//! `grassroots_wire::referral`, which lists every field that crosses). It is parsed strictly
//! (unknown fields refused), validated, and stored under its id **before** the transfer is
//! acknowledged: a hub that dies in between gets it offered again and stores nothing twice.
//! The worklist orders referrals by urgency, then by how long they have waited.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use axum::extract::{Extension, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use grassroots_store::Table;
use grassroots_web::i18n::{tr, tr_any};
use grassroots_web::pages::{escape, page};
use grassroots_web::{CurrentUser, WebError};
use grassroots_wire::referral::Referral;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::{HubError, HubState};

/// A referral at the hub.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct HubReferral {
    /// The site that sent it (from its certificate, not from the referral).
    pub site: String,
    pub referral: Referral,
    #[serde(with = "time::serde::rfc3339")]
    pub received_at: OffsetDateTime,
    /// The expert who took the case on; only they fetch its tiles.
    #[serde(default)]
    pub assigned_to: Option<String>,
    /// When the expert claimed it.
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub claimed_at: Option<OffsetDateTime>,
    /// When the expert first viewed one of its slides.
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub opened_at: Option<OffsetDateTime>,
    /// The expert's answer, once given.
    #[serde(default)]
    pub report: Option<grassroots_wire::referral::ConsultReport>,
    /// When the referring edge confirmed it has the answer.
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub report_delivered_at: Option<OffsetDateTime>,
    /// Why the referring edge last refused the answer (it stays undelivered meanwhile).
    #[serde(default)]
    pub report_refused: Option<String>,
}

/// Why an expert's action on a referral was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    NoSuchReferral,
    /// Another expert holds it.
    HeldBy(String),
    /// Only the expert who claimed it may answer.
    NotAssigned,
    /// It has its answer already.
    Answered,
}

impl Refusal {
    /// The HTTP answer, with the reason in words.
    pub fn response(&self, id: &str) -> Response {
        let (status, reason) = match self {
            Refusal::NoSuchReferral => (StatusCode::NOT_FOUND, format!("no referral {id}")),
            Refusal::HeldBy(other) => (
                StatusCode::CONFLICT,
                format!("already taken by {other}: only they view its slides and answer"),
            ),
            Refusal::NotAssigned => (
                StatusCode::FORBIDDEN,
                format!("referral {id} is not assigned to you"),
            ),
            Refusal::Answered => (
                StatusCode::CONFLICT,
                format!("referral {id} is answered already"),
            ),
        };
        (
            status,
            Json(grassroots_web::openapi::ApiError { error: reason }),
        )
            .into_response()
    }
}

/// Whether `expert` may answer `referral`: the one who claimed it, once.
pub fn answer_refusal(referral: &HubReferral, expert: &str) -> Option<Refusal> {
    if referral.assigned_to.as_deref() != Some(expert) {
        Some(Refusal::NotAssigned)
    } else if referral.report.is_some() {
        Some(Refusal::Answered)
    } else {
        None
    }
}

/// What became of a referral blob.
#[derive(Debug, PartialEq, Eq)]
pub enum Receipt {
    New,
    AlreadyHad,
}

#[derive(Clone)]
pub struct ReferralInbox {
    table: Table<HubReferral>,
    /// Answers not yet delivered, by referral id, with the site to deliver to: the delivery
    /// loop reads this, not every referral. Written after the answer and removed after its
    /// delivery is recorded; `index_undelivered` mends it at start after a crash in between.
    undelivered: Table<String>,
    /// Referrals known to have `opened_at` set: a tile request then writes nothing.
    opened: Arc<Mutex<HashSet<String>>>,
}

impl ReferralInbox {
    pub fn new(table: Table<HubReferral>, undelivered: Table<String>) -> Self {
        Self {
            table,
            undelivered,
            opened: Arc::default(),
        }
    }

    /// Indexes every answer stored but not delivered (a pass over the referrals, made at start
    /// and now and then: it mends an index entry that a crash or a failed write left out).
    /// It only adds: an entry of an answer since delivered is removed by the delivery worker,
    /// so an answer indexed while this pass runs is never lost. Returns how many are waiting.
    pub fn index_undelivered(&self) -> Result<usize, HubError> {
        let mut waiting = 0;
        for (id, referral) in self.table.entries()? {
            if referral.report.is_some() && referral.report_delivered_at.is_none() {
                waiting += 1;
                if self.undelivered.get(&id)?.is_none() {
                    self.undelivered.put(&id, &referral.site)?;
                }
            }
        }
        self.undelivered.flush()?;
        Ok(waiting)
    }

    /// Forgets the index entry of an answer that needs no delivery (delivered, or gone).
    pub fn unindex(&self, id: &str) -> Result<(), HubError> {
        self.undelivered.remove_durable(id)?;
        Ok(())
    }

    /// Answers waiting for their edge: (referral id, site).
    pub fn undelivered(&self) -> Result<Vec<(String, String)>, HubError> {
        Ok(self.undelivered.entries()?)
    }

    /// Records the first time the expert saw something of the referral (for its timeline).
    pub fn opened(&self, id: &str) {
        let mut opened = self.opened.lock().unwrap_or_else(|p| p.into_inner());
        if opened.contains(id) {
            return;
        }
        let result = self.table.update(id, |current| {
            current.map(|mut referral| {
                referral
                    .opened_at
                    .get_or_insert_with(OffsetDateTime::now_utc);
                referral
            })
        });
        match result {
            Ok(_) => {
                opened.insert(id.to_string());
            }
            Err(error) => tracing::error!(%error, "cannot record that a referral was opened"),
        }
    }

    /// Stores a referral blob from `site`; durable on return. A malformed one is an error that
    /// names what is wrong (retrying will not help it); the same referral again is a no-op.
    pub fn receive(&self, site: &str, bytes: &[u8]) -> Result<Receipt, HubError> {
        let referral: Referral = serde_json::from_slice(bytes)
            .map_err(|e| HubError::Config(format!("malformed referral from {site}: {e}")))?;
        referral
            .validate()
            .map_err(|e| HubError::Config(format!("referral from {site} refused: {e}")))?;
        let id = referral.referral_id.clone();
        let record = HubReferral {
            site: site.to_string(),
            referral,
            received_at: OffsetDateTime::now_utc(),
            assigned_to: None,
            claimed_at: None,
            opened_at: None,
            report: None,
            report_delivered_at: None,
            report_refused: None,
        };
        if self.table.insert_new_durable(&id, &record)? {
            Ok(Receipt::New)
        } else {
            Ok(Receipt::AlreadyHad)
        }
    }

    pub fn get(&self, id: &str) -> Result<Option<HubReferral>, HubError> {
        Ok(self.table.get(id)?)
    }

    /// Assigns an unassigned referral to `expert` (again to the same expert is fine). Durable
    /// on return.
    pub fn claim(&self, id: &str, expert: &str) -> Result<Result<HubReferral, Refusal>, HubError> {
        self.change(id, |referral| match &referral.assigned_to {
            Some(other) if other != expert => Some(Refusal::HeldBy(other.clone())),
            _ => {
                referral.assigned_to = Some(expert.to_string());
                referral
                    .claimed_at
                    .get_or_insert_with(OffsetDateTime::now_utc);
                None
            }
        })
    }

    /// An admin gives an unanswered referral to `expert` (taking it from another if need be).
    /// Durable on return.
    pub fn assign(&self, id: &str, expert: &str) -> Result<Result<HubReferral, Refusal>, HubError> {
        self.change(id, |referral| {
            if referral.report.is_some() {
                return Some(Refusal::Answered);
            }
            if referral.assigned_to.as_deref() != Some(expert) {
                referral.assigned_to = Some(expert.to_string());
                referral.claimed_at = Some(OffsetDateTime::now_utc());
            }
            None
        })
    }

    /// Stores the expert's answer to a referral, once. Durable on return.
    pub fn answer(
        &self,
        report: &grassroots_wire::referral::ConsultReport,
    ) -> Result<Result<HubReferral, Refusal>, HubError> {
        let answered = self.change(&report.referral_id, |referral| {
            let refusal = answer_refusal(referral, &report.expert);
            if refusal.is_none() {
                referral.report = Some(report.clone());
            }
            refusal
        })?;
        if let Ok(referral) = &answered {
            // The answer is stored: a failure here must not tell the expert otherwise. The next
            // indexing pass (`index_undelivered`) mends the entry.
            if let Err(error) = self
                .undelivered
                .put_durable(&report.referral_id, &referral.site)
            {
                tracing::error!(%error, referral = %report.referral_id, "cannot index an answer for delivery; the next pass will");
            }
        }
        Ok(answered)
    }

    /// Applies `change` to a referral atomically, unless it refuses; durable on return.
    fn change(
        &self,
        id: &str,
        mut change: impl FnMut(&mut HubReferral) -> Option<Refusal>,
    ) -> Result<Result<HubReferral, Refusal>, HubError> {
        let mut refusal = None;
        let updated = self.table.update(id, |current| {
            // `update` may retry: decide afresh each time, and store nothing refused.
            current.map(|original| {
                let mut changed = original.clone();
                refusal = change(&mut changed);
                if refusal.is_some() {
                    original
                } else {
                    changed
                }
            })
        })?;
        self.table.flush()?;
        Ok(match (updated, refusal) {
            (None, _) => Err(Refusal::NoSuchReferral),
            (Some(_), Some(refusal)) => Err(refusal),
            (Some(referral), None) => Ok(referral),
        })
    }

    /// Records why the edge refused a referral's answer.
    pub fn delivery_refused(&self, id: &str, reason: &str) -> Result<(), HubError> {
        self.table.update(id, |current| {
            current.map(|mut referral| {
                referral.report_refused = Some(reason.to_string());
                referral
            })
        })?;
        self.table.flush()?;
        Ok(())
    }

    /// Marks a referral's answer as received by its edge.
    pub fn delivered(&self, id: &str) -> Result<(), HubError> {
        self.table.update(id, |current| {
            current.map(|mut referral| {
                referral.report_delivered_at = Some(OffsetDateTime::now_utc());
                referral.report_refused = None;
                referral
            })
        })?;
        self.table.flush()?;
        self.undelivered.remove_durable(id)?;
        Ok(())
    }

    /// Every referral, most urgent first, then longest waiting.
    pub fn worklist(&self) -> Result<Vec<HubReferral>, HubError> {
        let mut all: Vec<HubReferral> = self.table.entries()?.into_iter().map(|(_, r)| r).collect();
        all.sort_by(|a, b| {
            (a.referral.urgency, a.received_at).cmp(&(b.referral.urgency, b.received_at))
        });
        Ok(all)
    }
}

/// `GET /api/v1/referrals` (experts, admins).
#[utoipa::path(get, path = "/api/v1/referrals", tag = "referrals",
    responses(
        (status = 200, description = "Every referral, most urgent first, then longest waiting", body = Vec<HubReferral>),
        grassroots_web::openapi::Refusals))]
pub(crate) async fn referrals_api(State(state): State<Arc<HubState>>) -> Response {
    match state.referrals.worklist() {
        Ok(all) => Json(all).into_response(),
        Err(error) => WebError::Internal(error.to_string()).into_response(),
    }
}

/// `/referrals`: the experts' worklist.
pub(crate) async fn referrals_page(
    State(state): State<Arc<HubState>>,
    Extension(CurrentUser(user)): Extension<CurrentUser>,
) -> Response {
    let all = match state.referrals.worklist() {
        Ok(all) => all,
        Err(error) => return WebError::Internal(error.to_string()).into_response(),
    };
    let now = OffsetDateTime::now_utc();
    // Pixels are for experts: an admin's worklist (to assign cases) shows none.
    let sees_pixels = user.role == grassroots_web::StaffRole::Expert;
    let mut rows = String::new();
    for item in &all {
        let r = &item.referral;
        let waiting = (now - item.received_at).whole_minutes();
        let ai = r
            .slides
            .iter()
            .filter_map(|s| {
                Some(grassroots_web::pages::word(&format!(
                    "{} {:.2}",
                    tr_any(s.ai_triage.as_deref()?),
                    s.ai_score?
                )))
            })
            .collect::<Vec<_>>()
            .join(", ");
        rows.push_str(&format!(
            "<tr><td>{thumbnail}</td><td>{urgency}</td><td>{waiting}</td><td>{site}</td><td>{age} · {sex} · {specimen}</td><td><a href=\"/consult/{id}\">{question}</a></td><td>{slides}</td><td>{ai}</td><td>{state}</td></tr>",
            id = escape(&r.referral_id),
            thumbnail = r
                .slides
                .first()
                .filter(|_| sees_pixels)
                .map(|s| format!(
                    r#"<img class="thumb" src="/consult/{}/thumbnail/{}" alt="{}" loading="lazy" width="96">"#,
                    escape(&r.referral_id),
                    escape(&s.slide_id),
                    tr("Slide overview")
                ))
                .unwrap_or_default(),
            state = match (&item.report, &item.assigned_to) {
                (Some(_), _) if item.report_delivered_at.is_some() => tr("answered, delivered").to_string(),
                (Some(_), _) => tr("answered").to_string(),
                (None, Some(expert)) => tr("with {}").replace("{}", &grassroots_web::pages::word(expert)),
                (None, None) => tr("open").to_string(),
            },
            waiting = tr("{} min").replace("{}", &waiting.to_string()),
            urgency = tr_any(&format!("{:?}", r.urgency)),
            site = grassroots_web::pages::word(&item.site),
            age = escape(&r.age_band),
            sex = tr_any(&format!("{:?}", r.sex)),
            specimen = escape(&r.specimen),
            question = escape(&r.question),
            slides = r.slides.len(),
            ai = ai,
        ));
    }
    if all.is_empty() {
        rows.push_str(&format!(
            r#"<tr><td colspan="9" class="empty">{}</td></tr>"#,
            grassroots_web::i18n::tr(r#"No referrals waiting. Cases the county sites refer appear here as they arrive (this page refreshes every 10 seconds)."#)
        ));
    }
    let live = grassroots_web::pages::live_updates(10);
    let head = grassroots_web::pages::headings(&[
        "Slide",
        "Urgency",
        "Waiting",
        "Site",
        "Patient (pseudonymous)",
        "Question",
        "Slides",
        "AI",
        "State",
    ]);
    let body = format!(
        r#"{live}<div class="table-wrap"><table id="referrals">{head}<tbody>{rows}</tbody></table></div>"#
    );
    page(
        &format!("Hub — {}", state.kit.network),
        "Referrals",
        Some(&user),
        &body,
    )
    .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn referral(id: &str) -> serde_json::Value {
        serde_json::json!({
            "referral_id": id,
            "case_pseudonym": "ab".repeat(32),
            "age_band": "40-49",
            "sex": "female",
            "specimen": "gastric biopsy",
            "question": "Dysplasia or carcinoma?",
            "urgency": "priority",
            "slides": [{"slide_id": "cd".repeat(32), "width": 100, "height": 80,
                        "microns_per_pixel": 0.5, "ai_triage": null, "ai_score": null,
                        "regions_geojson": null}],
            "referred_at": "2026-11-26T06:00:00Z",
        })
    }

    #[test]
    fn referrals_are_stored_once_and_malformed_ones_are_refused_with_the_reason() {
        let dir = tempfile::tempdir().unwrap();
        let store = grassroots_store::Store::open(dir.path()).unwrap();
        let inbox = ReferralInbox::new(
            store.table("referrals").unwrap(),
            store.table("undelivered_answers").unwrap(),
        );
        let good = serde_json::to_vec(&referral(&"0f".repeat(16))).unwrap();
        assert_eq!(inbox.receive("county-a", &good).unwrap(), Receipt::New);
        assert_eq!(
            inbox.receive("county-a", &good).unwrap(),
            Receipt::AlreadyHad
        );
        assert_eq!(inbox.worklist().unwrap().len(), 1);

        // A name smuggled in an extra field is refused, not stored.
        let mut extra = referral(&"1f".repeat(16));
        extra["patient_name"] = "Wang Xiuying".into();
        let error = inbox
            .receive("county-a", &serde_json::to_vec(&extra).unwrap())
            .unwrap_err()
            .to_string();
        assert!(error.contains("unknown field `patient_name`"), "{error}");
        let mut band = referral(&"2f".repeat(16));
        band["age_band"] = "47".into();
        let error = inbox
            .receive("county-a", &serde_json::to_vec(&band).unwrap())
            .unwrap_err()
            .to_string();
        assert!(error.contains("age band"), "{error}");
        let error = inbox
            .receive("county-a", b"{\"referral_id\": 3")
            .unwrap_err()
            .to_string();
        assert!(error.contains("malformed referral"), "{error}");
        assert_eq!(inbox.worklist().unwrap().len(), 1);
    }

    #[test]
    fn undelivered_answers_are_indexed_and_the_index_is_mended_at_start() {
        let dir = tempfile::tempdir().unwrap();
        let store = grassroots_store::Store::open(dir.path()).unwrap();
        let inbox = ReferralInbox::new(
            store.table("referrals").unwrap(),
            store.table("undelivered_answers").unwrap(),
        );
        let id = "0f".repeat(16);
        let good = serde_json::to_vec(&referral(&id)).unwrap();
        inbox.receive("county-a", &good).unwrap();
        assert!(inbox.claim(&id, "prof-zhang").unwrap().is_ok());
        assert!(inbox.undelivered().unwrap().is_empty());
        let report = grassroots_wire::referral::ConsultReport {
            referral_id: id.clone(),
            category: grassroots_wire::referral::ReportCategory::Benign,
            diagnosis: "Chronic gastritis".into(),
            recommendations: String::new(),
            annotations_geojson: None,
            expert: "prof-zhang".into(),
            answered_at: "2026-12-01T00:00:00Z".into(),
            digest: String::new(),
            signer_certificate_pem: String::new(),
            signature: String::new(),
        };
        assert!(inbox.answer(&report).unwrap().is_ok());
        assert_eq!(
            inbox.undelivered().unwrap(),
            vec![(id.clone(), "county-a".to_string())]
        );
        // A crash between the answer and its index entry: mended by the next pass.
        inbox.undelivered.remove(&id).unwrap();
        assert_eq!(inbox.index_undelivered().unwrap(), 1);
        assert_eq!(inbox.undelivered().unwrap().len(), 1);
        inbox.delivered(&id).unwrap();
        assert!(inbox.undelivered().unwrap().is_empty());
        assert_eq!(inbox.index_undelivered().unwrap(), 0);
        // A pass never removes an entry (one indexed while it runs must stay).
        inbox.undelivered.put(&id, &"county-a".to_string()).unwrap();
        inbox.index_undelivered().unwrap();
        assert_eq!(inbox.undelivered().unwrap().len(), 1);
        inbox.unindex(&id).unwrap();
        assert!(inbox.undelivered().unwrap().is_empty());
    }
}
