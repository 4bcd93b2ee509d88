//! Secure aggregation for federated rounds (Bonawitz et al., "Practical Secure Aggregation for
//! Privacy-Preserving Machine Learning", CCS 2017), without any I/O: the hub relays, stores and
//! sums, and learns only the sum of the sites' updates.
//!
//! Why: an update is a function of one hospital's cases. Differential privacy bounds what the
//! *released model* reveals; secure aggregation removes the hub's view of each site's update
//! altogether, so a stolen hub disk or a curious hub operator holds only masked vectors.
//!
//! The round, as the hub and the edges drive it (messages in [`message`]):
//! 1. **Advertise.** Each participant makes two X25519 key pairs for the round (one to encrypt
//!    shares, one to agree pairwise masks) and a self-mask seed, and sends the public keys and a
//!    commitment to the seed, signed with its certificate's key ([`RoundSecrets::advert`]).
//! 2. **Share.** The hub relays every signed advert (the roster); each participant checks the
//!    signatures against the network's CA, then Shamir-shares its mask key and its seed among
//!    the roster (threshold `t`), each share encrypted for its recipient ([`seal_shares`]).
//! 3. **Mask.** The hub relays to each participant the shares addressed to it and the list of
//!    those who shared. A participant sends its update in fixed point, plus a mask from its own
//!    seed, plus or minus a mask agreed with every other sharer ([`mask`]). Pairwise masks cancel
//!    in the sum; self-masks do not, so a masked vector alone is noise.
//! 4. **Unmask.** The hub names who sent masked vectors. Each survivor reveals, for each of them,
//!    its share of their self-mask seed, and for each sharer that dropped, its share of their
//!    mask key — never both for one site ([`reveal`]). With `t` reveals the hub removes the
//!    self-masks and the dropped sites' pairwise masks, and holds the sum ([`unmask`]).
//!
//! Sample counts travel in clear beside the masked values (the hub weights by their sum): they
//! count tiles, not people. Because the hub never sees an individual update, rules that need
//! one — coordinate-wise median, trimmed mean, outlier refusal — cannot run with secure
//! aggregation; norm clipping and Gaussian noise run at the edge before masking instead.

pub mod message;
mod shares;

use std::collections::{BTreeMap, BTreeSet};

use rand::{CryptoRng, RngCore, SeedableRng};
use rand_chacha::ChaCha20Rng;
use serde::{Deserialize, Serialize};
use x25519_dalek::{PublicKey, StaticSecret};

pub use message::{Consent, KeyAdvert, Reveal, SealedShare, SignedAdvert, ToEdge, ToHub};

/// Fractional bits of the fixed-point values that are masked and summed (mod 2^64).
pub const FIXED_POINT_BITS: u32 = 24;
/// A weighted value's fixed-point magnitude must stay below this, so that the sum of up to
/// [`MAX_PARTICIPANTS`] values cannot wrap.
const MAX_FIXED_POINT: f64 = (1u64 << 54) as f64;
/// Shamir shares live in GF(256): at most 255 shares, so at most 255 participants a round.
pub const MAX_PARTICIPANTS: usize = 255;

#[derive(Debug, thiserror::Error)]
pub enum SecAggError {
    /// A peer's message broke the protocol: the reason names what.
    #[error("secure aggregation refused: {0}")]
    Refused(String),
    /// Bytes that are not a message of this protocol.
    #[error("malformed secure aggregation message: {0}")]
    Malformed(String),
}

type Result<T> = std::result::Result<T, SecAggError>;

fn refused(reason: impl Into<String>) -> SecAggError {
    SecAggError::Refused(reason.into())
}

/// The smallest threshold that keeps the protocol safe for `participants`: a majority (so two
/// disjoint groups cannot both reconstruct), and at least two.
pub fn threshold_for(participants: usize) -> usize {
    (participants / 2 + 1).max(2)
}

/// A participant's secrets for one round: written durably at the edge, never sent.
#[derive(Clone, Serialize, Deserialize)]
pub struct RoundSecrets {
    #[serde(with = "hex32")]
    encryption_key: [u8; 32],
    #[serde(with = "hex32")]
    mask_key: [u8; 32],
    #[serde(with = "hex32")]
    self_mask_seed: [u8; 32],
}

