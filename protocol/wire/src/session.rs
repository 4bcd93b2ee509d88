//! The control-stream session of a link, as two sans-IO state machines.
//!
//! [`EdgeSession`] runs on the edge (it dials), [`HubSession`] on the hub, one per connection.
//! The edge says `Hello` with the versions it speaks, then `Capabilities`; the hub picks the
//! newest common version and answers `Welcome` (or `Refused`), then its own `Capabilities`. A hub
//! too old to know `Capabilities` answers it with an `UnknownMessage` error, which the edge
//! takes as "none" (the rule is in [`crate::capabilities`]). From then on the edge pings every heartbeat period and the hub
//! answers; each side declares the link dead when it has heard nothing for
//! [`MISSED_HEARTBEATS_BEFORE_DEAD`] periods. Time is always passed in, so tests can run whole
//! sessions on a virtual clock.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crate::capabilities::Capabilities;
use crate::message::{ErrorCode, Message, SUPPORTED_VERSIONS};

/// Heartbeat periods without a word from the peer before the link is declared dead.
pub const MISSED_HEARTBEATS_BEFORE_DEAD: u32 = 3;

/// What a session tells its driver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionEvent {
    /// The version handshake completed.
    Established { version: u16 },
    /// A heartbeat round-trip was measured.
    RoundTrip(Duration),
    /// The peer announced what it understands beyond version 1.
    PeerCapabilities(Capabilities),
    /// The peer refused us, or we refused it; the driver closes the connection.
    Refused { reason: String },
    /// The peer stayed silent too long; the driver closes the connection.
    TimedOut,
    /// The peer broke the protocol on the control stream; the driver closes the connection.
    ProtocolViolation { detail: String },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Handshaking,
    Established,
    Closed,
}

/// Picks the newest version both sides speak.
pub fn negotiate(offered: &[u16]) -> Option<u16> {
    SUPPORTED_VERSIONS
        .iter()
        .copied()
        .find(|version| offered.contains(version))
}

/// The edge's side of the control stream.
#[derive(Debug)]
pub struct EdgeSession {
    phase: Phase,
    heartbeat: Duration,
    last_heard: Instant,
    next_ping_at: Instant,
    next_seq: u64,
    outstanding: VecDeque<(u64, Instant)>,
    transmit: VecDeque<Message>,
    events: VecDeque<SessionEvent>,
}

impl EdgeSession {
    /// Starts a session; `Hello` is queued for transmission at once. `handshake_timeout` bounds
    /// the wait for `Welcome`.
    pub fn new(now: Instant, software: &str, handshake_timeout: Duration) -> Self {
        let mut transmit = VecDeque::new();
        transmit.push_back(Message::Hello {
            versions: SUPPORTED_VERSIONS.to_vec(),
            software: software.to_string(),
        });
        transmit.push_back(Message::Capabilities {
            names: Capabilities::ours().names(),
        });
        Self {
            phase: Phase::Handshaking,
            heartbeat: handshake_timeout / MISSED_HEARTBEATS_BEFORE_DEAD,
            last_heard: now,
            next_ping_at: now + handshake_timeout,
            next_seq: 0,
            outstanding: VecDeque::new(),
            transmit,
            events: VecDeque::new(),
        }
    }

    pub fn is_established(&self) -> bool {
        self.phase == Phase::Established
    }

