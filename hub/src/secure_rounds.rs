//! The hub's side of a round with secure aggregation: it relays the participants' signed key
//! adverts and encrypted shares, collects masked updates and, once they are in, the survivors'
//! signed consent to the list of survivors, relays those signatures, and collects their
//! reveals; then it unmasks only their sum (`grassroots-secagg`). The consent round is Bonawitz
//! et al.'s consistency check: an edge reveals only when a threshold of survivors signed the
//! same list, so the hub cannot show different survivors different lists.
//!
//! What the hub holds at any time: public keys, shares it cannot decrypt, masked vectors that
//! are noise one by one, and from each survivor either a share of another site's self-mask seed
//! or of a dropped site's mask key — each edge refuses to reveal both for one site. So no file
//! or table here holds one site's update; the sum appears only in memory at aggregation.
//!
//! Every phase has the same bounded wait (`phase_seconds`): a site that has not advertised or
//! shared by then is excluded, and the round fails if fewer than the threshold remain. The
//! state lives in the round's record and is written after every change, so a hub killed
//! mid-phase resumes it; the messages of the current phase are sent again until acknowledged.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use grassroots_provisioning::signing;
use grassroots_secagg::message::{
    self, survivors_bytes, ADVERT_SIGNATURE_CONTEXT, CONSENT_SIGNATURE_CONTEXT, LABEL,
};
use grassroots_secagg::{Consent, Reveal, SealedShare, SignedAdvert, ToEdge, ToHub};
use grassroots_wire::federated::{decode_update, UpdateEncoding};
use serde::{Deserialize, Serialize};

use crate::rounds::RoundRecord;
use crate::HubState;

/// The phase of a secure round (secure aggregation).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum SecurePhase {
    Advertising,
    Sharing,
    Masking,
    /// The survivors sign the list of survivors.
    Consenting,
    Unmasking,
}

/// A secure round's relay state, kept in the round's record.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SecureRound {
    pub phase: SecurePhase,
    pub phase_since: i64,
    /// The longest wait for adverts, shares or reveals.
    pub phase_seconds: i64,
    pub threshold: usize,
    pub adverts: BTreeMap<String, SignedAdvert>,
    /// Encrypted shares by their sender.
    pub shares: BTreeMap<String, Vec<SealedShare>>,
    /// Sites whose shares were relayed: masks run between them.
    pub sharing: Vec<String>,
    /// Sites whose masked updates arrived in time.
    pub masked: Vec<String>,
    /// Survivors' signatures over `masked`.
    #[serde(default)]
    pub consents: BTreeMap<String, Consent>,
    pub reveals: BTreeMap<String, Reveal>,
    /// Sites that acknowledged the current phase's message.
    pub delivered: Vec<String>,
}

impl SecureRound {
    pub fn new(now: i64, deadline_seconds: u64) -> Self {
        Self {
            phase: SecurePhase::Advertising,
            phase_since: now,
            phase_seconds: (deadline_seconds as i64 / 5).clamp(20, 300),
            threshold: 0,
            adverts: BTreeMap::new(),
            shares: BTreeMap::new(),
            sharing: Vec::new(),
            masked: Vec::new(),
            consents: BTreeMap::new(),
            reveals: BTreeMap::new(),
            delivered: Vec::new(),
        }
    }

    fn enter(&mut self, phase: SecurePhase, now: i64) {
        tracing::info!(?phase, "secure aggregation phase");
        self.phase = phase;
        self.phase_since = now;
        self.delivered.clear();
    }

    fn timed_out(&self, now: i64) -> bool {
        now - self.phase_since > self.phase_seconds
    }
}