impl std::fmt::Debug for RoundSecrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RoundSecrets(..)")
    }
}

impl RoundSecrets {
    pub fn generate(rng: &mut (impl RngCore + CryptoRng)) -> Self {
        let mut secrets = Self {
            encryption_key: [0; 32],
            mask_key: [0; 32],
            self_mask_seed: [0; 32],
        };
        rng.fill_bytes(&mut secrets.encryption_key);
        rng.fill_bytes(&mut secrets.mask_key);
        rng.fill_bytes(&mut secrets.self_mask_seed);
        secrets
    }

    /// What this participant announces (to be signed with its certificate's key).
    pub fn advert(&self, site: &str) -> KeyAdvert {
        let public =
            |key: &[u8; 32]| hex::encode(PublicKey::from(&StaticSecret::from(*key)).as_bytes());
        KeyAdvert {
            site: site.to_string(),
            encryption_public: public(&self.encryption_key),
            mask_public: public(&self.mask_key),
            self_mask_commitment: commitment(&self.self_mask_seed),
        }
    }
}

fn commitment(seed: &[u8; 32]) -> String {
    blake3::derive_key("grassroots secagg v1 self-mask commitment", seed)
        .iter()
        .fold(String::with_capacity(64), |mut s, b| {
            s.push_str(&format!("{b:02x}"));
            s
        })
}

fn key32(hex_text: &str, what: &str) -> Result<[u8; 32]> {
    let bytes = hex::decode(hex_text).map_err(|_| refused(format!("{what} is not hex")))?;
    bytes
        .try_into()
        .map_err(|_| refused(format!("{what} is not 32 bytes")))
}

/// Checks a roster (already signature-checked by the caller): distinct sites, well-formed keys,
/// a sensible size, and `me` in it with the advert it sent.
pub fn check_roster(roster: &[KeyAdvert], me: Option<&KeyAdvert>, threshold: usize) -> Result<()> {
    check_adverts(roster)?;
    if threshold < threshold_for(roster.len()) || threshold > roster.len() {
        return Err(refused(format!(
            "a threshold of {threshold} for {} participants (at least a majority is needed)",
            roster.len()
        )));
    }
    if let Some(me) = me {
        if !roster.contains(me) {
            return Err(refused("the roster does not hold this site's own advert"));
        }
    }
    Ok(())
}

/// Checks a set of adverts: distinct sites, no public key twice (a key copied from another
/// site would make two pairwise masks cancel), well-formed keys that are not of low order, at
/// most [`MAX_PARTICIPANTS`].
pub fn check_adverts(roster: &[KeyAdvert]) -> Result<()> {
    let sites: BTreeSet<&str> = roster.iter().map(|a| a.site.as_str()).collect();
    if sites.len() != roster.len() {
        return Err(refused("a site appears twice in the roster"));
    }
    let keys: BTreeSet<&str> = roster
        .iter()
        .flat_map(|a| [a.encryption_public.as_str(), a.mask_public.as_str()])
        .collect();
    if keys.len() != 2 * roster.len() {
        return Err(refused("a public key appears twice in the roster"));
    }
    if roster.len() > MAX_PARTICIPANTS {
        return Err(refused(format!(
            "more than {MAX_PARTICIPANTS} participants"
        )));
    }
    // A probe secret: agreement with a low-order point is not contributory.
    let probe = [7u8; 32];
    for advert in roster {
        key32(&advert.self_mask_commitment, "a commitment")?;
        agree(&probe, &advert.encryption_public)?;
        agree(&probe, &advert.mask_public)?;
    }
    Ok(())
}

fn find<'a>(roster: &'a [KeyAdvert], site: &str) -> Result<&'a KeyAdvert> {
    roster
        .iter()
        .find(|a| a.site == site)
        .ok_or_else(|| refused(format!("{site} is not in the roster")))
}

fn agree(secret: &[u8; 32], public_hex: &str) -> Result<[u8; 32]> {
    let public = PublicKey::from(key32(public_hex, "a public key")?);
    let shared = StaticSecret::from(*secret).diffie_hellman(&public);
    if !shared.was_contributory() {
        return Err(refused("a low-order public key"));
    }
    Ok(*shared.as_bytes())
}