    pub fn handle_message(&mut self, message: Message, now: Instant) {
        if self.phase == Phase::Closed {
            return;
        }
        self.last_heard = now;
        match (self.phase, message) {
            (
                Phase::Handshaking,
                Message::Welcome {
                    version,
                    heartbeat_ms,
                },
            ) => {
                if !SUPPORTED_VERSIONS.contains(&version) {
                    self.close(SessionEvent::ProtocolViolation {
                        detail: format!("hub chose version {version}, which we never offered"),
                    });
                    return;
                }
                self.phase = Phase::Established;
                self.heartbeat = Duration::from_millis(u64::from(heartbeat_ms.max(100)));
                self.next_ping_at = now;
                self.events.push_back(SessionEvent::Established { version });
            }
            (_, Message::Refused { reason }) => self.close(SessionEvent::Refused { reason }),
            (_, Message::Capabilities { names }) => {
                self.events
                    .push_back(SessionEvent::PeerCapabilities(Capabilities::from_peer(
                        &names,
                    )))
            }
            // An older hub does not know a message we sent (our `Capabilities`): it announced
            // nothing, and the link goes on.
            (
                _,
                Message::Error {
                    code: ErrorCode::UnknownMessage,
                    ..
                },
            ) => {}
            (Phase::Established, Message::Pong { seq }) => {
                while let Some(&(sent_seq, sent_at)) = self.outstanding.front() {
                    if sent_seq > seq {
                        break;
                    }
                    self.outstanding.pop_front();
                    if sent_seq == seq {
                        self.events.push_back(SessionEvent::RoundTrip(
                            now.saturating_duration_since(sent_at),
                        ));
                    }
                }
            }
            (_, Message::Error { code, detail }) => self.close(SessionEvent::ProtocolViolation {
                detail: format!("hub reported {code:?}: {detail}"),
            }),
            (_, other) => self.close(SessionEvent::ProtocolViolation {
                detail: format!("unexpected {} on the control stream", other.kind()),
            }),
        }
    }

    /// Advances time: sends heartbeats that are due and detects a silent hub.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.phase == Phase::Closed {
            return;
        }
        if now.saturating_duration_since(self.last_heard)
            >= self.heartbeat * MISSED_HEARTBEATS_BEFORE_DEAD
        {
            self.close(SessionEvent::TimedOut);
            return;
        }
        if self.phase == Phase::Established && now >= self.next_ping_at {
            let seq = self.next_seq;
            self.next_seq += 1;
            self.outstanding.push_back((seq, now));
            // Never remember more pings than the dead-link window can hold.
            while self.outstanding.len() > MISSED_HEARTBEATS_BEFORE_DEAD as usize + 1 {
                self.outstanding.pop_front();
            }
            self.transmit.push_back(Message::Ping { seq });
            self.next_ping_at = now + self.heartbeat;
        }
    }

    pub fn poll_transmit(&mut self) -> Option<Message> {
        self.transmit.pop_front()
    }

    pub fn poll_event(&mut self) -> Option<SessionEvent> {
        self.events.pop_front()
    }

    /// When the driver must call [`EdgeSession::handle_timeout`] next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.phase == Phase::Closed {
            return None;
        }
        let dead_at = self.last_heard + self.heartbeat * MISSED_HEARTBEATS_BEFORE_DEAD;
        Some(match self.phase {
            Phase::Established => dead_at.min(self.next_ping_at),
            _ => dead_at,
        })
    }

    fn close(&mut self, event: SessionEvent) {
        self.phase = Phase::Closed;
        self.events.push_back(event);
    }
}

/// The hub's side of one edge's control stream.
#[derive(Debug)]
pub struct HubSession {
    phase: Phase,
    heartbeat: Duration,
    last_heard: Instant,
    transmit: VecDeque<Message>,
    events: VecDeque<SessionEvent>,
}

impl HubSession {
    pub fn new(now: Instant, heartbeat: Duration) -> Self {
        Self {
            phase: Phase::Handshaking,
            heartbeat,
            last_heard: now,
            transmit: VecDeque::new(),
            events: VecDeque::new(),
        }
    }

