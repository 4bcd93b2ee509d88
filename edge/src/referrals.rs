//! Referring a case to the hub: **the privacy line**. What the doctor enters splits in two here.
//! The patient's name and id and the pathology number stay in this edge's store (table
//! `referrals`); only a [`Referral`] (the wire type, whose module lists every field) is written to
//! the outgoing folder and queued in the durable outbox, which delivers it when the link is up,
//! once, across restarts and retries (it is content-addressed; the hub keys it by its id).
//!
//! The case pseudonym is a BLAKE3 keyed hash of the pathology number under a key that never
//! leaves the edge (`DATA/referral-key`), so the hub can group referrals of one case without
//! learning which case it is.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use grassroots_store::Table;
use grassroots_wire::referral::{age_band, Referral, ReferredSlide, Sex, Urgency, REFERRAL_LABEL};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::outbox::Outbox;
use crate::screening::jobs::ScreeningJobs;
use crate::slides::SlideLibrary;
use crate::{io_error, EdgeError};

/// What the referring doctor enters.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewReferral {
    pub case_number: String,
    pub patient_name: String,
    pub patient_id: String,
    pub age_years: Option<u32>,
    pub sex: Sex,
    pub specimen: String,
    pub question: String,
    pub urgency: Urgency,
    pub slide_ids: Vec<String>,
    /// Regions the doctor marked for the expert, in level-0 slide pixels.
    #[serde(default)]
    pub regions: Vec<SlideRegion>,
    /// Radiology studies of this edge's archive (Study Instance UIDs) to refer with the case:
    /// they cross only as `crate::study_referrals` allows.
    #[serde(default)]
    pub study_uids: Vec<String>,
}

/// A rectangle the referring doctor marked on a slide.
#[derive(Debug, Clone, Copy, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MarkedRegion {
    pub x: u32,
    pub y: u32,
    pub width: u32,
    pub height: u32,
}

/// A marked region for one slide (the JSON shape of [`NewReferral::regions`]).
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
pub struct SlideRegion {
    pub slide_id: String,
    #[serde(flatten)]
    pub rect: MarkedRegion,
}

/// A referral as this edge keeps it: what crossed, and what stayed.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct LocalReferral {
    /// Exactly what was sent to the hub.
    pub referral: Referral,
    pub case_number: String,
    pub patient_name: String,
    pub patient_id: String,
    pub referred_by: String,
    /// The outbox entry (content id of the referral's JSON) that carries it.
    pub outbox_id: String,
    /// The expert's answer, when it has come back.
    #[serde(default)]
    pub report: Option<grassroots_wire::referral::ConsultReport>,
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub report_received_at: Option<OffsetDateTime>,
    /// The referred studies' UIDs behind the keys that crossed (never sent).
    #[serde(default)]
    pub studies: Vec<crate::study_referrals::LocalStudy>,
}

pub struct Referrals {
    table: Table<LocalReferral>,
    /// This site's kit: its network CA vouches for the hub that signs answers.
    kit: grassroots_provisioning::Kit,
    key: [u8; 32],
    dir: PathBuf,
    outbox: Outbox,
    slides: Arc<SlideLibrary>,
    screening: Arc<ScreeningJobs>,
    /// The revocation list answers' signers are checked against.
    hub_trust: Arc<crate::hub_trust::HubTrust>,
    /// The radiology index referred studies are read from.
    studies: grassroots_dicom::StudyIndex,
}

/// The edge's pseudonym key, made on first use.
fn pseudonym_key(data_dir: &Path) -> Result<[u8; 32], EdgeError> {
    let path = data_dir.join("referral-key");
    match std::fs::read(&path) {
        Ok(bytes) => {
            // A key written by an older version may be readable by others: not any more.
            use std::os::unix::fs::PermissionsExt;
            let _ = std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600));
            bytes
                .try_into()
                .map_err(|_| EdgeError::Config(format!("{} is not 32 bytes", path.display())))
        }
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            let key: [u8; 32] = rand::random();
            grassroots_store::durable::write_private_file(&path, &key).map_err(io_error(&path))?;
            Ok(key)
        }
        Err(error) => Err(io_error(&path)(error)),
    }
}