/// Moves the setup phases on (adverts in, shares in). Returns true if the record changed.
pub(crate) fn advance(record: &mut RoundRecord, now: i64) -> bool {
    let Some(secure) = record.secure.as_mut() else {
        return false;
    };
    let round = &mut record.round;
    let remaining: Vec<String> = round
        .plan
        .participants
        .iter()
        .filter(|p| !round.excluded.contains_key(*p))
        .cloned()
        .collect();
    match secure.phase {
        SecurePhase::Advertising => {
            let all_in = remaining.iter().all(|p| secure.adverts.contains_key(p));
            if !all_in && !secure.timed_out(now) {
                return false;
            }
            for site in remaining
                .iter()
                .filter(|p| !secure.adverts.contains_key(*p))
            {
                round.exclude(site, "no key advert in time (secure aggregation)");
            }
            secure
                .adverts
                .retain(|site, _| !round.excluded.contains_key(site));
            let needed = round.plan.min_participants.max(2);
            if secure.adverts.len() < needed {
                round.fail(
                    format!(
                        "{} site(s) advertised keys; secure aggregation needs {needed}",
                        secure.adverts.len()
                    ),
                    now,
                );
                return true;
            }
            secure.threshold = grassroots_secagg::threshold_for(secure.adverts.len());
            secure.enter(SecurePhase::Sharing, now);
            true
        }
        SecurePhase::Sharing => {
            let roster: Vec<&String> = secure.adverts.keys().collect();
            let all_in = roster.iter().all(|p| secure.shares.contains_key(*p));
            if !all_in && !secure.timed_out(now) {
                return false;
            }
            for site in roster {
                if !secure.shares.contains_key(site) {
                    round.exclude(site, "did not share its keys in time (secure aggregation)");
                }
            }
            secure.sharing = secure
                .shares
                .keys()
                .filter(|s| !round.excluded.contains_key(*s))
                .cloned()
                .collect();
            if secure.sharing.len() < secure.threshold {
                round.fail(
                    format!(
                        "{} site(s) shared keys; the threshold is {}",
                        secure.sharing.len(),
                        secure.threshold
                    ),
                    now,
                );
                return true;
            }
            secure.enter(SecurePhase::Masking, now);
            true
        }
        SecurePhase::Masking | SecurePhase::Consenting | SecurePhase::Unmasking => false,
    }
}

/// Called when the round's state machine says aggregate: asks the survivors to reveal, and
/// says whether enough reveals are in to unmask. Returns (ready, changed).
pub(crate) fn ready_to_unmask(record: &mut RoundRecord, now: i64) -> (bool, bool) {
    let Some(secure) = record.secure.as_mut() else {
        return (true, false);
    };
    match secure.phase {
        SecurePhase::Masking => {
            secure.masked = record.round.received.keys().cloned().collect();
            if secure.masked.len() < secure.threshold {
                let reason = format!(
                    "{} masked update(s) arrived; unmasking needs {}",
                    secure.masked.len(),
                    secure.threshold
                );
                record.round.fail(reason, now);
                return (false, true);
            }
            secure.enter(SecurePhase::Consenting, now);
            (false, true)
        }
        SecurePhase::Consenting => {
            let all_in = secure
                .masked
                .iter()
                .all(|s| secure.consents.contains_key(s));
            let enough = secure.consents.len() >= secure.threshold;
            if all_in || (secure.timed_out(now) && enough) {
                secure.enter(SecurePhase::Unmasking, now);
                return (false, true);
            }
            if secure.timed_out(now) {
                let reason = format!(
                    "{} survivor(s) consented in time; unmasking needs {}",
                    secure.consents.len(),
                    secure.threshold
                );
                record.round.fail(reason, now);
                return (false, true);
            }
            (false, false)
        }
        SecurePhase::Unmasking => {
            let all_in = secure.masked.iter().all(|s| secure.reveals.contains_key(s));
            if all_in || (secure.timed_out(now) && secure.reveals.len() >= secure.threshold) {
                return (true, false);
            }
            if secure.timed_out(now) {
                let reason = format!(
                    "{} reveal(s) in time; unmasking needs {}",
                    secure.reveals.len(),
                    secure.threshold
                );
                record.round.fail(reason, now);
                return (false, true);
            }
            (false, false)
        }
        SecurePhase::Advertising | SecurePhase::Sharing => (false, false),
    }
}

/// What the current phase sends `site`, if anything.
fn message_for(record: &RoundRecord, site: &str) -> Option<ToEdge> {
    let secure = record.secure.as_ref()?;
    let round = record.round.plan.round;
    let among = |sites: &[String]| sites.iter().any(|s| s == site);
    match secure.phase {
        SecurePhase::Advertising => None,
        SecurePhase::Sharing => secure.adverts.contains_key(site).then(|| ToEdge::Roster {
            round,
            threshold: secure.threshold,
            adverts: secure.adverts.values().cloned().collect(),
        }),
        SecurePhase::Masking => among(&secure.sharing).then(|| ToEdge::Inbox {
            round,
            sharing: secure.sharing.clone(),
            shares: secure
                .sharing
                .iter()
                .filter_map(|from| secure.shares.get(from))
                .flatten()
                .filter(|share| share.to == site)
                .cloned()
                .collect(),
        }),
        SecurePhase::Consenting => among(&secure.masked).then(|| ToEdge::Unmask {
            round,
            masked: secure.masked.clone(),
        }),
        SecurePhase::Unmasking => among(&secure.masked).then(|| ToEdge::Confirm {
            round,
            masked: secure.masked.clone(),
            consents: secure.consents.values().cloned().collect(),
        }),
    }
}