    pub fn handle_message(&mut self, message: Message, now: Instant) {
        if self.phase == Phase::Closed {
            return;
        }
        self.last_heard = now;
        match (self.phase, message) {
            (Phase::Handshaking, Message::Hello { versions, .. }) => match negotiate(&versions) {
                Some(version) => {
                    self.phase = Phase::Established;
                    let heartbeat_ms =
                        u32::try_from(self.heartbeat.as_millis()).unwrap_or(u32::MAX);
                    self.transmit.push_back(Message::Welcome {
                        version,
                        heartbeat_ms,
                    });
                    self.events.push_back(SessionEvent::Established { version });
                }
                None => {
                    let reason = format!(
                        "no common protocol version: edge speaks {versions:?}, hub speaks {SUPPORTED_VERSIONS:?}"
                    );
                    self.transmit.push_back(Message::Refused {
                        reason: reason.clone(),
                    });
                    self.close(SessionEvent::Refused { reason });
                }
            },
            (Phase::Established, Message::Ping { seq }) => {
                self.transmit.push_back(Message::Pong { seq });
            }
            (Phase::Established, Message::Capabilities { names }) => {
                self.transmit.push_back(Message::Capabilities {
                    names: Capabilities::ours().names(),
                });
                self.events
                    .push_back(SessionEvent::PeerCapabilities(Capabilities::from_peer(
                        &names,
                    )));
            }
            (_, other) => {
                let detail = format!("unexpected {} on the control stream", other.kind());
                self.transmit.push_back(Message::Error {
                    code: crate::ErrorCode::Unexpected,
                    detail: detail.clone(),
                });
                self.close(SessionEvent::ProtocolViolation { detail });
            }
        }
    }

    pub fn handle_timeout(&mut self, now: Instant) {
        if self.phase != Phase::Closed
            && now.saturating_duration_since(self.last_heard)
                >= self.heartbeat * MISSED_HEARTBEATS_BEFORE_DEAD
        {
            self.close(SessionEvent::TimedOut);
        }
    }

    pub fn poll_transmit(&mut self) -> Option<Message> {
        self.transmit.pop_front()
    }

    pub fn poll_event(&mut self) -> Option<SessionEvent> {
        self.events.pop_front()
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        (self.phase != Phase::Closed)
            .then(|| self.last_heard + self.heartbeat * MISSED_HEARTBEATS_BEFORE_DEAD)
    }