/// The regions that cross with a slide: the doctor's marks first, then the AI's, as one
/// GeoJSON FeatureCollection in slide pixels (none when there are neither).
fn regions_geojson(
    marked: &[MarkedRegion],
    ai: Option<serde_json::Value>,
    (width, height): (u32, u32),
) -> Result<Option<String>, EdgeError> {
    let mut features = Vec::new();
    for r in marked {
        let fits = r.width > 0
            && r.height > 0
            && u64::from(r.x) + u64::from(r.width) <= u64::from(width)
            && u64::from(r.y) + u64::from(r.height) <= u64::from(height);
        if !fits {
            return Err(EdgeError::Config(format!(
                "marked region {}x{} at ({}, {}) is not inside the {width}x{height} slide",
                r.width, r.height, r.x, r.y
            )));
        }
        let (x0, y0, x1, y1) = (r.x, r.y, r.x + r.width, r.y + r.height);
        features.push(serde_json::json!({
            "type": "Feature",
            "geometry": { "type": "Polygon", "coordinates": [[[x0, y0], [x1, y0], [x1, y1], [x0, y1], [x0, y0]]] },
            "properties": { "objectType": "annotation", "classification": { "name": "Referrer's region" } },
        }));
    }
    if let Some(ai) = ai {
        features.extend(ai["features"].as_array().cloned().unwrap_or_default());
    }
    Ok((!features.is_empty()).then(|| {
        serde_json::json!({ "type": "FeatureCollection", "features": features }).to_string()
    }))
}

/// The parts of the edge a referral draws on.
pub struct ReferralParts {
    /// Carries referrals to the hub.
    pub outbox: Outbox,
    /// The slides referred.
    pub slides: Arc<SlideLibrary>,
    /// The AI's findings that go with them.
    pub screening: Arc<ScreeningJobs>,
    /// The revocation list answers' signers are checked against.
    pub hub_trust: Arc<crate::hub_trust::HubTrust>,
    /// The radiology index referred studies are read from.
    pub studies: grassroots_dicom::StudyIndex,
}

impl Referrals {
    pub fn open(
        kit: grassroots_provisioning::Kit,
        data_dir: &Path,
        outgoing_dir: &Path,
        table: Table<LocalReferral>,
        parts: ReferralParts,
    ) -> Result<Self, EdgeError> {
        let ReferralParts {
            outbox,
            slides,
            screening,
            hub_trust,
            studies,
        } = parts;
        let dir = outgoing_dir.join("referrals");
        std::fs::create_dir_all(&dir).map_err(io_error(&dir))?;
        Ok(Self {
            table,
            kit,
            key: pseudonym_key(data_dir)?,
            dir,
            outbox,
            slides,
            screening,
            hub_trust,
            studies,
        })
    }

    pub fn list(&self) -> Result<Vec<LocalReferral>, EdgeError> {
        let mut all: Vec<LocalReferral> =
            self.table.entries()?.into_iter().map(|(_, r)| r).collect();
        all.sort_by(|a, b| b.referral.referred_at.cmp(&a.referral.referred_at));
        Ok(all)
    }

    fn referred_slide(
        &self,
        id: &str,
        marked: &[MarkedRegion],
    ) -> Result<ReferredSlide, EdgeError> {
        let (_, info) = self
            .slides
            .ready_record(id)
            .map_err(|e| EdgeError::Config(format!("slide {id}: {e}")))?;
        let screened = self.screening.job(id)?.and_then(|job| job.result);
        Ok(ReferredSlide {
            slide_id: id.to_string(),
            width: info.width,
            height: info.height,
            microns_per_pixel: info.microns_per_pixel_x,
            ai_triage: screened.as_ref().map(|s| {
                serde_json::to_value(s.triage.class)
                    .ok()
                    .and_then(|v| v.as_str().map(String::from))
                    .unwrap_or_default()
            }),
            ai_score: screened.as_ref().map(|s| s.triage.score),
            regions_geojson: regions_geojson(
                marked,
                screened.map(|s| s.triage.regions_geojson()),
                (info.width, info.height),
            )?,
        })
    }