/// The seed of the mask sites `a` and `b` share in `round` (the same from either side): the
/// agreed secret bound to both sites and both keys, so no third advert can reproduce it.
fn pair_seed(round: u64, shared: &[u8; 32], a: &KeyAdvert, b: &KeyAdvert) -> [u8; 32] {
    let (first, second) = if a.site <= b.site { (a, b) } else { (b, a) };
    let mut material = shared.to_vec();
    material.extend_from_slice(&round.to_le_bytes());
    for advert in [first, second] {
        material.extend_from_slice(advert.site.as_bytes());
        material.push(0);
        material.extend_from_slice(advert.mask_public.as_bytes());
        material.push(0);
    }
    blake3::derive_key("grassroots secagg v2 pairwise mask", &material)
}

/// A digest of a participant's view of the round (the roster and the threshold), bound into
/// every share it seals or opens.
fn view(roster: &[KeyAdvert], threshold: usize) -> String {
    let mut hasher = blake3::Hasher::new();
    hasher.update(&(threshold as u64).to_le_bytes());
    for advert in roster {
        hasher.update(&advert.signed_bytes(0));
        hasher.update(&[0xff]);
    }
    hasher.finalize().to_hex().to_string()
}

/// The x coordinate of the shares `site` was dealt: its place in the roster, from one.
fn share_x(roster: &[KeyAdvert], site: &str) -> Option<u8> {
    roster
        .iter()
        .position(|a| a.site == site)
        .and_then(|i| u8::try_from(i + 1).ok())
}

fn self_seed(round: u64, seed: &[u8; 32]) -> [u8; 32] {
    let mut material = seed.to_vec();
    material.extend_from_slice(&round.to_le_bytes());
    blake3::derive_key("grassroots secagg v1 self mask", &material)
}

/// Adds (or subtracts) the mask expanded from `seed` to `values`, mod 2^64.
fn apply_mask(values: &mut [u64], seed: [u8; 32], add: bool) {
    let mut prg = ChaCha20Rng::from_seed(seed);
    for value in values {
        let mask = prg.next_u64();
        *value = if add {
            value.wrapping_add(mask)
        } else {
            value.wrapping_sub(mask)
        };
    }
}

/// Shamir-shares this participant's mask key and self-mask seed among the roster, each share
/// encrypted for its recipient (one to itself too).
pub fn seal_shares(
    round: u64,
    me: &str,
    secrets: &RoundSecrets,
    roster: &[KeyAdvert],
    threshold: usize,
    rng: &mut (impl RngCore + CryptoRng),
) -> Result<Vec<SealedShare>> {
    check_roster(roster, Some(&secrets.advert(me)), threshold)?;
    let t = u8::try_from(threshold).map_err(|_| refused("threshold above 255"))?;
    let mask_shares = shares::split(&secrets.mask_key, t, roster.len(), rng);
    let seed_shares = shares::split(&secrets.self_mask_seed, t, roster.len(), rng);
    let view = view(roster, threshold);
    roster
        .iter()
        .zip(mask_shares.into_iter().zip(seed_shares))
        .map(|(recipient, (mask_share, seed_share))| {
            let plain = shares::ShareBundle {
                mask_key: mask_share,
                self_mask_seed: seed_share,
            };
            let key = agree(&secrets.encryption_key, &recipient.encryption_public)?;
            Ok(SealedShare {
                from: me.to_string(),
                to: recipient.site.clone(),
                ciphertext: hex::encode(shares::seal(
                    round,
                    (me, &recipient.site, &view),
                    &key,
                    &plain,
                )?),
            })
        })
        .collect()
}

/// The fixed-point form of `delta` weighted by `samples`.
fn fixed_point(delta: &[f32], samples: u64) -> Result<Vec<u64>> {
    let scale = f64::from(1u32 << FIXED_POINT_BITS) * samples as f64;
    delta
        .iter()
        .map(|v| {
            let x = (f64::from(*v) * scale).round();
            if !x.is_finite() || x.abs() >= MAX_FIXED_POINT {
                return Err(refused(
                    "an update value too large for secure aggregation's fixed point (clip updates)",
                ));
            }
            Ok(x as i64 as u64)
        })
        .collect()
}