    fn close(&mut self, event: SessionEvent) {
        self.phase = Phase::Closed;
        self.events.push_back(event);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs both machines against each other on a virtual clock with a fixed one-way delay,
    /// dropping the edge's messages for which `drop_edge` says so.
    struct Pair {
        now: Instant,
        edge: EdgeSession,
        hub: HubSession,
        edge_events: Vec<SessionEvent>,
        hub_events: Vec<SessionEvent>,
    }

    impl Pair {
        fn new() -> Self {
            let now = Instant::now();
            Self {
                now,
                edge: EdgeSession::new(now, "test", Duration::from_secs(10)),
                hub: HubSession::new(now, Duration::from_secs(1)),
                edge_events: vec![],
                hub_events: vec![],
            }
        }

        /// Advances the clock by `step` repeatedly for `total`, delivering messages instantly
        /// unless `link_up` is false.
        fn run(&mut self, total: Duration, step: Duration, link_up: bool) {
            let end = self.now + total;
            while self.now < end {
                self.now += step;
                self.edge.handle_timeout(self.now);
                self.hub.handle_timeout(self.now);
                while let Some(message) = self.edge.poll_transmit() {
                    if link_up {
                        self.hub.handle_message(message, self.now);
                    }
                }
                while let Some(message) = self.hub.poll_transmit() {
                    if link_up {
                        self.edge.handle_message(message, self.now);
                    }
                }
                self.edge_events
                    .extend(std::iter::from_fn(|| self.edge.poll_event()));
                self.hub_events
                    .extend(std::iter::from_fn(|| self.hub.poll_event()));
            }
        }
    }

    #[test]
    fn handshake_and_heartbeats_keep_the_link_alive() {
        let mut pair = Pair::new();
        pair.run(Duration::from_secs(30), Duration::from_millis(100), true);
        assert_eq!(
            pair.edge_events[..2],
            [
                SessionEvent::Established { version: 1 },
                SessionEvent::PeerCapabilities(Capabilities::ours())
            ]
        );
        assert_eq!(
            pair.hub_events,
            vec![
                SessionEvent::Established { version: 1 },
                SessionEvent::PeerCapabilities(Capabilities::ours())
            ]
        );
        let round_trips = pair
            .edge_events
            .iter()
            .filter(|e| matches!(e, SessionEvent::RoundTrip(_)))
            .count();
        assert!(round_trips >= 25, "{round_trips} heartbeats in 30 s");
        assert!(pair.edge.is_established());
    }

    #[test]
    fn silence_is_detected_on_both_sides() {
        let mut pair = Pair::new();
        pair.run(Duration::from_secs(2), Duration::from_millis(100), true);
        pair.run(Duration::from_secs(4), Duration::from_millis(100), false);
        assert!(pair.edge_events.contains(&SessionEvent::TimedOut));
        assert!(pair.hub_events.contains(&SessionEvent::TimedOut));
        assert_eq!(pair.edge.poll_timeout(), None);
    }

    #[test]
    fn edge_gives_up_when_no_welcome_comes() {
        let now = Instant::now();
        let mut edge = EdgeSession::new(now, "test", Duration::from_secs(3));
        assert!(matches!(edge.poll_transmit(), Some(Message::Hello { .. })));
        edge.handle_timeout(now + Duration::from_secs(2));
        assert_eq!(edge.poll_event(), None);
        edge.handle_timeout(now + Duration::from_secs(3));
        assert_eq!(edge.poll_event(), Some(SessionEvent::TimedOut));
    }

    #[test]
    fn hub_refuses_a_version_it_does_not_speak() {
        let now = Instant::now();
        let mut hub = HubSession::new(now, Duration::from_secs(1));
        hub.handle_message(
            Message::Hello {
                versions: vec![99],
                software: "future".into(),
            },
            now,
        );
        assert!(matches!(hub.poll_transmit(), Some(Message::Refused { .. })));
        assert!(matches!(
            hub.poll_event(),
            Some(SessionEvent::Refused { .. })
        ));
    }

    /// A hub of the first release knows no `Capabilities`: its transport answers the frame with
    /// an `UnknownMessage` error (rule 3), and the link must stay up with no capabilities.
    #[test]
    fn an_edge_keeps_its_link_to_a_hub_that_knows_no_capabilities() {
        let now = Instant::now();
        let mut edge = EdgeSession::new(now, "test", Duration::from_secs(3));
        assert!(matches!(edge.poll_transmit(), Some(Message::Hello { .. })));
        assert!(matches!(
            edge.poll_transmit(),
            Some(Message::Capabilities { .. })
        ));
        edge.handle_message(
            Message::Error {
                code: ErrorCode::UnknownMessage,
                detail: "variant tag 15".into(),
            },
            now,
        );
        edge.handle_message(
            Message::Welcome {
                version: 1,
                heartbeat_ms: 1000,
            },
            now,
        );
        assert_eq!(
            edge.poll_event(),
            Some(SessionEvent::Established { version: 1 })
        );
        assert_eq!(edge.poll_event(), None);
        assert!(edge.is_established());
        // Any other error from the hub still ends the session.
        edge.handle_message(
            Message::Error {
                code: ErrorCode::Malformed,
                detail: "x".into(),
            },
            now,
        );
        assert!(matches!(
            edge.poll_event(),
            Some(SessionEvent::ProtocolViolation { .. })
        ));
    }

    #[test]
    fn ping_before_hello_is_a_violation() {
        let now = Instant::now();
        let mut hub = HubSession::new(now, Duration::from_secs(1));
        hub.handle_message(Message::Ping { seq: 0 }, now);
        assert!(matches!(hub.poll_transmit(), Some(Message::Error { .. })));
        assert!(matches!(
            hub.poll_event(),
            Some(SessionEvent::ProtocolViolation { .. })
        ));
    }
}