    /// Records the referral here and queues what may cross for the hub.
    pub async fn refer(&self, new: NewReferral, user: &str) -> Result<LocalReferral, EdgeError> {
        let (referral, studies) = self.prepare_with_studies(&new)?;
        let json = serde_json::to_vec_pretty(&referral)
            .map_err(|e| EdgeError::Config(format!("referral: {e}")))?;
        let path = self.file(&referral.referral_id);
        grassroots_store::durable::write_file(&path, &json).map_err(io_error(&path))?;
        // Recorded here before it is queued: a crash in between is healed by `requeue`.
        let mut local = LocalReferral {
            referral,
            case_number: new.case_number.trim().to_string(),
            patient_name: new.patient_name,
            patient_id: new.patient_id,
            referred_by: user.to_string(),
            outbox_id: String::new(),
            report: None,
            report_received_at: None,
            studies,
        };
        self.table
            .put_durable(&local.referral.referral_id, &local)?;
        // Recorded: from here on the referral exists, so a failure to queue it is not the
        // doctor's to retry (a retry would refer the case twice); it is queued again every
        // minute and at start (`requeue`).
        match self.queue(&local).await {
            Ok(id) => local.outbox_id = id,
            Err(error) => {
                tracing::error!(referral = %local.referral.referral_id, %error, "referral recorded but not queued yet; retrying every minute")
            }
        }
        tracing::info!(referral = %local.referral.referral_id, slides = local.referral.slides.len(), "case referred to the hub");
        Ok(local)
    }

    /// What would cross for `new`: the referral the hub would receive, checked (identifiers
    /// in free text are refused: `crate::referral_privacy`), with nothing stored or queued.
    pub fn prepare(&self, new: &NewReferral) -> Result<Referral, EdgeError> {
        self.prepare_with_studies(new).map(|(referral, _)| referral)
    }

    /// [`Referrals::prepare`], with what this edge keeps of the referred studies.
    pub fn prepare_with_studies(
        &self,
        new: &NewReferral,
    ) -> Result<(Referral, Vec<crate::study_referrals::LocalStudy>), EdgeError> {
        crate::referral_privacy::check_free_text(new)?;
        if new.case_number.trim().is_empty() {
            return Err(EdgeError::Config(
                "a referral needs the case's pathology number".into(),
            ));
        }
        if let Some(stray) = new
            .regions
            .iter()
            .find(|r| !new.slide_ids.contains(&r.slide_id))
        {
            return Err(EdgeError::Config(format!(
                "a marked region is on slide {}, which is not referred",
                stray.slide_id
            )));
        }
        let slides = new
            .slide_ids
            .iter()
            .map(|id| {
                let marked: Vec<MarkedRegion> = new
                    .regions
                    .iter()
                    .filter(|r| &r.slide_id == id)
                    .map(|r| r.rect)
                    .collect();
                self.referred_slide(id, &marked)
            })
            .collect::<Result<Vec<_>, _>>()?;
        // Bounded before the index is read for each.
        if new.study_uids.len() > grassroots_wire::referral::MAX_STUDIES {
            return Err(EdgeError::Config(format!(
                "at most {} studies in a referral",
                grassroots_wire::referral::MAX_STUDIES
            )));
        }
        let mut unique_studies: Vec<String> = new
            .study_uids
            .iter()
            .map(|uid| uid.trim().to_string())
            .collect();
        unique_studies.sort();
        unique_studies.dedup();
        let (studies, local_studies): (Vec<_>, Vec<_>) = unique_studies
            .iter()
            .map(|uid| crate::study_referrals::refer_study(&self.studies, &self.key, uid))
            .collect::<Result<Vec<_>, _>>()?
            .into_iter()
            .unzip();
        let now = OffsetDateTime::now_utc();
        let referral = Referral {
            referral_id: hex::encode(rand::random::<[u8; 16]>()),
            case_pseudonym: blake3::keyed_hash(&self.key, new.case_number.trim().as_bytes())
                .to_hex()
                .to_string(),
            age_band: age_band(new.age_years),
            sex: new.sex,
            specimen: new.specimen.trim().to_string(),
            question: new.question.trim().to_string(),
            urgency: new.urgency,
            slides,
            referred_at: now
                .format(&time::format_description::well_known::Rfc3339)
                .unwrap_or_default(),
            studies,
        };
        referral
            .validate()
            .map_err(|e| EdgeError::Config(e.to_string()))?;
        Ok((referral, local_studies))
    }

    fn file(&self, referral_id: &str) -> PathBuf {
        self.dir.join(format!("{referral_id}.json"))
    }

