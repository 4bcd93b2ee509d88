//! The edge's side of a round with secure aggregation (`grassroots-secagg`): advertise this
//! round's keys signed with the site's certificate key, share its secrets among the roster,
//! send the trained update masked, and reveal what unmasks the survivors' sum — once.
//!
//! The privacy line here: the update leaves only masked. The roster's adverts are checked
//! against the network's CA, so a hub cannot slip in keys of its own and read the shares. An
//! edge signs one list of survivors per round, reveals only once a threshold of survivors
//! signed that same list (the consistency check), and never reveals both a site's self-mask
//! share and its mask-key share, so the hub cannot unmask one site by asking twice or by
//! showing different survivors different lists.
//!
//! Each step's outcome (the signed advert, the sealed shares, the reveal) is written to the
//! round's record before it is queued, so a crash between the two sends the same bytes again.
//! The steps run on their own task, beside training, so the setup phases are answered within
//! seconds even while the box trains.

use std::sync::Arc;
use std::time::Duration;

use grassroots_provisioning::signing;
use grassroots_secagg::message::{
    self, survivors_bytes, ADVERT_SIGNATURE_CONTEXT, CONSENT_SIGNATURE_CONTEXT, LABEL,
};
use grassroots_secagg::{
    Consent, KeyAdvert, RoundSecrets, SealedShare, SignedAdvert, ToEdge, ToHub,
};
use grassroots_wire::federated::{
    decode_update, encode_update, UpdateEncoding, UpdateHeader, ROUND_UPDATE_LABEL,
};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::federated::{Participation, RoundRecord};
use crate::{EdgeError, EdgeState};

/// This edge's state in one secure round, kept in the round's record (the data directory is
/// the site's own, mode 0700).
#[derive(Clone, Serialize, Deserialize)]
pub struct SecureParticipation {
    pub secrets: RoundSecrets,
    pub advert: Option<SignedAdvert>,
    pub advert_queued: bool,
    pub roster: Option<(usize, Vec<KeyAdvert>)>,
    pub shares: Option<Vec<SealedShare>>,
    pub shares_queued: bool,
    /// Who shared, and the shares addressed to this edge.
    pub inbox: Option<(Vec<String>, Vec<SealedShare>)>,
    /// The one list of survivors this edge signs and reveals for.
    pub unmask: Option<Vec<String>>,
    #[serde(default)]
    pub consent_queued: bool,
    /// A threshold of survivors signed `unmask`: this edge may reveal.
    #[serde(default)]
    pub confirmed: bool,
    pub reveal_queued: bool,
}

impl std::fmt::Debug for SecureParticipation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecureParticipation")
            .field("advert_queued", &self.advert_queued)
            .field("shares_queued", &self.shares_queued)
            .field("unmask", &self.unmask)
            .finish()
    }
}

impl SecureParticipation {
    pub fn new() -> Self {
        Self {
            secrets: RoundSecrets::generate(&mut rand::rngs::OsRng),
            advert: None,
            advert_queued: false,
            roster: None,
            shares: None,
            shares_queued: false,
            inbox: None,
            unmask: None,
            consent_queued: false,
            confirmed: false,
            reveal_queued: false,
        }
    }

    /// Where the round stands, for `/federated`.
    pub fn phase(&self) -> &'static str {
        match () {
            _ if self.reveal_queued => "revealed",
            _ if self.confirmed => "confirmed",
            _ if self.consent_queued => "consented",
            _ if self.inbox.is_some() => "masking",
            _ if self.shares_queued => "shared",
            _ if self.advert_queued => "advertised",
            _ => "starting",
        }
    }
}

impl Default for SecureParticipation {
    fn default() -> Self {
        Self::new()
    }
}

fn refused(reason: impl std::fmt::Display) -> EdgeError {
    EdgeError::Config(format!("secure aggregation: {reason}"))
}

/// Checks every advert of a roster: a certificate the network's CA issued to an edge, naming
/// the site the advert names, and a valid signature over the advert and the round.
fn verify_roster(state: &EdgeState, round: u64, adverts: &[SignedAdvert]) -> Result<(), EdgeError> {
    for signed in adverts {
        signing::verify_edge(
            &state.kit,
            &signed.advert.site,
            &signed.certificate_pem,
            ADVERT_SIGNATURE_CONTEXT,
            &signed.advert.signed_bytes(round),
            &signed.signature,
        )
        .map_err(|e| refused(format!("{}'s advert: {e}", signed.advert.site)))?;
    }
    Ok(())
}

/// Takes a message from the hub (durably, before the transfer is acknowledged); a refusal goes
/// back to the hub with its reason.
pub fn take_message(state: &EdgeState, bytes: &[u8]) -> Result<(), EdgeError> {
    let taken = take(state, bytes);
    state.federated.secure_wake.notify_one();
    taken
}