/// Checks the sharers the hub names: distinct roster members, this site among them, and at
/// least `threshold` of them (fewer would let the hub unmask a site whose pairwise masks it
/// knows how to remove).
fn check_sharing(
    roster: &[KeyAdvert],
    me: &str,
    sharing: &[String],
    threshold: usize,
) -> Result<()> {
    let distinct: BTreeSet<&str> = sharing.iter().map(String::as_str).collect();
    if distinct.len() != sharing.len() || sharing.iter().any(|s| find(roster, s).is_err()) {
        return Err(refused(
            "the sharers named are not distinct members of the roster",
        ));
    }
    if !distinct.contains(me) {
        return Err(refused("this site is not among those who shared"));
    }
    if sharing.len() < threshold {
        return Err(refused(format!(
            "{} sharers; masking needs at least the threshold, {threshold}",
            sharing.len()
        )));
    }
    Ok(())
}

/// This participant's masked update: `delta` weighted by `samples` in fixed point, plus its
/// self-mask, plus or minus the mask it shares with every other site in `sharing` (those whose
/// shares the hub relayed).
#[allow(clippy::too_many_arguments)]
pub fn mask(
    round: u64,
    me: &str,
    secrets: &RoundSecrets,
    roster: &[KeyAdvert],
    threshold: usize,
    sharing: &[String],
    delta: &[f32],
    samples: u64,
) -> Result<Vec<u64>> {
    check_sharing(roster, me, sharing, threshold)?;
    let mine = find(roster, me)?;
    let mut values = fixed_point(delta, samples)?;
    apply_mask(&mut values, self_seed(round, &secrets.self_mask_seed), true);
    for other in sharing.iter().filter(|s| s.as_str() != me) {
        let advert = find(roster, other)?;
        let shared = agree(&secrets.mask_key, &advert.mask_public)?;
        apply_mask(
            &mut values,
            pair_seed(round, &shared, mine, advert),
            me < other.as_str(),
        );
    }
    Ok(values)
}

/// Answers the hub's unmasking request: for each site in `masked` its share of their self-mask
/// seed, for each sharer not in `masked` its share of their mask key. Refuses a request that
/// would let the hub unmask one site (fewer than `threshold` survivors, or names outside the
/// sharers); the caller must also refuse a second, different request for the same round.
#[allow(clippy::too_many_arguments)]
pub fn reveal(
    round: u64,
    me: &str,
    secrets: &RoundSecrets,
    roster: &[KeyAdvert],
    sharing: &[String],
    inbox: &[SealedShare],
    masked: &[String],
    threshold: usize,
) -> Result<Reveal> {
    let masked_set: BTreeSet<&str> = masked.iter().map(String::as_str).collect();
    let sharing_set: BTreeSet<&str> = sharing.iter().map(String::as_str).collect();
    if masked_set.len() != masked.len() || !masked_set.is_subset(&sharing_set) {
        return Err(refused(
            "the survivors named are not a subset of those who shared",
        ));
    }
    if masked_set.len() < threshold {
        return Err(refused(format!(
            "{} survivors; revealing needs at least {threshold}",
            masked_set.len()
        )));
    }
    if !masked_set.contains(me) {
        return Err(refused("this site is not named among the survivors"));
    }
    check_sharing(roster, me, sharing, threshold)?;
    let view = view(roster, threshold);
    let mut answer = Reveal::default();
    for share in inbox {
        if share.to != me || !sharing_set.contains(share.from.as_str()) {
            continue;
        }
        // A share that does not open (altered, or sealed for another roster) is left out: it
        // costs its sender one share, not the round.
        let opened = find(roster, &share.from).and_then(|sender| {
            let key = agree(&secrets.encryption_key, &sender.encryption_public)?;
            let ciphertext = hex::decode(&share.ciphertext)
                .map_err(|_| refused(format!("a share from {} is not hex", share.from)))?;
            shares::open(round, (&share.from, me, &view), &key, &ciphertext)
        });
        let Ok(bundle) = opened else {
            continue;
        };
        if masked_set.contains(share.from.as_str()) {
            answer
                .self_mask_shares
                .insert(share.from.clone(), hex::encode(bundle.self_mask_seed));
        } else {
            answer
                .mask_key_shares
                .insert(share.from.clone(), hex::encode(bundle.mask_key));
        }
    }
    Ok(answer)
}