    /// Queues a recorded referral's file (queuing the same content again is a no-op).
    async fn queue(&self, local: &LocalReferral) -> Result<String, EdgeError> {
        let entry = self
            .outbox
            .enqueue_file(&self.file(&local.referral.referral_id), REFERRAL_LABEL)
            .await?;
        if local.outbox_id != entry.id {
            // Only the outbox id changes: an answer stored meanwhile stays.
            let id = entry.id.clone();
            self.table.update(&local.referral.referral_id, |current| {
                current.map(|mut stored| {
                    stored.outbox_id = id.clone();
                    stored
                })
            })?;
            self.table.flush()?;
        }
        Ok(entry.id)
    }

    /// Queues every referral recorded but not queued (a crash, or a failed queueing, came in
    /// between); one that still fails does not hold up the others.
    pub async fn requeue(&self) -> Result<usize, EdgeError> {
        let mut queued = 0;
        let mut failed = None;
        for local in self.list()? {
            if local.outbox_id.is_empty() {
                match self.queue(&local).await {
                    Ok(_) => queued += 1,
                    Err(error) => {
                        tracing::warn!(referral = %local.referral.referral_id, %error, "referral not queued yet");
                        failed = Some(error);
                    }
                }
            }
        }
        match failed {
            Some(error) if queued == 0 => Err(error),
            _ => Ok(queued),
        }
    }
}

/// `POST /api/v1/referrals`: refer a case (JSON [`NewReferral`]); 201 with what was recorded.
#[utoipa::path(post, path = "/api/v1/referrals", tag = "referrals", request_body = NewReferral,
    responses(
        (status = 201, description = "Recorded and queued for the hub: what crossed and what stayed", body = LocalReferral),
        (status = 400, description = "Refused (no such slide, identifiers in free text...)", body = grassroots_web::openapi::ApiError),
        grassroots_web::openapi::Refusals, grassroots_web::openapi::InputRefusals))]
pub(crate) async fn refer_api(
    axum::extract::State(state): axum::extract::State<Arc<crate::EdgeState>>,
    axum::extract::Extension(grassroots_web::CurrentUser(user)): axum::extract::Extension<
        grassroots_web::CurrentUser,
    >,
    axum::Json(new): axum::Json<NewReferral>,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    // A hub known to be older than studies would refuse the whole referral: say so now. (One
    // not reached yet is sent it; if it refuses, the doctor reads its reason on the page.)
    if !new.study_uids.is_empty() {
        if let grassroots_transport::LinkState::Online {
            hub_capabilities, ..
        } = &*state.link.state.borrow()
        {
            // None yet: the hub's announcement follows its `Welcome` (or it is too old to
            // announce anything, and refuses the referral with its reason).
            if !hub_capabilities.is_empty()
                && !hub_capabilities
                    .iter()
                    .any(|c| c == grassroots_wire::capabilities::STUDY_CONSULT)
            {
                return grassroots_web::WebError::BadRequest(
                    "the hub runs an older release that does not take radiology studies: refer the slides alone, or the study once the hub is upgraded".into(),
                )
                .into_response();
            }
        }
    }
    match state.referrals.refer(new, &user.username).await {
        Ok(local) => (axum::http::StatusCode::CREATED, axum::Json(local)).into_response(),
        Err(error) => grassroots_web::WebError::BadRequest(error.to_string()).into_response(),
    }
}

/// `POST /api/v1/referrals/preview`: exactly what would cross to the hub for this form (JSON
/// [`NewReferral`]), and what stays; nothing is stored or sent.
#[utoipa::path(post, path = "/api/v1/referrals/preview", tag = "referrals", request_body = NewReferral,
    responses(
        (status = 200, description = "What would cross to the hub, and what would stay", body = ReferralPreview),
        (status = 400, description = "The referral would be refused, and why", body = grassroots_web::openapi::ApiError),
        grassroots_web::openapi::Refusals, grassroots_web::openapi::InputRefusals))]
pub(crate) async fn preview_api(
    axum::extract::State(state): axum::extract::State<Arc<crate::EdgeState>>,
    axum::Json(new): axum::Json<NewReferral>,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    match state.referrals.prepare(&new) {
        Ok(referral) => axum::Json(ReferralPreview {
            crosses: referral,
            stays: StaysAtEdge {
                case_number: new.case_number.trim().to_string(),
                patient_name: new.patient_name,
                patient_id: new.patient_id,
                age_years: new.age_years,
            },
        })
        .into_response(),
        Err(error) => grassroots_web::WebError::BadRequest(error.to_string()).into_response(),
    }
}

