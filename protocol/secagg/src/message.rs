//! The messages of a secure round, as JSON blobs on the link's bulk transfers (label
//! [`LABEL`] both ways). Every figure and string is bounded at parse: a peer's message is
//! untrusted until checked.

use std::collections::BTreeMap;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::{Result, SecAggError, MAX_PARTICIPANTS};

/// The transfer label of secure-aggregation messages, hub to edge and edge to hub.
pub const LABEL: &str = "secure-aggregation";
/// Most bytes of one message (a roster of 255 certificates fits with room to spare).
pub const MAX_MESSAGE_BYTES: usize = 4 << 20;
/// What an advert's signature is over, so it cannot pass for another kind of signature.
pub const ADVERT_SIGNATURE_CONTEXT: &str = "grassroots secure aggregation key advert v1";
/// What a consent's signature is over: the survivors named for unmasking.
pub const CONSENT_SIGNATURE_CONTEXT: &str = "grassroots secure aggregation survivors v1";

/// The bytes a survivor signs to consent to unmasking `masked` (sorted, so every survivor signs
/// the same bytes for the same set).
pub fn survivors_bytes(round: u64, masked: &[String]) -> Vec<u8> {
    let mut sorted: Vec<&str> = masked.iter().map(String::as_str).collect();
    sorted.sort_unstable();
    format!("{round}\0{}", sorted.join("\0")).into_bytes()
}

const MAX_NAME: usize = 128;
const MAX_HEX: usize = 512;
const MAX_PEM: usize = 16 * 1024;

/// A participant's public keys for a round and its commitment to its self-mask seed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyAdvert {
    pub site: String,
    pub encryption_public: String,
    pub mask_public: String,
    pub self_mask_commitment: String,
}

impl KeyAdvert {
    /// The bytes its site signs: the round and every field, so no advert can be replayed into
    /// another round or have a key swapped.
    pub fn signed_bytes(&self, round: u64) -> Vec<u8> {
        format!(
            "{round}\0{}\0{}\0{}\0{}",
            self.site, self.encryption_public, self.mask_public, self.self_mask_commitment
        )
        .into_bytes()
    }
}

/// An advert with its site's certificate and signature (ECDSA, hex DER), which every other
/// participant checks against the network's CA: the hub relays adverts and cannot forge one.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignedAdvert {
    pub advert: KeyAdvert,
    pub certificate_pem: String,
    pub signature: String,
}

/// One participant's encrypted shares for another.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SealedShare {
    pub from: String,
    pub to: String,
    pub ciphertext: String,
}

/// A survivor's signature over the survivors named for unmasking (Bonawitz et al.'s
/// consistency check): an edge reveals only once a threshold of survivors signed the same list,
/// so the hub cannot show different survivors different lists.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Consent {
    pub site: String,
    pub certificate_pem: String,
    pub signature: String,
}

/// A survivor's answer to the unmasking request: shares (hex) by the site they belong to.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Reveal {
    pub self_mask_shares: BTreeMap<String, String>,
    pub mask_key_shares: BTreeMap<String, String>,
}

/// Hub to edge.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum ToEdge {
    /// Every participant's signed advert: share your secrets among them.
    Roster {
        round: u64,
        threshold: usize,
        adverts: Vec<SignedAdvert>,
    },
    /// The shares addressed to you, and who shared: mask your update against them.
    Inbox {
        round: u64,
        sharing: Vec<String>,
        shares: Vec<SealedShare>,
    },
    /// These sites' masked updates arrived: reveal what unmasks their sum.
    Unmask { round: u64, masked: Vec<String> },
    /// A threshold of survivors signed this list: reveal what unmasks their sum.
    Confirm {
        round: u64,
        masked: Vec<String>,
        consents: Vec<Consent>,
    },
}

/// Edge to hub.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum ToHub {
    Advert {
        round: u64,
        advert: SignedAdvert,
    },
    Shares {
        round: u64,
        shares: Vec<SealedShare>,
    },
    Consent {
        round: u64,
        consent: Consent,
    },
    Reveal {
        round: u64,
        reveal: Reveal,
    },
}

fn malformed(what: impl Into<String>) -> SecAggError {
    SecAggError::Malformed(what.into())
}

