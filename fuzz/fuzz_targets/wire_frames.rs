//! The wire's frame decoder and message parser on bytes as a peer could send them, cut into
//! reads of arbitrary sizes: no panic, no frame over the limit, and every message that parses
//! encodes back to itself. Offers are also checked as a receiver checks them.
#![no_main]

use grassroots_wire::frame::{encode, FrameDecoder, MAX_FRAME_LEN};
use grassroots_wire::transfer::Receiver;
use grassroots_wire::Message;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&read_size, stream)) = data.split_first() else {
        return;
    };
    let read_size = usize::from(read_size).max(1);
    let mut decoder = FrameDecoder::new();
    for read in stream.chunks(read_size) {
        decoder.push(read);
        loop {
            match decoder.next_frame() {
                Ok(Some(body)) => {
                    assert!(body.len() <= MAX_FRAME_LEN);
                    check_message(&body);
                }
                Ok(None) => break,
                // A peer that sends an oversized frame loses its stream; so do we.
                Err(_) => return,
            }
        }
    }
    let _ = decoder.finish();
    // The whole input as one message body, too.
    check_message(stream);
});

fn check_message(body: &[u8]) {
    let Ok(message) = Message::from_bytes(body) else {
        return;
    };
    let _ = message.kind();
    if let Ok(frame) = encode(&message) {
        let mut decoder = FrameDecoder::new();
        decoder.push(&frame);
        let again = decoder
            .next_frame()
            .expect("own frame")
            .expect("whole frame");
        assert_eq!(Message::from_bytes(&again).expect("own message"), message);
    }
    if let Message::TransferOffer(offer) = &message {
        if offer.validate().is_ok() {
            let _ = offer.chunk_count();
            if let Ok(mut receiver) = Receiver::new(offer.clone(), 0) {
                let _ = receiver.handle_chunk(offer.id, 0, &[]);
            }
        }
    }
}