/// The answer of `POST /api/v1/referrals/preview`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct ReferralPreview {
    /// The referral exactly as it would be sent.
    crosses: Referral,
    stays: StaysAtEdge,
}

/// What the form holds that never leaves the edge.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct StaysAtEdge {
    case_number: String,
    patient_name: String,
    patient_id: String,
    age_years: Option<u32>,
}

/// One row of `GET /api/v1/referrals`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct ReferralRow {
    local: LocalReferral,
    /// Where its delivery to the hub stands (absent before it is queued).
    delivery: Option<crate::outbox::OutboxState>,
    /// Why the hub refused it, in the hub's words (delivery "refused").
    refusal: Option<String>,
}

/// `GET /api/v1/referrals`: this edge's referrals, newest first, with their delivery state.
#[utoipa::path(get, path = "/api/v1/referrals", tag = "referrals",
    responses((status = 200, description = "This edge's referrals, newest first", body = Vec<ReferralRow>), grassroots_web::openapi::Refusals))]
pub(crate) async fn list_api(
    axum::extract::State(state): axum::extract::State<Arc<crate::EdgeState>>,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    let statuses = state.outbox.statuses().unwrap_or_default();
    match state.referrals.list() {
        Ok(all) => {
            let rows: Vec<ReferralRow> = all
                .into_iter()
                .map(|local| {
                    let entry = statuses
                        .iter()
                        .find(|s| s.entry.id == local.outbox_id)
                        .map(|s| &s.entry);
                    let refusal = entry
                        .filter(|e| e.state == crate::outbox::OutboxState::Refused)
                        .and_then(|e| e.last_error.clone());
                    ReferralRow {
                        local,
                        delivery: entry.map(|e| e.state),
                        refusal,
                    }
                })
                .collect();
            axum::Json(rows).into_response()
        }
        Err(error) => grassroots_web::WebError::Internal(error.to_string()).into_response(),
    }
}

impl Referrals {
    /// Stores an answer from the hub on its referral (durable on return; the same answer again
    /// is a no-op). An answer that does not parse, fails its digest or names no referral of
    /// this edge is an error naming why.
    pub fn take_report(&self, bytes: &[u8]) -> Result<(), EdgeError> {
        let report: grassroots_wire::referral::ConsultReport = serde_json::from_slice(bytes)
            .map_err(|e| EdgeError::Config(format!("malformed answer from the hub: {e}")))?;
        report
            .validate()
            .map_err(|e| EdgeError::Config(format!("answer from the hub refused: {e}")))?;
        // The same answer again (its digest covers every field the expert wrote) is a no-op,
        // whoever signs the copy: an answer delivered before the hub's certificate was renewed
        // is not refused when the hub, not knowing it arrived, sends it again.
        if let Some(local) = self.table.get(&report.referral_id)? {
            if local
                .report
                .as_ref()
                .is_some_and(|held| held.digest == report.digest)
            {
                return Ok(());
            }
        }
        let signature = hex::decode(&report.signature)
            .map_err(|_| EdgeError::Config("answer from the hub refused: unsigned".into()))?;
        let signer = grassroots_provisioning::signing::verify(
            &self.kit,
            grassroots_provisioning::Role::Hub,
            &report.signer_certificate_pem,
            grassroots_wire::referral::REPORT_SIGNING_CONTEXT,
            report.digest.as_bytes(),
            &signature,
        )
        .map_err(|e| EdgeError::Config(format!("answer from the hub refused: {e}")))?;
        // Checked when it arrives (an answer stored earlier stays valid): a signer whose
        // certificate has expired or been revoked vouches for nothing new.
        if signer.not_after < time::OffsetDateTime::now_utc() {
            return Err(EdgeError::Config(format!(
                "answer from the hub refused: signed with a certificate that expired on {}",
                signer.not_after.date()
            )));
        }
        if self.hub_trust.is_revoked(&signer.serial) {
            return Err(EdgeError::Config(
                "answer from the hub refused: signed with a revoked certificate".into(),
            ));
        }
        let Some(mut local) = self.table.get(&report.referral_id)? else {
            return Err(EdgeError::Config(format!(
                "an answer to referral {}, which this edge did not make",
                report.referral_id
            )));
        };
        if local.report.as_ref() == Some(&report) {
            return Ok(());
        }
        tracing::info!(referral = %report.referral_id, expert = %report.expert, category = ?report.category, "the hub answered a referral");
        local.report = Some(report);
        local.report_received_at = Some(OffsetDateTime::now_utc());
        self.table
            .put_durable(&local.referral.referral_id, &local)?;
        Ok(())
    }