fn take(state: &EdgeState, bytes: &[u8]) -> Result<(), EdgeError> {
    let message = ToEdge::from_json(bytes).map_err(refused)?;
    let round = message.round();
    if let ToEdge::Roster { adverts, .. } = &message {
        verify_roster(state, round, adverts)?;
    }
    let me = state.kit.site_id.to_string();
    state.federated.modify(round, |record| {
        let secure = record
            .secure
            .as_mut()
            .ok_or_else(|| refused("the round's task did not ask for secure aggregation"))?;
        match message {
            ToEdge::Roster {
                threshold, adverts, ..
            } => {
                // The threshold follows the round as planned: a hub cannot lower it by
                // showing this site a small roster.
                let planned = grassroots_secagg::threshold_for(record.task.participants as usize);
                if threshold < planned {
                    return Err(refused(format!(
                        "a threshold of {threshold} where the round planned for {} sites needs {planned}",
                        record.task.participants
                    )));
                }
                let roster: Vec<KeyAdvert> = adverts.into_iter().map(|a| a.advert).collect();
                let mine = secure.secrets.advert(&me);
                grassroots_secagg::check_roster(&roster, Some(&mine), threshold)
                    .map_err(refused)?;
                let offered = (threshold, roster);
                match &secure.roster {
                    Some(held) if *held != offered => {
                        Err(refused("a second, different roster for the round"))
                    }
                    Some(_) => Ok(false),
                    None => {
                        secure.roster = Some(offered);
                        Ok(true)
                    }
                }
            }
            ToEdge::Inbox {
                sharing, shares, ..
            } => {
                let Some((_, roster)) = &secure.roster else {
                    return Err(refused("shares before the roster"));
                };
                if sharing.iter().any(|s| !roster.iter().any(|a| &a.site == s)) {
                    return Err(refused("a sharer not in the roster"));
                }
                let inbox = (sharing, shares);
                match &secure.inbox {
                    Some(held) if *held != inbox => {
                        Err(refused("a second, different set of shares for the round"))
                    }
                    Some(_) => Ok(false),
                    None => {
                        secure.inbox = Some(inbox);
                        Ok(true)
                    }
                }
            }
            ToEdge::Confirm {
            masked, consents, ..
        } => {
            if secure.unmask.as_ref() != Some(&masked) {
                return Err(refused(
                    "a confirmation for another list of survivors than the one this edge signed",
                ));
            }
            let threshold = secure.roster.as_ref().map_or(usize::MAX, |(t, _)| *t);
            let signed = verified_consents(state, round, &masked, &consents);
            if signed < threshold {
                return Err(refused(format!(
                    "{signed} valid consent(s) to the survivors; revealing needs {threshold}"
                )));
            }
            let changed = !secure.confirmed;
            secure.confirmed = true;
            Ok(changed)
        }
        ToEdge::Unmask { masked, .. } => match &secure.unmask {
                Some(held) if *held != masked => Err(refused(
                    "a second, different unmasking request for the round (it could unmask one site)",
                )),
                Some(_) => Ok(false),
                None => {
                    secure.unmask = Some(masked);
                    Ok(true)
                }
            },
        }
    })
}

/// How many distinct survivors in `masked` validly signed that list.
fn verified_consents(
    state: &EdgeState,
    round: u64,
    masked: &[String],
    consents: &[Consent],
) -> usize {
    let bytes = survivors_bytes(round, masked);
    let mut signers = std::collections::BTreeSet::new();
    for consent in consents {
        if !masked.contains(&consent.site) {
            continue;
        }
        let verified = signing::verify_edge(
            &state.kit,
            &consent.site,
            &consent.certificate_pem,
            CONSENT_SIGNATURE_CONTEXT,
            &bytes,
            &consent.signature,
        );
        if verified.is_ok() {
            signers.insert(consent.site.clone());
        }
    }
    signers.len()
}

async fn queue(
    state: &EdgeState,
    round: u64,
    name: &str,
    bytes: &[u8],
    label: &str,
) -> Result<(), EdgeError> {
    let path = state.federated.dir().join(format!("round-{round}.{name}"));
    grassroots_store::durable::write_file(&path, bytes)
        .map_err(|e| EdgeError::Config(format!("{}: {e}", path.display())))?;
    state.outbox.enqueue_file(&path, label).await?;
    Ok(())
}

/// Sets something in the round's secure state.
fn note(
    state: &EdgeState,
    round: u64,
    change: impl FnOnce(&mut SecureParticipation),
) -> Result<(), EdgeError> {
    state.federated.modify(round, |record| {
        let secure = record
            .secure
            .as_mut()
            .ok_or_else(|| refused("the round lost its secure state"))?;
        change(secure);
        Ok(true)
    })
}

