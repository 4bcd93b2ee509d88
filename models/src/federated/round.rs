//! One federated round as a state machine without I/O, in the manner of `quinn-proto`: the hub's
//! driver feeds it what happened (an update arrived, a site was revoked, time passed) with the
//! time passed in, asks it what to do ([`FederatedRound::next_step`]) and persists it whole after
//! every change, so a hub killed mid-round resumes exactly where it was.
//!
//! Rules: only the round's chosen sites may contribute, once each, for this round and this
//! base version, before the deadline; a site excluded mid-round (revoked, say) is refused from
//! then on. The round aggregates as soon as every remaining participant has answered, or at the
//! deadline with at least `min_participants` (stragglers are dropped and named); with fewer it
//! fails, and the network keeps its model.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::aggregate::Refusal;

/// Most training samples an update may claim: a weight, not a licence to outweigh the round.
pub const MAX_SAMPLES: u64 = 1_000_000_000;

/// What a round was planned with.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RoundPlan {
    pub round: u64,
    /// Digest of the base version's package.
    pub base: String,
    pub participants: Vec<String>,
    pub min_participants: usize,
    /// Unix seconds after which the round aggregates without stragglers.
    pub deadline: i64,
}

/// Where a round is.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "kebab-case")]
pub enum RoundPhase {
    /// Tasks are out; updates are coming in.
    Training,
    /// Enough updates are in: the driver aggregates, validates and signs.
    Aggregating,
    /// The round made a version (its package's digest).
    Done { version: String },
    /// The round made nothing; the network keeps its model.
    Failed { reason: String },
}

/// What one accepted update said about itself (the values live in a file beside the round).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReceivedUpdate {
    pub samples: u64,
    pub mean_loss: f32,
    pub training_seconds: f64,
    pub received_at: i64,
    pub bytes: u64,
}

/// A round and everything that happened in it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FederatedRound {
    pub plan: RoundPlan,
    pub phase: RoundPhase,
    pub started_at: i64,
    pub aggregating_since: Option<i64>,
    pub finished_at: Option<i64>,
    pub received: BTreeMap<String, ReceivedUpdate>,
    pub refused: Vec<Refusal>,
    /// Sites taken out of the round, with the reason (revoked, straggler, refused update).
    pub excluded: BTreeMap<String, String>,
}

/// What the driver should do now.
#[derive(Debug, Clone, PartialEq)]
pub enum NextStep {
    /// Wait for updates until the deadline.
    Wait,
    /// Aggregate the updates received.
    Aggregate,
    /// Nothing more to do.
    Finished,
}

impl FederatedRound {
    pub fn new(plan: RoundPlan, now: i64) -> Self {
        Self {
            plan,
            phase: RoundPhase::Training,
            started_at: now,
            aggregating_since: None,
            finished_at: None,
            received: BTreeMap::new(),
            refused: Vec::new(),
            excluded: BTreeMap::new(),
        }
    }

    fn refuse(&mut self, site: &str, reason: String) -> Result<(), Refusal> {
        let refusal = Refusal {
            site: site.to_string(),
            reason,
        };
        self.refused.push(refusal.clone());
        Err(refusal)
    }

    /// An update arrived from `site` (its identity from the certificate) claiming `round` and
    /// `base`. Accepted updates are recorded; a refusal says why, and is recorded too.
    pub fn offer_update(
        &mut self,
        site: &str,
        round: u64,
        base: &str,
        update: ReceivedUpdate,
        now: i64,
    ) -> Result<(), Refusal> {
        if round != self.plan.round {
            return self.refuse(
                site,
                format!("for round {round}; this is round {}", self.plan.round),
            );
        }
        if base != self.plan.base {
            return self.refuse(site, "trained from another base version".into());
        }
        if self.phase != RoundPhase::Training {
            return self.refuse(site, "the round no longer takes updates".into());
        }
        if !self.plan.participants.iter().any(|p| p == site) {
            return self.refuse(site, "not a participant of this round".into());
        }
        if let Some(reason) = self.excluded.get(site) {
            let reason = format!("excluded from the round: {reason}");
            return self.refuse(site, reason);
        }
        if self.received.contains_key(site) {
            return self.refuse(site, "a second update (replayed?)".into());
        }
        if now > self.plan.deadline {
            return self.refuse(site, "after the round's deadline".into());
        }
        if update.samples == 0 || update.samples > MAX_SAMPLES {
            return self.refuse(
                site,
                format!("{} training samples (1 to {MAX_SAMPLES})", update.samples),
            );
        }
        self.received.insert(site.to_string(), update);
        Ok(())
    }

    /// Takes `site` out of the round (revoked, or its update refused at aggregation); an update
    /// it already sent is dropped.
    pub fn exclude(&mut self, site: &str, reason: &str) {
        if self.plan.participants.iter().any(|p| p == site) {
            self.received.remove(site);
            self.excluded.insert(site.to_string(), reason.to_string());
        }
    }

