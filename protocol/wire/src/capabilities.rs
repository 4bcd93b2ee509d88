//! Capabilities, and the rule for evolving the wire protocol without breaking older peers.
//!
//! Edges are upgraded one county at a time, over uplinks that come and go, so a hub always talks
//! to edges of several releases (and an edge may meet a hub older than itself). The protocol
//! therefore evolves by four rules, which every issue that adds to it follows:
//!
//! 1. **Variants are only appended** to [`crate::Message`]; none is removed, renumbered or
//!    reordered (postcard numbers variants in declaration order).
//! 2. **Fields are added with defaults**, and only to JSON payloads carried by bulk transfers
//!    (referrals, reports, coverage days), whose readers use `#[serde(default)]`. Postcard
//!    message bodies are positional: a new field there is a new variant.
//! 3. **An unknown message is answered, not fatal**: a peer that cannot decode a frame's variant
//!    answers [`crate::Message::Error`] with [`crate::ErrorCode::UnknownMessage`] on the same
//!    stream and keeps the connection; the sender takes that answer as "not supported".
//! 4. **Behaviour that an older peer would misread is announced** here: right after `Hello`
//!    the edge sends [`crate::Message::Capabilities`] with what it understands, and the hub
//!    answers with its own. An old hub answers the unknown message with an error (rule 3), which
//!    the edge reads as "no capabilities". Each side uses a capability only when the other
//!    announced it, and falls back to what version 1 did.
//!
//! A protocol *version* (the ALPN id and [`crate::SUPPORTED_VERSIONS`]) changes only for what
//! these rules cannot carry, which has not happened yet.

use std::collections::BTreeSet;

/// The peer understands [`crate::Message::TransferRefused`]: a blob that arrived intact but whose
/// content the receiver will never keep (a referral it refuses), so the sender must stop offering
/// it and show the reason. Without it, refusals are sent as `TransferRejected`, which the sender
/// retries.
pub const TRANSFER_REFUSED: &str = "transfer-refused";

/// The peer takes referrals with radiology studies ([`crate::referral::Referral::studies`])
/// and answers [`crate::Message::StudyView`]: the hub relays an expert's views of a referred
/// study, and the edge renders them. An edge refers studies only to a hub that announced it
/// (an older hub would refuse the whole referral for the unknown field); an older edge never
/// has a study referred, and answers a `StudyView` with `UnknownMessage` (rule 3).
pub const STUDY_CONSULT: &str = "study-consult";

/// What this build understands, announced to the peer.
pub const OURS: &[&str] = &[TRANSFER_REFUSED, STUDY_CONSULT];

/// At most this many names are kept from a peer's announcement...
pub const MAX_NAMES: usize = 64;
/// ...each of at most this many bytes; longer ones are ignored.
pub const MAX_NAME_LEN: usize = 64;

/// The capabilities a peer announced (none until it does).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Capabilities(BTreeSet<String>);

impl Capabilities {
    /// What this build announces.
    pub fn ours() -> Self {
        Self(OURS.iter().map(|name| name.to_string()).collect())
    }

    /// A peer's announcement, bounded: names past [`MAX_NAMES`], or longer than
    /// [`MAX_NAME_LEN`], or not plain lowercase ASCII, are dropped (a peer cannot make us hold
    /// more than a few kilobytes, or put odd text into logs and pages).
    pub fn from_peer(names: &[String]) -> Self {
        Self(
            names
                .iter()
                .filter(|name| {
                    !name.is_empty()
                        && name.len() <= MAX_NAME_LEN
                        && name
                            .bytes()
                            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                })
                .take(MAX_NAMES)
                .cloned()
                .collect(),
        )
    }

    pub fn has(&self, name: &str) -> bool {
        self.0.contains(name)
    }

    pub fn names(&self) -> Vec<String> {
        self.0.iter().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_peers_announcement_is_bounded_and_plain() {
        let mut names: Vec<String> = (0..200).map(|i| format!("feature-{i}")).collect();
        names.push("x".repeat(65));
        names.push("<script>".into());
        names.push(TRANSFER_REFUSED.into());
        let peer = Capabilities::from_peer(&names);
        assert_eq!(peer.names().len(), MAX_NAMES);
        assert!(!peer.has("<script>"));
        assert!(Capabilities::from_peer(&[TRANSFER_REFUSED.into()]).has(TRANSFER_REFUSED));
        assert!(Capabilities::ours().has(TRANSFER_REFUSED));
        assert!(!Capabilities::default().has(TRANSFER_REFUSED));
    }
}