/// The hub's last step: from the masked vectors of the survivors and at least `threshold`
/// reveals (by the site that revealed), the sum of the survivors' weighted updates (Σ samples
/// x delta), dequantised. A share counts only with the x coordinate its revealer was dealt, and
/// a recovered secret only if it matches its advert.
pub fn unmask(
    round: u64,
    roster: &[KeyAdvert],
    sharing: &[String],
    masked: &BTreeMap<String, Vec<u64>>,
    reveals: &BTreeMap<String, Reveal>,
    threshold: usize,
) -> Result<Vec<f64>> {
    if reveals.len() < threshold {
        return Err(refused(format!(
            "{} reveals; unmasking needs {threshold}",
            reveals.len()
        )));
    }
    let length = masked
        .values()
        .next()
        .map(Vec::len)
        .ok_or_else(|| refused("no masked update"))?;
    if masked.values().any(|v| v.len() != length) {
        return Err(refused("masked updates of different lengths"));
    }
    let mut sum = vec![0u64; length];
    for values in masked.values() {
        for (total, v) in sum.iter_mut().zip(values) {
            *total = total.wrapping_add(*v);
        }
    }
    let gather = |site: &str, pick: fn(&Reveal) -> &BTreeMap<String, String>| {
        reveals
            .iter()
            .filter_map(|(revealer, r)| {
                let x = share_x(roster, revealer)?;
                let share = hex::decode(pick(r).get(site)?).ok()?;
                Some((x, share))
            })
            .collect::<Vec<(u8, Vec<u8>)>>()
    };
    for site in masked.keys() {
        let advert = find(roster, site)?;
        let seed = shares::recover(&gather(site, |r| &r.self_mask_shares), threshold, |seed| {
            commitment(seed) == advert.self_mask_commitment
        })
        .map_err(|e| refused(format!("{site}'s self-mask: {e}")))?;
        apply_mask(&mut sum, self_seed(round, &seed), false);
    }
    for dropped in sharing.iter().filter(|s| !masked.contains_key(*s)) {
        let advert = find(roster, dropped)?;
        let key = shares::recover(&gather(dropped, |r| &r.mask_key_shares), threshold, |key| {
            hex::encode(PublicKey::from(&StaticSecret::from(*key)).as_bytes()) == advert.mask_public
        })
        .map_err(|e| refused(format!("{dropped}'s mask key: {e}")))?;
        // Each survivor added +mask if it sorts before the dropped site, -mask otherwise.
        for survivor in masked.keys() {
            let other = find(roster, survivor)?;
            let seed = pair_seed(round, &agree(&key, &other.mask_public)?, advert, other);
            apply_mask(&mut sum, seed, survivor.as_str() > dropped.as_str());
        }
    }
    let scale = f64::from(1u32 << FIXED_POINT_BITS);
    Ok(sum.into_iter().map(|v| v as i64 as f64 / scale).collect())
}

/// Masked values as bytes (little endian), and back.
pub fn encode_masked(values: &[u64]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

pub fn decode_masked(bytes: &[u8], values: usize) -> Result<Vec<u64>> {
    if bytes.len() != values.saturating_mul(8) {
        return Err(SecAggError::Malformed(format!(
            "{} bytes of masked values; {values} values need {}",
            bytes.len(),
            values.saturating_mul(8)
        )));
    }
    Ok(bytes
        .chunks_exact(8)
        .map(|c| u64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]))
        .collect())
}

mod hex32 {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(bytes: &[u8; 32], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(bytes))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<[u8; 32], D::Error> {
        let text = String::deserialize(d)?;
        let bytes = hex::decode(text).map_err(serde::de::Error::custom)?;
        bytes
            .try_into()
            .map_err(|_| serde::de::Error::custom("not 32 bytes"))
    }
}

#[cfg(test)]
mod tests;