/// Does the next thing a secure round is waiting for; returns whether anything happened.
async fn step(state: &EdgeState, record: RoundRecord) -> Result<bool, EdgeError> {
    let round = record.task.round;
    let me = state.kit.site_id.to_string();
    let Some(secure) = record.secure else {
        return Ok(false);
    };
    if !secure.advert_queued {
        let advert = match secure.advert {
            Some(advert) => advert,
            None => {
                let advert = secure.secrets.advert(&me);
                let signature = signing::sign(
                    &state.kit,
                    ADVERT_SIGNATURE_CONTEXT,
                    &advert.signed_bytes(round),
                )?;
                let signed = SignedAdvert {
                    advert,
                    certificate_pem: state.kit.certificate_pem.clone(),
                    signature: hex::encode(signature),
                };
                // Kept before it is queued: a crash in between sends the same bytes again.
                let kept = signed.clone();
                note(state, round, |s| s.advert = Some(kept))?;
                signed
            }
        };
        let bytes = message::to_json(&ToHub::Advert { round, advert });
        queue(state, round, "advert", &bytes, LABEL).await?;
        note(state, round, |s| s.advert_queued = true)?;
        return Ok(true);
    }
    if let (false, Some((threshold, roster))) = (secure.shares_queued, &secure.roster) {
        let shares = match secure.shares {
            Some(shares) => shares,
            None => {
                let shares = grassroots_secagg::seal_shares(
                    round,
                    &me,
                    &secure.secrets,
                    roster,
                    *threshold,
                    &mut rand::rngs::OsRng,
                )
                .map_err(refused)?;
                let kept = shares.clone();
                note(state, round, |s| s.shares = Some(kept))?;
                shares
            }
        };
        let bytes = message::to_json(&ToHub::Shares { round, shares });
        queue(state, round, "shares", &bytes, LABEL).await?;
        note(state, round, |s| s.shares_queued = true)?;
        return Ok(true);
    }
    if record.state == Participation::Trained && secure.inbox.is_none() {
        if crate::federated::deadline_passed(&record.task) {
            state.federated.finish(
                round,
                Participation::Skipped,
                "the round's shares did not arrive before its deadline".into(),
            )?;
            return Ok(true);
        }
        return Ok(false);
    }
    if let (Participation::Trained, Some((threshold, roster)), Some((sharing, _))) =
        (record.state, &secure.roster, &secure.inbox)
    {
        let plain_path = state.federated.plain_update_path(round);
        let plain = std::fs::read(&plain_path)
            .map_err(|e| EdgeError::Config(format!("{}: {e}", plain_path.display())))?;
        let (header, payload) = decode_update(&plain).map_err(refused)?;
        let delta: Vec<f32> = payload
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        let masked = grassroots_secagg::mask(
            round,
            &me,
            &secure.secrets,
            roster,
            *threshold,
            sharing,
            &delta,
            header.samples,
        )
        .map_err(refused)?;
        let masked_header = UpdateHeader {
            encoding: UpdateEncoding::Masked,
            ..header.clone()
        };
        let bytes = encode_update(&masked_header, &grassroots_secagg::encode_masked(&masked));
        queue(state, round, "update", &bytes, ROUND_UPDATE_LABEL).await?;
        let sent = bytes.len() as u64;
        state.federated.modify(round, |r| {
            r.update_bytes = Some(sent);
            Ok(true)
        })?;
        let detail = format!(
            "{} samples, loss {:.3}, {:.0} s, {sent} bytes sent masked (secure aggregation)",
            header.samples, header.mean_loss, header.training_seconds,
        );
        state.federated.finish(round, Participation::Sent, detail)?;
        return Ok(true);
    }
    if let (false, Some(masked)) = (secure.consent_queued, &secure.unmask) {
        let signature = signing::sign(
            &state.kit,
            CONSENT_SIGNATURE_CONTEXT,
            &survivors_bytes(round, masked),
        )?;
        let consent = Consent {
            site: me.clone(),
            certificate_pem: state.kit.certificate_pem.clone(),
            signature: hex::encode(signature),
        };
        let bytes = message::to_json(&ToHub::Consent { round, consent });
        queue(state, round, "consent", &bytes, LABEL).await?;
        note(state, round, |s| s.consent_queued = true)?;
        return Ok(true);
    }
    if let (false, true, Some(masked), Some((threshold, roster)), Some((sharing, inbox))) = (
        secure.reveal_queued,
        secure.confirmed,
        &secure.unmask,
        &secure.roster,
        &secure.inbox,
    ) {
        let reveal = grassroots_secagg::reveal(
            round,
            &me,
            &secure.secrets,
            roster,
            sharing,
            inbox,
            masked,
            *threshold,
        )
        .map_err(refused)?;
        let bytes = message::to_json(&ToHub::Reveal { round, reveal });
        queue(state, round, "reveal", &bytes, LABEL).await?;
        note(state, round, |s| s.reveal_queued = true)?;
        return Ok(true);
    }
    Ok(false)
}

/// Runs the secure rounds' steps until shutdown.
pub async fn run(state: Arc<EdgeState>, mut shutdown: watch::Receiver<bool>) {
    loop {
        let mut busy = false;
        if let Ok(records) = state.federated.secure_in_progress() {
            for record in records {
                let round = record.task.round;
                match step(&state, record).await {
                    Ok(done) => busy |= done,
                    Err(error) => {
                        tracing::warn!(round, %error, "secure aggregation step failed");
                        let _ = state.federated.finish(
                            round,
                            Participation::Skipped,
                            error.to_string(),
                        );
                    }
                }
            }
        }
        let pause = if busy { 50 } else { 1000 };
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(pause)) => {}
            _ = state.federated.secure_wake.notified() => {}
            _ = shutdown.changed() => return,
        }
    }
}