    /// Stores the answer in a blob the hub sent. `Err(None)`: it could not be stored now (do
    /// not acknowledge; the hub sends it again). `Err(Some(reason))`: it was refused (tell the
    /// hub, which keeps it undelivered and says why).
    pub async fn take_report_file(&self, path: &Path) -> Result<(), Option<String>> {
        let taken = tokio::fs::read(path)
            .await
            .map_err(io_error(path))
            .and_then(|bytes| self.take_report(&bytes));
        match taken {
            Ok(()) => Ok(()),
            Err(EdgeError::Store(error)) => {
                tracing::error!(%error, "cannot store an answer from the hub");
                Err(None)
            }
            Err(error) => {
                tracing::error!(%error, "answer from the hub refused");
                Err(Some(error.to_string()))
            }
        }
    }

    pub fn get(&self, referral_id: &str) -> Result<Option<LocalReferral>, EdgeError> {
        Ok(self.table.get(referral_id)?)
    }

    /// Whether `slide_id` is a slide of the referral `referral_id` made at this edge.
    pub fn slide_is_referred(&self, referral_id: &str, slide_id: &str) -> Result<bool, EdgeError> {
        Ok(self
            .table
            .get(referral_id)?
            .is_some_and(|local| local.referral.slides.iter().any(|s| s.slide_id == slide_id)))
    }
}

/// Answers the hub's request for a consult's descriptor or tile: **the only pixels that leave
/// the edge**, and only of a slide this edge referred in that referral, until the referral is
/// answered (the hub checks the expert; the edge checks the slide, so a hub that asked for
/// anything else gets nothing), each recorded durably before it leaves.
pub(crate) async fn serve_consult(
    state: &crate::EdgeState,
    referral_id: &str,
    slide_id: &str,
    tile: Option<grassroots_wire::message::TileAddress>,
    prefetch: bool,
) -> Result<Vec<u8>, String> {
    let local = match state.referrals.get(referral_id) {
        Ok(Some(local)) => local,
        Ok(None) => return Err(format!("no referral {referral_id} from this edge")),
        Err(error) => return Err(error.to_string()),
    };
    if !local.referral.slides.iter().any(|s| s.slide_id == slide_id) {
        return Err(format!(
            "slide {slide_id} is not part of referral {referral_id} from this edge"
        ));
    }
    // The answer closes the consult: no pixel of its slides leaves any more.
    if local.report.is_some() {
        return Err(format!(
            "referral {referral_id} is answered: its consult is closed at this edge"
        ));
    }
    let data = match tile {
        None => state
            .slides
            .dzi(slide_id)
            .await
            .map(String::into_bytes)
            .map_err(|e| e.to_string()),
        Some(t) => state
            .slides
            .tile(
                slide_id,
                t.level,
                t.col,
                t.row,
                grassroots_slides::TileFormat::Jpeg,
            )
            .await
            .map(|bytes| bytes.to_vec())
            .map_err(|e| e.to_string()),
    }?;
    // On disk before it is on the wire (`crate::consult_egress`).
    state
        .egress
        .record(crate::consult_egress::Egress {
            at: time::OffsetDateTime::now_utc(),
            referral_id: referral_id.to_string(),
            slide_id: slide_id.to_string(),
            item: match tile {
                None => "dzi".to_string(),
                Some(t) => format!("{}/{}_{}", t.level, t.col, t.row),
            },
            bytes: data.len() as u64,
            prefetch,
        })
        .await
        .map_err(|error| format!("cannot record what leaves this edge: {error}"))?;
    Ok(data)
}

#[cfg(test)]
mod tests {
    use super::*;
    use grassroots_wire::referral::{ConsultReport, ReportCategory};

    fn referrals(dir: &Path) -> Referrals {
        referrals_of(dir, &network().1)
    }

