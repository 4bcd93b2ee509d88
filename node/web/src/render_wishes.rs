//! The render socket's protocol, as both nodes speak it to the CT/MR viewer's scripts
//! (`src/viewer/render-socket.js`): the edge renders the wishes itself
//! (`edge/src/render_socket.rs`), the hub relays them to the referring edge
//! (`hub/src/study_consult.rs`).
//!
//! A wish is a text message `{"view","seq","kind","query"}`: the view it is for, a sequence
//! number, the kind of picture (`plane`, `volume`, `image`) and the query the rendered resource
//! takes. Only each view's latest wish not yet started is kept ([`Wishes`]), so a viewer that
//! asks faster than frames come skips the frames in between instead of queueing them. A frame
//! is a binary message: a 4-byte big-endian length, a JSON header `{"view","seq","query","ms"}`
//! of that length, then the JPEG; a wish that cannot be answered gets a text message
//! `{"view","seq","query","error"}`.

use axum::extract::ws::Message;
use serde::{Deserialize, Serialize};

/// What a viewer asks for.
#[derive(Debug, Clone, Deserialize)]
pub struct Wish {
    /// The view it is for (`axial`, `volume`, `image`...): each keeps only its latest wish.
    pub view: String,
    pub seq: u64,
    /// `plane`, `volume` or `image`: which ones a socket serves is its own to say.
    pub kind: String,
    /// The rendered resource's query.
    pub query: String,
}

/// What comes back with a frame or a refusal.
#[derive(Debug, Serialize)]
struct Answer<'a> {
    view: &'a str,
    seq: u64,
    query: &'a str,
    /// Milliseconds from the wish's start to its frame.
    #[serde(skip_serializing_if = "Option::is_none")]
    ms: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

/// Wishes kept per socket (one per view), at most: a viewer has a handful of views.
pub const MAX_VIEWS: usize = 8;
/// Largest wish accepted (the socket's message size limit).
pub const MAX_WISH_BYTES: usize = 4096;

/// A frame answering `wish`, made in `ms`.
pub fn frame_message(wish: &Wish, jpeg: &[u8], ms: f64) -> Message {
    let header = serde_json::to_vec(&Answer {
        view: &wish.view,
        seq: wish.seq,
        query: &wish.query,
        ms: Some((ms * 10.0).round() / 10.0),
        error: None,
    })
    .unwrap_or_default();
    let mut message = Vec::with_capacity(4 + header.len() + jpeg.len());
    message.extend_from_slice(&(header.len() as u32).to_be_bytes());
    message.extend_from_slice(&header);
    message.extend_from_slice(jpeg);
    Message::Binary(message.into())
}

/// The refusal of a wish (of `view` and `seq`; empty for one that did not parse).
pub fn refusal_message(view: &str, seq: u64, query: &str, error: String) -> Message {
    let answer = Answer {
        view,
        seq,
        query,
        ms: None,
        error: Some(error),
    };
    Message::Text(serde_json::to_string(&answer).unwrap_or_default().into())
}

/// The wishes of one socket not yet started, each view's latest only, oldest view first.
#[derive(Debug, Default)]
pub struct Wishes {
    pending: Vec<Wish>,
}

impl Wishes {
    /// Takes a wish's text: kept (replacing its view's older wish, whose frame would be out of
    /// date before it arrived), or the refusal to send back.
    pub fn offer(&mut self, text: &str, kinds: &[&str]) -> Result<(), Message> {
        let wish: Wish = serde_json::from_str(text).map_err(|error| {
            refusal_message(
                "",
                0,
                "",
                format!(
                    "a wish is JSON with view, seq, kind ({}) and query: {error}",
                    kinds.join(", ")
                ),
            )
        })?;
        if !kinds.contains(&wish.kind.as_str()) {
            return Err(refusal_message(
                &wish.view,
                wish.seq,
                &wish.query,
                format!("a wish's kind is one of {}", kinds.join(", ")),
            ));
        }
        if let Some(place) = self.pending.iter().position(|w| w.view == wish.view) {
            self.pending[place] = wish;
        } else if self.pending.len() < MAX_VIEWS {
            self.pending.push(wish);
        } else {
            return Err(refusal_message(
                &wish.view,
                wish.seq,
                &wish.query,
                format!("at most {MAX_VIEWS} views per viewer"),
            ));
        }
        Ok(())
    }

    /// The next wish to start.
    pub fn take_next(&mut self) -> Option<Wish> {
        (!self.pending.is_empty()).then(|| self.pending.remove(0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_view_keeps_its_latest_wish_and_bad_ones_are_refused() {
        let mut wishes = Wishes::default();
        let wish = |view: &str, seq: u64| {
            format!(r#"{{"view":"{view}","seq":{seq},"kind":"plane","query":"orientation=axial"}}"#)
        };
        wishes.offer(&wish("axial", 1), &["plane"]).unwrap();
        wishes.offer(&wish("coronal", 2), &["plane"]).unwrap();
        wishes.offer(&wish("axial", 3), &["plane"]).unwrap();
        assert_eq!(
            wishes.take_next().map(|w| (w.view, w.seq)),
            Some(("axial".into(), 3))
        );
        assert_eq!(wishes.take_next().map(|w| w.seq), Some(2));
        assert!(wishes.take_next().is_none());
        let refused = |m: Message| match m {
            Message::Text(text) => text.to_string(),
            other => panic!("{other:?}"),
        };
        let not_json = refused(wishes.offer("{", &["plane"]).unwrap_err());
        assert!(not_json.contains("a wish is JSON"), "{not_json}");
        let other_kind = refused(wishes.offer(&wish("x", 4), &["volume"]).unwrap_err());
        assert!(other_kind.contains("one of volume"), "{other_kind}");
        for view in 0..MAX_VIEWS {
            wishes
                .offer(&wish(&view.to_string(), 5), &["plane"])
                .unwrap();
        }
        let full = refused(wishes.offer(&wish("one more", 6), &["plane"]).unwrap_err());
        assert!(full.contains("at most 8 views"), "{full}");
    }
}