fn parse<T: DeserializeOwned>(bytes: &[u8]) -> Result<T> {
    if bytes.len() > MAX_MESSAGE_BYTES {
        return Err(malformed(format!("{} bytes", bytes.len())));
    }
    serde_json::from_slice(bytes).map_err(|e| malformed(e.to_string()))
}

fn bounded(text: &str, most: usize, what: &str) -> Result<()> {
    if text.len() > most {
        return Err(malformed(format!("{what} longer than {most} bytes")));
    }
    Ok(())
}

fn few<T>(items: &[T], what: &str) -> Result<()> {
    if items.len() > MAX_PARTICIPANTS {
        return Err(malformed(format!("more than {MAX_PARTICIPANTS} {what}")));
    }
    Ok(())
}

fn check_advert(signed: &SignedAdvert) -> Result<()> {
    let a = &signed.advert;
    bounded(&a.site, MAX_NAME, "a site name")?;
    for field in [
        &a.encryption_public,
        &a.mask_public,
        &a.self_mask_commitment,
    ] {
        bounded(field, MAX_HEX, "a key")?;
    }
    bounded(&signed.certificate_pem, MAX_PEM, "a certificate")?;
    bounded(&signed.signature, MAX_HEX, "a signature")
}

fn check_consent(consent: &Consent) -> Result<()> {
    bounded(&consent.site, MAX_NAME, "a site name")?;
    bounded(&consent.certificate_pem, MAX_PEM, "a certificate")?;
    bounded(&consent.signature, MAX_HEX, "a signature")
}

fn check_shares(shares: &[SealedShare]) -> Result<()> {
    few(shares, "shares")?;
    for share in shares {
        bounded(&share.from, MAX_NAME, "a site name")?;
        bounded(&share.to, MAX_NAME, "a site name")?;
        bounded(&share.ciphertext, MAX_HEX, "a share")?;
    }
    Ok(())
}

fn check_names(names: &[String]) -> Result<()> {
    few(names, "sites")?;
    names
        .iter()
        .try_for_each(|n| bounded(n, MAX_NAME, "a site name"))
}

impl ToEdge {
    pub fn from_json(bytes: &[u8]) -> Result<Self> {
        let message: Self = parse(bytes)?;
        match &message {
            Self::Roster { adverts, .. } => {
                few(adverts, "adverts")?;
                adverts.iter().try_for_each(check_advert)?;
            }
            Self::Inbox {
                sharing, shares, ..
            } => {
                check_names(sharing)?;
                check_shares(shares)?;
            }
            Self::Unmask { masked, .. } => check_names(masked)?,
            Self::Confirm {
                masked, consents, ..
            } => {
                check_names(masked)?;
                few(consents, "consents")?;
                consents.iter().try_for_each(check_consent)?;
            }
        }
        Ok(message)
    }

    pub fn round(&self) -> u64 {
        match self {
            Self::Roster { round, .. }
            | Self::Inbox { round, .. }
            | Self::Unmask { round, .. }
            | Self::Confirm { round, .. } => *round,
        }
    }
}

impl ToHub {
    pub fn from_json(bytes: &[u8]) -> Result<Self> {
        let message: Self = parse(bytes)?;
        match &message {
            Self::Advert { advert, .. } => check_advert(advert)?,
            Self::Shares { shares, .. } => check_shares(shares)?,
            Self::Consent { consent, .. } => check_consent(consent)?,
            Self::Reveal { reveal, .. } => {
                for map in [&reveal.self_mask_shares, &reveal.mask_key_shares] {
                    if map.len() > MAX_PARTICIPANTS {
                        return Err(malformed("too many revealed shares"));
                    }
                    for (site, share) in map {
                        bounded(site, MAX_NAME, "a site name")?;
                        bounded(share, MAX_HEX, "a share")?;
                    }
                }
            }
        }
        Ok(message)
    }

    pub fn round(&self) -> u64 {
        match self {
            Self::Advert { round, .. }
            | Self::Shares { round, .. }
            | Self::Consent { round, .. }
            | Self::Reveal { round, .. } => *round,
        }
    }
}

/// JSON of a message (plain data: serialising cannot fail).
pub fn to_json<T: Serialize>(message: &T) -> Vec<u8> {
    serde_json::to_vec(message).unwrap_or_default()
}