    /// The referrals of an edge with `kit`, in `dir`.
    fn referrals_of(dir: &Path, kit: &grassroots_provisioning::Kit) -> Referrals {
        let store = grassroots_store::Store::open(dir).unwrap();
        let config = crate::EdgeConfig {
            data_dir: dir.to_path_buf(),
            ..Default::default()
        };
        let slides = Arc::new(crate::open_slides(&config, &store).unwrap());
        let signer = grassroots_models::PackageSigner::from_seed_hex(&"3c".repeat(32)).unwrap();
        let model = Arc::new(
            crate::screening::active_model::ActiveModel::open(dir, &signer.public_key_hex())
                .unwrap(),
        );
        let screening = Arc::new(ScreeningJobs::new(
            dir,
            store.table("screening").unwrap(),
            slides.clone(),
            model,
            crate::screening::jobs::JobOptions {
                part_cells: 8,
                workers: 1,
            },
        ));
        let blobs = grassroots_transport::BlobStore::open(&dir.join("blobs")).unwrap();
        Referrals::open(
            kit.clone(),
            dir,
            &dir.join("outgoing"),
            store.table("referrals").unwrap(),
            ReferralParts {
                outbox: Outbox::new(store.table("outbox").unwrap(), blobs),
                slides,
                screening,
                hub_trust: Arc::new(crate::hub_trust::HubTrust::open(dir, kit, None)),
                studies: grassroots_dicom::StudyIndex::open(&store).unwrap(),
            },
        )
        .unwrap()
    }

    fn referral(id: &str) -> LocalReferral {
        LocalReferral {
            referral: Referral {
                referral_id: id.to_string(),
                case_pseudonym: "ab".repeat(32),
                age_band: "40-49".into(),
                sex: Sex::Female,
                specimen: "skin".into(),
                question: "Melanoma?".into(),
                urgency: Urgency::Routine,
                slides: vec![ReferredSlide {
                    slide_id: "cd".repeat(32),
                    width: 10,
                    height: 10,
                    microns_per_pixel: None,
                    ai_triage: None,
                    ai_score: None,
                    regions_geojson: None,
                }],
                referred_at: "2026-11-26T06:00:00Z".into(),
                studies: Vec::new(),
            },
            case_number: "S26-1".into(),
            patient_name: "Wang Xiuying".into(),
            patient_id: "ID-1".into(),
            referred_by: "dr-li".into(),
            outbox_id: String::new(),
            report: None,
            report_received_at: None,
            studies: Vec::new(),
        }
    }