/// Sends the current phase's message to every site that has not acknowledged it, to all of
/// them at once: one slow site does not hold up the others or the phase's clock.
pub(crate) async fn deliver(state: &Arc<HubState>, record: &RoundRecord) {
    let Some(secure) = record.secure.as_ref() else {
        return;
    };
    let sends = record
        .round
        .plan
        .participants
        .iter()
        .filter(|site| {
            !secure.delivered.contains(*site) && !record.round.excluded.contains_key(*site)
        })
        .filter_map(|site| Some((site, message_for(record, site)?)))
        .map(|(site, message)| deliver_one(state, record, site, message));
    futures_util::future::join_all(sends).await;
}

async fn deliver_one(state: &Arc<HubState>, record: &RoundRecord, site: &str, message: ToEdge) {
    let (Some(secure), Some(connection)) = (record.secure.as_ref(), state.sites.connection(site))
    else {
        return;
    };
    let round = record.round.plan.round;
    let path = state
        .rounds
        .round_dir(round)
        .join(format!("secagg-{:?}-{site}.json", secure.phase).to_lowercase());
    if let Err(error) = grassroots_store::durable::write_file(&path, &message::to_json(&message)) {
        tracing::error!(%error, "cannot write a secure aggregation message");
        return;
    }
    let sent = crate::link::send_file(state, &connection, &path, LABEL);
    match tokio::time::timeout(Duration::from_secs(30), sent).await {
        Ok(Ok(())) => {
            let phase = secure.phase;
            state.rounds.modify(round, |latest| {
                let Some(now) = latest.secure.as_mut() else {
                    return false;
                };
                if now.phase != phase || now.delivered.iter().any(|s| s == site) {
                    return false;
                }
                now.delivered.push(site.to_string());
                true
            });
        }
        Ok(Err(error)) => {
            tracing::warn!(%site, %error, "secure aggregation message not delivered yet")
        }
        Err(_) => tracing::warn!(%site, "secure aggregation message timed out; retried"),
    }
}

/// A secure-aggregation message from `site` (identity from its certificate). Refusals are
/// logged with the site and reason; nothing already recorded is lost.
pub(crate) async fn take_message(state: &Arc<HubState>, site: &str, blob: &std::path::Path) {
    let Some(bytes) = crate::link::read_bounded(
        site,
        blob,
        message::MAX_MESSAGE_BYTES,
        "secure aggregation message",
    )
    .await
    else {
        return;
    };
    let message = match ToHub::from_json(&bytes) {
        Ok(message) => message,
        Err(error) => {
            tracing::warn!(%site, %error, "secure aggregation message refused");
            return;
        }
    };
    let round = message.round();
    let mut refusal = None;
    let changed = state.rounds.modify(round, |record| {
        match accept(state, record, site, &message) {
            Ok(changed) => changed,
            Err(reason) => {
                refusal = Some(reason);
                false
            }
        }
    });
    match refusal {
        Some(reason) => tracing::warn!(%site, round, %reason, "secure aggregation message refused"),
        None if changed => {
            state.rounds.wake.notify_one();
            tracing::info!(%site, round, "secure aggregation message taken")
        }
        None => {}
    }
}