    fn remaining(&self) -> impl Iterator<Item = &String> {
        self.plan
            .participants
            .iter()
            .filter(|p| !self.excluded.contains_key(*p))
    }

    /// What to do at `now`; moves the round on when it is time.
    pub fn next_step(&mut self, now: i64) -> NextStep {
        match self.phase {
            RoundPhase::Done { .. } | RoundPhase::Failed { .. } => return NextStep::Finished,
            RoundPhase::Aggregating => return NextStep::Aggregate,
            RoundPhase::Training => {}
        }
        let all_in = self.remaining().all(|p| self.received.contains_key(p));
        if !all_in && now <= self.plan.deadline {
            return NextStep::Wait;
        }
        let stragglers: Vec<String> = self
            .remaining()
            .filter(|p| !self.received.contains_key(*p))
            .cloned()
            .collect();
        for site in stragglers {
            self.excluded
                .insert(site, "no update by the deadline".to_string());
        }
        if self.received.len() >= self.plan.min_participants.max(1) {
            self.phase = RoundPhase::Aggregating;
            self.aggregating_since = Some(now);
            NextStep::Aggregate
        } else {
            self.fail(
                format!(
                    "{} of the {} updates needed arrived",
                    self.received.len(),
                    self.plan.min_participants
                ),
                now,
            );
            NextStep::Finished
        }
    }

    pub fn finish(&mut self, version: String, now: i64) {
        self.phase = RoundPhase::Done { version };
        self.finished_at = Some(now);
    }

    pub fn fail(&mut self, reason: String, now: i64) {
        self.phase = RoundPhase::Failed { reason };
        self.finished_at = Some(now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan() -> RoundPlan {
        RoundPlan {
            round: 4,
            base: "b".repeat(64),
            participants: vec!["a".into(), "b".into(), "c".into()],
            min_participants: 2,
            deadline: 100,
        }
    }

    fn update() -> ReceivedUpdate {
        ReceivedUpdate {
            samples: 10,
            mean_loss: 0.5,
            training_seconds: 1.0,
            received_at: 0,
            bytes: 4,
        }
    }

    #[test]
    fn a_round_aggregates_when_all_are_in() {
        let mut round = FederatedRound::new(plan(), 0);
        let base = round.plan.base.clone();
        for site in ["a", "b"] {
            round.offer_update(site, 4, &base, update(), 10).unwrap();
        }
        assert_eq!(round.next_step(20), NextStep::Wait);
        round.offer_update("c", 4, &base, update(), 30).unwrap();
        assert_eq!(round.next_step(31), NextStep::Aggregate);
        assert_eq!(round.phase, RoundPhase::Aggregating);
        // Persisted and restored (a hub killed here), it is still aggregating.
        let restored: FederatedRound =
            serde_json::from_str(&serde_json::to_string(&round).unwrap()).unwrap();
        assert_eq!(restored, round);
    }

    #[test]
    fn bad_updates_are_refused_with_reasons_and_the_round_goes_on() {
        let mut round = FederatedRound::new(plan(), 0);
        let base = round.plan.base.clone();
        let reason = |r: Result<(), Refusal>| r.unwrap_err().reason;
        assert!(reason(round.offer_update("a", 3, &base, update(), 1)).contains("round 3"));
        assert!(reason(round.offer_update("a", 4, &"c".repeat(64), update(), 1)).contains("base"));
        assert!(
            reason(round.offer_update("x", 4, &base, update(), 1)).contains("not a participant")
        );
        round.offer_update("a", 4, &base, update(), 1).unwrap();
        assert!(reason(round.offer_update("a", 4, &base, update(), 2)).contains("second update"));
        round.exclude("b", "certificate revoked");
        assert!(reason(round.offer_update("b", 4, &base, update(), 3)).contains("revoked"));
        assert!(reason(round.offer_update("c", 4, &base, update(), 101)).contains("deadline"));
        assert_eq!(round.refused.len(), 6);
        assert_eq!(round.received.len(), 1);
    }

    #[test]
    fn stragglers_are_dropped_at_the_deadline_and_too_few_fail_the_round() {
        let mut round = FederatedRound::new(plan(), 0);
        let base = round.plan.base.clone();
        round.offer_update("a", 4, &base, update(), 1).unwrap();
        round.offer_update("b", 4, &base, update(), 2).unwrap();
        assert_eq!(round.next_step(50), NextStep::Wait);
        assert_eq!(round.next_step(101), NextStep::Aggregate);
        assert_eq!(round.excluded["c"], "no update by the deadline");

        let mut lonely = FederatedRound::new(plan(), 0);
        lonely.offer_update("a", 4, &base, update(), 1).unwrap();
        assert_eq!(lonely.next_step(101), NextStep::Finished);
        assert!(matches!(lonely.phase, RoundPhase::Failed { .. }));
    }
}