    /// A network's hub kit and one of its edges' kits, made once for the tests.
    fn network() -> &'static (grassroots_provisioning::Kit, grassroots_provisioning::Kit) {
        static NETWORK: std::sync::OnceLock<(
            grassroots_provisioning::Kit,
            grassroots_provisioning::Kit,
        )> = std::sync::OnceLock::new();
        NETWORK.get_or_init(|| network_in("Referral tests"))
    }

    fn network_in(name: &str) -> (grassroots_provisioning::Kit, grassroots_provisioning::Kit) {
        let dir = tempfile::tempdir().unwrap();
        let now = OffsetDateTime::now_utc();
        let (mut authority, hub) = grassroots_provisioning::NetworkAuthority::init(
            dir.path(),
            name,
            "127.0.0.1:4433",
            30,
            now,
        )
        .unwrap();
        let edge = authority
            .add_site(&"county-a".parse().unwrap(), "County A", 30, now)
            .unwrap();
        (hub, edge)
    }

    fn signed(mut report: ConsultReport, by: &grassroots_provisioning::Kit) -> ConsultReport {
        report.signer_certificate_pem = by.certificate_pem.clone();
        report.signature = hex::encode(
            grassroots_provisioning::signing::sign(
                by,
                grassroots_wire::referral::REPORT_SIGNING_CONTEXT,
                report.digest.as_bytes(),
            )
            .unwrap(),
        );
        report
    }

    fn answer(referral_id: &str) -> ConsultReport {
        let mut report = ConsultReport {
            referral_id: referral_id.to_string(),
            category: ReportCategory::Benign,
            diagnosis: "Compound naevus.".into(),
            recommendations: String::new(),
            annotations_geojson: None,
            expert: "prof-zhang".into(),
            answered_at: "2026-11-26T07:00:00Z".into(),
            digest: String::new(),
            signer_certificate_pem: String::new(),
            signature: String::new(),
        };
        report.digest = report.compute_digest();
        signed(report, &network().0)
    }

    #[test]
    fn an_answer_signed_with_a_revoked_hub_certificate_is_refused_and_lists_only_get_newer() {
        let prov = tempfile::tempdir().unwrap();
        let now = OffsetDateTime::now_utc();
        let (mut authority, old_hub) = grassroots_provisioning::NetworkAuthority::init(
            prov.path(),
            "Rotation",
            "127.0.0.1:4433",
            30,
            now,
        )
        .unwrap();
        let edge = authority
            .add_site(&"county-a".parse().unwrap(), "County A", 30, now)
            .unwrap();
        let first_list = std::fs::read(authority.revocation_list_path()).unwrap();
        let new_hub = authority
            .renew(&grassroots_provisioning::SiteId::hub(), 30, now)
            .unwrap();
        let newer_list = std::fs::read(authority.revocation_list_path()).unwrap();

        let dir = tempfile::tempdir().unwrap();
        let referrals = referrals_of(dir.path(), &edge);
        let trust = &referrals.hub_trust;
        assert_eq!(trust.take(&newer_list, None), Ok(true));
        assert_eq!(
            trust.take(&first_list, None),
            Ok(false),
            "an older list changes nothing"
        );
        assert!(trust
            .take(b"-----BEGIN X509 CRL-----\nAAAA\n", None)
            .is_err());
        let id = "0f".repeat(16);
        referrals.table.put(&id, &referral(&id)).unwrap();
        let mut report = answer(&id);
        report = signed(report, &old_hub);
        let error = referrals
            .take_report(&serde_json::to_vec(&report).unwrap())
            .unwrap_err();
        assert!(error.to_string().contains("revoked"), "{error}");
        let report = signed(answer(&id), &new_hub);
        referrals
            .take_report(&serde_json::to_vec(&report).unwrap())
            .unwrap();
        // Kept across a restart: a new edge on the same data holds the newer list.
        let again = crate::hub_trust::HubTrust::open(dir.path(), &edge, None);
        assert_eq!(again.number(), trust.number());
    }

    #[test]
    fn answers_and_consult_requests_are_checked_against_this_edges_referrals() {
        let dir = tempfile::tempdir().unwrap();
        let referrals = referrals(dir.path());
        let id = "0f".repeat(16);
        referrals.table.put(&id, &referral(&id)).unwrap();

        // Only a slide of one of its referrals is served to the hub.
        assert!(referrals.slide_is_referred(&id, &"cd".repeat(32)).unwrap());
        assert!(!referrals.slide_is_referred(&id, &"ee".repeat(32)).unwrap());
        assert!(!referrals
            .slide_is_referred(&"1f".repeat(16), &"cd".repeat(32))
            .unwrap());

        let error = referrals.take_report(b"{\"referral_id\": 3").unwrap_err();
        assert!(error.to_string().contains("malformed answer"), "{error}");
        let mut altered = answer(&id);
        altered.category = ReportCategory::Malignant;
        let error = referrals
            .take_report(&serde_json::to_vec(&altered).unwrap())
            .unwrap_err();
        assert!(error.to_string().contains("digest"), "{error}");
        let error = referrals
            .take_report(&serde_json::to_vec(&answer(&"1f".repeat(16))).unwrap())
            .unwrap_err();
        assert!(error.to_string().contains("did not make"), "{error}");
        // Signed by another network's hub, by an edge of this network, or not at all.
        let foreign = signed(answer(&id), &network_in("Another network").0);
        let error = referrals
            .take_report(&serde_json::to_vec(&foreign).unwrap())
            .unwrap_err();
        assert!(
            error.to_string().contains("not issued by this network"),
            "{error}"
        );
        let by_edge = signed(answer(&id), &network().1);
        let error = referrals
            .take_report(&serde_json::to_vec(&by_edge).unwrap())
            .unwrap_err();
        assert!(error.to_string().contains("not a hub"), "{error}");
        let mut unsigned = answer(&id);
        unsigned.signature = "30".into();
        let error = referrals
            .take_report(&serde_json::to_vec(&unsigned).unwrap())
            .unwrap_err();
        assert!(error.to_string().contains("does not match"), "{error}");
        assert!(referrals.table.get(&id).unwrap().unwrap().report.is_none());

        // ECDSA signatures differ each time: compare with the one answer sent.
        let good_answer = answer(&id);
        let good = serde_json::to_vec(&good_answer).unwrap();
        referrals.take_report(&good).unwrap();
        referrals.take_report(&good).unwrap();
        let stored = referrals.table.get(&id).unwrap().unwrap();
        assert_eq!(stored.report, Some(good_answer));
    }
}
