//! Hostile frames against a real hub process: random bytes, truncated frames, bodies that are
//! not messages, oversized length headers — each on its own stream of a live, authenticated
//! connection. The property: every such stream gets at most an error answer, the hub keeps
//! answering heartbeats on the same connection, and another edge stays online throughout.

mod common;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use grassroots_transport::framed::{self, priority};
use grassroots_transport::EdgeEndpoint;
use grassroots_wire::frame::encode;
use grassroots_wire::{FrameDecoder, Message};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};

#[derive(Debug, Clone)]
enum Hostile {
    RandomBytes(Vec<u8>),
    TruncatedFrame { seq: u64, cut: usize },
    GarbageBody(Vec<u8>),
    OversizedHeader(u32),
}

fn hostile() -> impl Strategy<Value = Hostile> {
    prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..2048).prop_map(Hostile::RandomBytes),
        (any::<u64>(), 0usize..16).prop_map(|(seq, cut)| Hostile::TruncatedFrame { seq, cut }),
        proptest::collection::vec(any::<u8>(), 1..512).prop_map(Hostile::GarbageBody),
        (2_097_153u32..=u32::MAX).prop_map(Hostile::OversizedHeader),
    ]
}

fn bytes_of(hostile: &Hostile) -> Vec<u8> {
    match hostile {
        Hostile::RandomBytes(bytes) => bytes.clone(),
        Hostile::TruncatedFrame { seq, cut } => {
            let frame = encode(&Message::Ping { seq: *seq }).unwrap();
            frame[..(*cut).min(frame.len() - 1)].to_vec()
        }
        Hostile::GarbageBody(body) => {
            let mut frame = (body.len() as u32).to_be_bytes().to_vec();
            frame.extend_from_slice(body);
            frame
        }
        Hostile::OversizedHeader(len) => len.to_be_bytes().to_vec(),
    }
}

#[test]
fn random_and_truncated_frames_never_crash_the_hub_or_drop_other_streams() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let net = Network::new(&["county-a", "county-b", "county-c"]);
    net.add_user("hub", "admin", "admin");
    let (token_file, token) = net.metrics_token();
    let hub = net.start_hub(&["--metrics-token-file", &token_file]);
    let _b = net.start_edge("county-b", &[]);
    let client = runtime.block_on(signed_in(&hub, "admin"));
    runtime.block_on(eventually(
        "county-b online",
        Duration::from_secs(20),
        || async { is_online(&client, &hub, "county-b").await },
    ));

    // Our own authenticated connection as county-a, with a live control session.
    let kit = grassroots_provisioning::Kit::load(&net.kit("county-a")).unwrap();
    let connection = runtime.block_on(async {
        let endpoint = EdgeEndpoint::with_hub_addr(&kit, &net.hub_addr).unwrap();
        endpoint.connect().await.unwrap().connection
    });
    let pongs = Arc::new(AtomicU64::new(0));
    {
        let connection = connection.clone();
        let pongs = pongs.clone();
        runtime.spawn(async move {
            let (mut send, mut recv) = framed::open(&connection, priority::CONTROL).await.unwrap();
            send.send(&Message::Hello {
                versions: vec![1],
                software: "hostile-test".into(),
            })
            .await
            .unwrap();
            assert!(matches!(
                recv.expect().await.unwrap(),
                Message::Welcome { .. }
            ));
            for seq in 0.. {
                send.send(&Message::Ping { seq }).await.unwrap();
                match recv.expect().await.unwrap() {
                    Message::Pong { seq: answered } if answered == seq => {
                        pongs.fetch_add(1, Ordering::SeqCst)
                    }
                    other => panic!("expected Pong {seq}, got {other:?}"),
                };
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        });
    }

    let mut runner = TestRunner::new(Config {
        cases: 48,
        failure_persistence: None,
        ..Config::default()
    });
    runner
        .run(&hostile(), |case| {
            let bytes = bytes_of(&case);
            let answer = runtime.block_on(async {
                let (mut send, mut recv) = connection
                    .open_bi()
                    .await
                    .expect("the connection is still up");
                let _ = send.write_all(&bytes).await;
                let _ = send.finish();
                tokio::time::timeout(Duration::from_secs(15), recv.read_to_end(1 << 20)).await
            });
            let answer =
                answer.map_err(|_| TestCaseError::fail(format!("no answer to {case:?}")))?;
            // The stream may be reset after the answer; what arrived must be an Error frame.
            if let Ok(bytes) = answer {
                let mut decoder = FrameDecoder::new();
                decoder.push(&bytes);
                while let Some(body) = decoder.next_frame().unwrap() {
                    let message = Message::from_bytes(&body).unwrap();
                    prop_assert!(
                        matches!(message, Message::Error { .. }),
                        "{case:?} got {message:?}"
                    );
                }
            }
            prop_assert!(
                connection.close_reason().is_none(),
                "connection closed after {case:?}"
            );
            Ok(())
        })
        .unwrap();

    let before = pongs.load(Ordering::SeqCst);
    std::thread::sleep(Duration::from_secs(1));
    assert!(
        pongs.load(Ordering::SeqCst) > before,
        "heartbeats still answered"
    );
    assert!(before > 0);
    assert!(
        runtime.block_on(is_online(&client, &hub, "county-b")),
        "the other edge stayed online"
    );
    assert!(
        runtime.block_on(is_online(&client, &hub, "county-a")),
        "and so did we"
    );
    let log = hub.log_text();
    assert!(log.contains("bad frame on a new stream"), "{log}");
    assert!(!log.contains("panicked"), "{log}");

    // On the control stream itself, a whole frame that is no known message is answered with an
    // error and the session goes on.
    let kit_c = grassroots_provisioning::Kit::load(&net.kit("county-c")).unwrap();
    runtime.block_on(async {
        let endpoint = EdgeEndpoint::with_hub_addr(&kit_c, &net.hub_addr).unwrap();
        let connection = endpoint.connect().await.unwrap().connection;
        let (mut raw, recv) = connection.open_bi().await.unwrap();
        let mut recv = grassroots_transport::FramedRecv::new(recv);
        raw.write_all(
            &encode(&Message::Hello {
                versions: vec![1],
                software: "t".into(),
            })
            .unwrap(),
        )
        .await
        .unwrap();
        assert!(matches!(
            recv.next().await.unwrap(),
            Some(Message::Welcome { .. })
        ));
        raw.write_all(&[0, 0, 0, 2, 250, 1]).await.unwrap();
        match recv.next().await.unwrap() {
            Some(Message::Error { code, .. }) => {
                assert_eq!(code, grassroots_wire::ErrorCode::UnknownMessage)
            }
            other => panic!("expected an error answer, got {other:?}"),
        }
        raw.write_all(&encode(&Message::Ping { seq: 7 }).unwrap())
            .await
            .unwrap();
        assert_eq!(recv.next().await.unwrap(), Some(Message::Pong { seq: 7 }));
    });
    let metrics = runtime.block_on(async { scrape(&hub, &token).await });
    let bad_frames: u64 = metrics
        .lines()
        .find(|line| line.starts_with("grassroots_hub_bad_frames_total"))
        .and_then(|line| line.split_whitespace().nth(1))
        .and_then(|value| value.parse().ok())
        .unwrap_or_else(|| panic!("{metrics}"));
    assert!(bad_frames >= 40, "{bad_frames} bad frames counted");
}