fn accept(
    state: &HubState,
    record: &mut RoundRecord,
    site: &str,
    message: &ToHub,
) -> Result<bool, String> {
    if let Some(reason) = record.round.excluded.get(site) {
        return Err(format!("excluded from the round: {reason}"));
    }
    if !record.round.plan.participants.iter().any(|p| p == site) {
        return Err("not a participant of this round".into());
    }
    let round = record.round.plan.round;
    let secure = record
        .secure
        .as_mut()
        .ok_or("this round does not use secure aggregation")?;
    match (secure.phase, message) {
        (SecurePhase::Advertising, ToHub::Advert { advert, .. }) => {
            if advert.advert.site != site {
                return Err(format!("an advert naming {}", advert.advert.site));
            }
            signing::verify_edge(
                &state.kit,
                site,
                &advert.certificate_pem,
                ADVERT_SIGNATURE_CONTEXT,
                &advert.advert.signed_bytes(round),
                &advert.signature,
            )
            .map_err(|e| format!("its advert: {e}"))?;
            if secure.adverts.contains_key(site) {
                return Ok(false);
            }
            // Well-formed keys, none copied from another site's advert.
            let mut all: Vec<_> = secure.adverts.values().map(|a| a.advert.clone()).collect();
            all.push(advert.advert.clone());
            grassroots_secagg::check_adverts(&all).map_err(|e| e.to_string())?;
            secure.adverts.insert(site.to_string(), advert.clone());
            Ok(true)
        }
        (SecurePhase::Sharing, ToHub::Shares { shares, .. }) => {
            if !secure.adverts.contains_key(site) {
                return Err("shares from a site not in the roster".into());
            }
            let mut recipients: Vec<&str> = shares.iter().map(|s| s.to.as_str()).collect();
            recipients.sort_unstable();
            let roster: Vec<&str> = secure.adverts.keys().map(String::as_str).collect();
            if shares.iter().any(|s| s.from != site) || recipients != roster {
                return Err("shares that are not one from this site to each of the roster".into());
            }
            if secure.shares.contains_key(site) {
                return Ok(false);
            }
            secure.shares.insert(site.to_string(), shares.clone());
            Ok(true)
        }
        (SecurePhase::Consenting, ToHub::Consent { consent, .. }) => {
            if !secure.masked.iter().any(|s| s == site) || consent.site != site {
                return Err("a consent from a site whose update did not arrive".into());
            }
            signing::verify_edge(
                &state.kit,
                site,
                &consent.certificate_pem,
                CONSENT_SIGNATURE_CONTEXT,
                &survivors_bytes(round, &secure.masked),
                &consent.signature,
            )
            .map_err(|e| format!("its consent: {e}"))?;
            if secure.consents.contains_key(site) {
                return Ok(false);
            }
            secure.consents.insert(site.to_string(), consent.clone());
            Ok(true)
        }
        (SecurePhase::Unmasking, ToHub::Reveal { reveal, .. }) => {
            if !secure.masked.iter().any(|s| s == site) {
                return Err("a reveal from a site whose update did not arrive".into());
            }
            let both = reveal
                .self_mask_shares
                .keys()
                .any(|s| reveal.mask_key_shares.contains_key(s));
            if both {
                return Err("a reveal holding both shares of one site".into());
            }
            if secure.reveals.contains_key(site) {
                return Ok(false);
            }
            secure.reveals.insert(site.to_string(), reveal.clone());
            Ok(true)
        }
        (phase, _) => Err(format!("a message out of turn (the round is {phase:?})")),
    }
}

/// The survivors' mean update, unmasked from their masked vectors and the reveals: Σ samples
/// x delta over Σ samples. Errors name what stopped it.
pub(crate) fn unmasked_mean(
    state: &HubState,
    record: &RoundRecord,
    values: usize,
) -> Result<(Vec<f32>, u64), String> {
    let secure = record.secure.as_ref().ok_or("not a secure round")?;
    let round = record.round.plan.round;
    let mut masked = BTreeMap::new();
    let mut samples = 0u64;
    for site in &secure.masked {
        let path = state.rounds.update_path(round, site);
        let bytes = std::fs::read(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        let (header, payload) = decode_update(&bytes).map_err(|e| e.to_string())?;
        if header.encoding != UpdateEncoding::Masked || header.values as usize != values {
            return Err(format!("{site}: not a masked update of the model's size"));
        }
        samples = samples
            .checked_add(header.samples)
            .ok_or("sample counts that overflow")?;
        masked.insert(
            site.clone(),
            grassroots_secagg::decode_masked(payload, values).map_err(|e| e.to_string())?,
        );
    }
    let roster: Vec<_> = secure.adverts.values().map(|a| a.advert.clone()).collect();
    let sum = grassroots_secagg::unmask(
        round,
        &roster,
        &secure.sharing,
        &masked,
        &secure.reveals,
        secure.threshold,
    )
    .map_err(|e| e.to_string())?;
    if samples == 0 {
        return Err("no samples behind the masked updates".into());
    }
    let mean = sum.iter().map(|v| (v / samples as f64) as f32).collect();
    Ok((mean, samples))
}
