//! Where each frame of a DICOM instance lies in its file, found without reading the pixel data.
//!
//! A whole-slide level can be gigabytes of frames in one Pixel Data element, so loading the
//! object (what `dicom_object::open_file` does) is out of the question. The data set is parsed
//! lazily up to Pixel Data — every value before it skipped, none kept — and then the encapsulated
//! items are walked header by header: eight bytes read per fragment, never the fragment itself.
//! Frames are then read with positioned reads on a shared file, from any thread.

use std::fs::File;
use std::io::{BufReader, Seek, SeekFrom};
use std::os::unix::fs::FileExt;
use std::path::Path;

use dicom_core::Tag;
use dicom_dictionary_std::tags;
use dicom_encoding::transfer_syntax::TransferSyntaxIndex;
use dicom_parser::dataset::lazy_read::LazyDataSetReader;
use dicom_parser::dataset::LazyDataToken;
use dicom_parser::StatefulDecode;
use dicom_transfer_syntax_registry::TransferSyntaxRegistry;

/// One frame's bytes: a run of (file offset, length) pieces, usually one.
#[derive(Debug, Clone)]
pub(crate) struct FrameLocation {
    pub pieces: Vec<(u64, u32)>,
}

const ITEM: Tag = Tag(0xFFFE, 0xE000);
const SEQUENCE_DELIMITER: Tag = Tag(0xFFFE, 0xE0DD);

/// Locates `frames` frames of `frame_bytes` each (native pixel data) or `frames` encapsulated
/// frames in the file at `path`, whose data set starts at `dataset_start`.
pub(crate) fn locate_frames(
    path: &Path,
    dataset_start: u64,
    transfer_syntax: &str,
    frames: u32,
    frame_bytes: u64,
) -> Result<Vec<FrameLocation>, String> {
    let ts = TransferSyntaxRegistry
        .get(transfer_syntax)
        .ok_or_else(|| format!("unknown transfer syntax {transfer_syntax}"))?;
    let file = File::open(path).map_err(|e| e.to_string())?;
    let file_len = file.metadata().map_err(|e| e.to_string())?.len();
    let mut source =
        BufReader::with_capacity(64 * 1024, file.try_clone().map_err(|e| e.to_string())?);
    source
        .seek(SeekFrom::Start(dataset_start))
        .map_err(|e| e.to_string())?;
    let mut reader = LazyDataSetReader::new_with_ts(source, ts).map_err(|e| e.to_string())?;
    let mut depth = 0usize;
    loop {
        let token = match reader.advance() {
            Some(token) => token.map_err(|e| format!("parsing the data set: {e}"))?,
            None => return Err("the file has no pixel data".into()),
        };
        match token {
            LazyDataToken::SequenceStart { .. } => depth += 1,
            LazyDataToken::SequenceEnd => depth = depth.saturating_sub(1),
            LazyDataToken::PixelSequenceStart if depth == 0 => break,
            LazyDataToken::LazyValue { header, decoder }
                if depth == 0 && header.tag == tags::PIXEL_DATA =>
            {
                // The decoder counts from the file's start (it began at the seek position).
                let start = decoder.position();
                let length = u64::from(header.len.0);
                if frame_bytes == 0 {
                    return Err(
                        "the transfer syntax is compressed but the pixel data is not encapsulated"
                            .into(),
                    );
                }
                if length < u64::from(frames) * frame_bytes || start + length > file_len {
                    return Err(format!(
                        "pixel data holds {length} bytes, {frames} frames need {}",
                        u64::from(frames) * frame_bytes
                    ));
                }
                return Ok((0..u64::from(frames))
                    .map(|i| FrameLocation {
                        pieces: vec![(start + i * frame_bytes, frame_bytes as u32)],
                    })
                    .collect());
            }
            other => other
                .skip()
                .map_err(|e| format!("parsing the data set: {e}"))?,
        }
    }
    let items_start = reader.into_decoder().position();
    walk_items(&file, items_start, file_len, frames)
}

/// Walks the items of an encapsulated Pixel Data sequence starting at `offset` (the Basic
/// Offset Table item) and groups its fragments into `frames` frames.
fn walk_items(
    file: &File,
    mut offset: u64,
    file_len: u64,
    frames: u32,
) -> Result<Vec<FrameLocation>, String> {
    let mut offset_table = Vec::new();
    let mut fragments: Vec<(u64, u32)> = Vec::new();
    let mut first = true;
    let mut fragments_start = 0u64;
    loop {
        let mut header = [0u8; 8];
        file.read_exact_at(&mut header, offset)
            .map_err(|_| "the pixel data is truncated".to_string())?;
        let tag = Tag(
            u16::from_le_bytes([header[0], header[1]]),
            u16::from_le_bytes([header[2], header[3]]),
        );
        let length = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
        if tag == SEQUENCE_DELIMITER {
            break;
        }
        if tag != ITEM || length == u32::MAX {
            return Err(format!(
                "unexpected {tag} in the pixel data at byte {offset}"
            ));
        }
        let value = offset + 8;
        if value + u64::from(length) > file_len {
            return Err("the pixel data is truncated".into());
        }
        if first {
            first = false;
            let mut table = vec![0u8; length as usize];
            file.read_exact_at(&mut table, value)
                .map_err(|e| e.to_string())?;
            offset_table = table
                .chunks_exact(4)
                .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect();
            fragments_start = value + u64::from(length);
        } else {
            fragments.push((value, length));
        }
        offset = value + u64::from(length);
    }
    group_fragments(&fragments, &offset_table, fragments_start, frames)
}

/// One fragment a frame, or — when there are more fragments — the Basic Offset Table's grouping.
fn group_fragments(
    fragments: &[(u64, u32)],
    offset_table: &[u32],
    first_item: u64,
    frames: u32,
) -> Result<Vec<FrameLocation>, String> {
    let frames = frames as usize;
    if fragments.len() == frames {
        return Ok(fragments
            .iter()
            .map(|piece| FrameLocation {
                pieces: vec![*piece],
            })
            .collect());
    }
    if frames == 1 && !fragments.is_empty() {
        return Ok(vec![FrameLocation {
            pieces: fragments.to_vec(),
        }]);
    }
    if offset_table.len() != frames {
        return Err(format!(
            "{} fragments for {frames} frames and no offset table to group them",
            fragments.len()
        ));
    }
    let mut grouped = vec![FrameLocation { pieces: Vec::new() }; frames];
    for &(value, length) in fragments {
        // The table counts from the first byte of the first fragment's item header.
        let relative = value - 8 - first_item;
        let frame = offset_table
            .iter()
            .rposition(|&start| u64::from(start) <= relative)
            .ok_or("the offset table does not cover every fragment")?;
        grouped[frame].pieces.push((value, length));
    }
    if grouped.iter().any(|frame| frame.pieces.is_empty()) {
        return Err("the offset table names a frame with no fragment".into());
    }
    Ok(grouped)
}

/// Reads one frame's bytes.
pub(crate) fn read_frame(file: &File, frame: &FrameLocation) -> std::io::Result<Vec<u8>> {
    let total: usize = frame.pieces.iter().map(|(_, len)| *len as usize).sum();
    let mut bytes = vec![0u8; total];
    let mut at = 0;
    for &(offset, length) in &frame.pieces {
        let length = length as usize;
        file.read_exact_at(&mut bytes[at..at + length], offset)?;
        at += length;
    }
    // Fragments are padded to even length; a JPEG decoder ignores what follows its end marker.
    Ok(bytes)
}
