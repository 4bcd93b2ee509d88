//! A walk over a DICOM file's element headers, up to Pixel Data, that refuses any element
//! claiming more bytes than the file holds — before dicom-rs parses it.
//!
//! Why: dicom-parser reserves and zero-fills a value's declared length before reading it, so a
//! damaged or hostile file of a few kilobytes that declares a 1 GiB element costs the edge a
//! gigabyte of memory for a moment (found by the `dicom_wsi` fuzz target). Lengths are the only
//! thing checked here; everything else is left to dicom-rs.
//!
//! Fragments of encapsulated pixel data (an icon's) are skipped whole: they hold compressed bytes.
//! Sequences and items are stepped into, not over, so their contents are checked too, and the
//! walk ends at the top-level Pixel Data (an icon's, inside a sequence, does not end it). In the
//! implicit VR syntax a sequence of defined length cannot be told from other values without the
//! dictionary: it is skipped whole after checking its own length. The walk stops, accepting the
//! rest, at an explicit-VR UN of undefined length (its contents are implicit VR, PS3.5 6.2.2) and
//! does not walk deflated or big-endian data sets (whole-slide images are none of these).

use std::fs::File;
use std::io::{BufReader, Read};
use std::path::Path;

const PIXEL_DATA: (u16, u16) = (0x7fe0, 0x0010);
const TRANSFER_SYNTAX: (u16, u16) = (0x0002, 0x0010);
const IMPLICIT_LITTLE: &str = "1.2.840.10008.1.2";
const EXPLICIT_LITTLE: &str = "1.2.840.10008.1.2.1";
const UNDEFINED: u32 = u32::MAX;
/// Value representations whose length field is 2 bytes in explicit VR (PS3.5 7.1.2). Any other,
/// an unknown one included, has 2 reserved bytes and a 4-byte length: dicom-rs reads an unknown
/// VR as UN, and this walk must read the length it will allocate.
const SHORT_VRS: [&[u8; 2]; 21] = [
    b"AE", b"AS", b"AT", b"CS", b"DA", b"DS", b"DT", b"FD", b"FL", b"IS", b"LO", b"LT", b"PN",
    b"SH", b"SL", b"SS", b"ST", b"TM", b"UI", b"UL", b"US",
];

/// Checks every element header before Pixel Data against the file's size.
pub(crate) fn check_declared_lengths(path: &Path) -> Result<(), String> {
    let file = File::open(path).map_err(|e| e.to_string())?;
    let size = file.metadata().map_err(|e| e.to_string())?.len();
    let mut walk = Walk {
        reader: BufReader::new(file),
        position: 0,
        size,
    };
    walk.skip(132)?;
    // The file meta group is always explicit VR little endian.
    let mut syntax = EXPLICIT_LITTLE.to_string();
    let mut explicit = true;
    let mut in_meta = true;
    // Ends of the defined-length sequences and items we are inside, and how many of undefined
    // length: together, the nesting depth.
    let mut defined_ends: Vec<u64> = Vec::new();
    let mut undefined_depth: usize = 0;
    // Inside encapsulated pixel data (an icon's): its items are fragments of compressed bytes,
    // skipped whole, until the sequence delimiter.
    let mut in_fragments = false;
    while walk.remaining() >= 8 {
        defined_ends.retain(|end| *end > walk.position);
        let (group, element) = (walk.u16()?, walk.u16()?);
        if in_meta && group != 0x0002 {
            in_meta = false;
            explicit = match syntax.trim_end_matches(['\0', ' ']) {
                IMPLICIT_LITTLE => false,
                EXPLICIT_LITTLE => true,
                // JPEG, JPEG 2000, RLE...: explicit VR little endian data sets.
                other
                    if other.starts_with("1.2.840.10008.1.2.4.")
                        || other == "1.2.840.10008.1.2.5" =>
                {
                    true
                }
                _ => return Ok(()),
            };
        }
        if (group, element) == PIXEL_DATA && defined_ends.is_empty() && undefined_depth == 0 {
            return Ok(());
        }
        if group == 0xfffe && matches!(element, 0xe000 | 0xe00d | 0xe0dd) {
            // Item and delimiters: a 4-byte length, then (for an item) its elements. Any other
            // (FFFE,xxxx) is read as an ordinary element, as dicom-rs reads it.
            let length = walk.u32()?;
            if in_fragments {
                match element {
                    0xe000 if length != UNDEFINED => {
                        walk.fits(length, group, element)?;
                        walk.skip(u64::from(length))?;
                    }
                    0xe0dd => in_fragments = false,
                    _ => {}
                }
                continue;
            }
            match (element, length) {
                (0xe000, UNDEFINED) => undefined_depth += 1,
                (0xe000, length) => {
                    walk.fits(length, group, element)?;
                    defined_ends.push(walk.position + u64::from(length));
                }
                // Item and sequence delimiters close one undefined-length level each.
                _ => undefined_depth = undefined_depth.saturating_sub(1),
            }
            continue;
        }
        let (vr, length) = if explicit {
            let mut vr = [0u8; 2];
            walk.read(&mut vr)?;
            if SHORT_VRS.contains(&&vr) {
                (Some(vr), u32::from(walk.u16()?))
            } else {
                walk.skip(2)?;
                (Some(vr), walk.u32()?)
            }
        } else {
            (None, walk.u32()?)
        };
        if length == UNDEFINED {
            if vr == Some(*b"UN") {
                return Ok(());
            }
            if vr == Some(*b"OB") || vr == Some(*b"OW") || (group, element) == PIXEL_DATA {
                in_fragments = true;
                continue;
            }
            undefined_depth += 1;
            continue; // a sequence (or encapsulated value) whose items follow
        }
        walk.fits(length, group, element)?;
        // dicom-rs reads binary numbers a whole number at a time, past a length that ends
        // inside one, and loses its place (a fourth fuzzer's find); such a length is invalid.
        if let Some(unit) = vr.and_then(|vr| binary_unit(&vr)) {
            if length % unit != 0 {
                return Err(format!(
                    "element ({group:04X},{element:04X}) declares {length} bytes, not a whole number of its {unit}-byte values"
                ));
            }
        }
        if vr == Some(*b"SQ") {
            defined_ends.push(walk.position + u64::from(length));
            continue; // step into its items
        }
        if in_meta && (group, element) == TRANSFER_SYNTAX && length <= 64 {
            let mut value = vec![0u8; length as usize];
            walk.read(&mut value)?;
            syntax = String::from_utf8_lossy(&value).into_owned();
        } else {
            walk.skip(u64::from(length))?;
        }
    }
    Ok(())
}

/// The size of one value of a binary VR.
fn binary_unit(vr: &[u8; 2]) -> Option<u32> {
    match vr {
        b"US" | b"SS" | b"OW" => Some(2),
        b"UL" | b"SL" | b"FL" | b"AT" | b"OF" | b"OL" => Some(4),
        b"FD" | b"OD" | b"SV" | b"UV" | b"OV" => Some(8),
        _ => None,
    }
}

struct Walk {
    reader: BufReader<File>,
    position: u64,
    size: u64,
}

impl Walk {
    fn remaining(&self) -> u64 {
        self.size.saturating_sub(self.position)
    }

    fn fits(&self, length: u32, group: u16, element: u16) -> Result<(), String> {
        if u64::from(length) > self.remaining() {
            return Err(format!(
                "element ({group:04X},{element:04X}) declares {length} bytes but only {} follow: the file is damaged or cut short",
                self.remaining()
            ));
        }
        Ok(())
    }

    fn read(&mut self, buf: &mut [u8]) -> Result<(), String> {
        self.reader
            .read_exact(buf)
            .map_err(|e| format!("cut short at byte {}: {e}", self.position))?;
        self.position += buf.len() as u64;
        Ok(())
    }

    fn skip(&mut self, bytes: u64) -> Result<(), String> {
        let offset = i64::try_from(bytes).map_err(|_| "a value too long to skip".to_string())?;
        // seek_relative keeps the buffer when the target is inside it.
        self.reader
            .seek_relative(offset)
            .map_err(|e| e.to_string())?;
        self.position += bytes;
        Ok(())
    }

    fn u16(&mut self) -> Result<u16, String> {
        let mut bytes = [0u8; 2];
        self.read(&mut bytes)?;
        Ok(u16::from_le_bytes(bytes))
    }

    fn u32(&mut self) -> Result<u32, String> {
        let mut bytes = [0u8; 4];
        self.read(&mut bytes)?;
        Ok(u32::from_le_bytes(bytes))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A Part 10 file: preamble, meta group with the transfer syntax, then `dataset`.
    fn file(syntax: &str, dataset: &[u8]) -> tempfile::NamedTempFile {
        let mut bytes = vec![0u8; 128];
        bytes.extend_from_slice(b"DICM");
        let mut value = syntax.as_bytes().to_vec();
        if value.len() % 2 == 1 {
            value.push(0);
        }
        bytes.extend_from_slice(&[0x02, 0x00, 0x10, 0x00, b'U', b'I']);
        bytes.extend_from_slice(&(value.len() as u16).to_le_bytes());
        bytes.extend_from_slice(&value);
        bytes.extend_from_slice(dataset);
        let file = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(file.path(), bytes).unwrap();
        file
    }

    #[test]
    fn a_length_past_the_end_is_refused_and_honest_lengths_pass() {
        // (0008,0060) CS "SM", explicit.
        let honest = [0x08, 0x00, 0x60, 0x00, b'C', b'S', 2, 0, b'S', b'M'];
        assert_eq!(
            check_declared_lengths(file(EXPLICIT_LITTLE, &honest).path()),
            Ok(())
        );
        // (0008,0016) UN declaring 1 GiB.
        let mut lying = vec![0x08, 0x00, 0x16, 0x00, b'U', b'N', 0, 0];
        lying.extend_from_slice(&(1u32 << 30).to_le_bytes());
        let error = check_declared_lengths(file(EXPLICIT_LITTLE, &lying).path()).unwrap_err();
        assert!(
            error.contains("(0008,0016) declares 1073741824 bytes"),
            "{error}"
        );
        // The same inside a sequence's item, implicit VR.
        let mut nested = vec![0x08, 0x00, 0x15, 0x11, 0xff, 0xff, 0xff, 0xff];
        nested.extend_from_slice(&[0xfe, 0xff, 0x00, 0xe0, 0xff, 0xff, 0xff, 0xff]);
        nested.extend_from_slice(&[0x08, 0x00, 0x50, 0x11]);
        nested.extend_from_slice(&(1u32 << 30).to_le_bytes());
        let error = check_declared_lengths(file(IMPLICIT_LITTLE, &nested).path()).unwrap_err();
        assert!(error.contains("(0008,1150)"), "{error}");
        // Pixel Data inside a sequence (an icon) does not end the walk.
        let mut icon = vec![
            0x88, 0x00, 0x00, 0x02, b'S', b'Q', 0, 0, 0xff, 0xff, 0xff, 0xff,
        ];
        icon.extend_from_slice(&[0xfe, 0xff, 0x00, 0xe0, 0xff, 0xff, 0xff, 0xff]);
        icon.extend_from_slice(&[0xe0, 0x7f, 0x10, 0x00, b'O', b'B', 0, 0, 2, 0, 0, 0, 0, 0]);
        icon.extend_from_slice(&[0xfe, 0xff, 0x0d, 0xe0, 0, 0, 0, 0]);
        icon.extend_from_slice(&[0xfe, 0xff, 0xdd, 0xe0, 0, 0, 0, 0]);
        icon.extend_from_slice(&[0x09, 0x00, 0x10, 0x00, b'U', b'T', 0, 0]);
        icon.extend_from_slice(&(1u32 << 30).to_le_bytes());
        let error = check_declared_lengths(file(EXPLICIT_LITTLE, &icon).path()).unwrap_err();
        assert!(error.contains("(0009,0010)"), "{error}");
        // (FFFE,DF0D) is no item: its "length" is a VR, read as UN (a third fuzzer's find).
        let mut odd = vec![0xfe, 0xff, 0x0d, 0xdf, 0xfe, 0, 0, 0];
        odd.extend_from_slice(&0xe000_fffe_u32.to_le_bytes());
        let error = check_declared_lengths(file(EXPLICIT_LITTLE, &odd).path()).unwrap_err();
        assert!(error.contains("(FFFE,DF0D)"), "{error}");
        // An icon's encapsulated pixel data: its fragments are skipped, whatever they hold.
        let mut encapsulated = vec![
            0x88, 0x00, 0x00, 0x02, b'S', b'Q', 0, 0, 0xff, 0xff, 0xff, 0xff,
        ];
        encapsulated.extend_from_slice(&[0xfe, 0xff, 0x00, 0xe0, 0xff, 0xff, 0xff, 0xff]);
        encapsulated.extend_from_slice(&[0xe0, 0x7f, 0x10, 0x00, b'O', b'B', 0, 0]);
        encapsulated.extend_from_slice(&[0xff, 0xff, 0xff, 0xff]);
        encapsulated.extend_from_slice(&[0xfe, 0xff, 0x00, 0xe0, 0, 0, 0, 0]); // offset table
        encapsulated.extend_from_slice(&[0xfe, 0xff, 0x00, 0xe0, 12, 0, 0, 0]);
        encapsulated.extend_from_slice(&[
            0x08, 0x00, 0x16, 0x00, b'U', b'N', 0, 0, 0xff, 0xff, 0xff, 0x3f,
        ]);
        encapsulated.extend_from_slice(&[0xfe, 0xff, 0xdd, 0xe0, 0, 0, 0, 0]);
        encapsulated.extend_from_slice(&[0xfe, 0xff, 0x0d, 0xe0, 0, 0, 0, 0]);
        encapsulated.extend_from_slice(&[0xfe, 0xff, 0xdd, 0xe0, 0, 0, 0, 0]);
        encapsulated.extend_from_slice(&[0x08, 0x00, 0x60, 0x00, b'C', b'S', 2, 0, b'S', b'M']);
        assert_eq!(
            check_declared_lengths(file(EXPLICIT_LITTLE, &encapsulated).path()),
            Ok(())
        );
        // A UL of two bytes is refused.
        let short = [0x28, 0x00, 0x03, 0x01, b'U', b'L', 2, 0, 0, 0];
        let error = check_declared_lengths(file(EXPLICIT_LITTLE, &short).path()).unwrap_err();
        assert!(error.contains("(0028,0103) declares 2 bytes"), "{error}");
        // An unknown VR is read as UN (4-byte length), as dicom-rs reads it (a fuzzer's find).
        let mut unknown = vec![0x08, 0x00, 0x12, 0x00, b'U', 0, 0, 0];
        unknown.extend_from_slice(&0xe0dd_fffe_u32.to_le_bytes());
        let error = check_declared_lengths(file(EXPLICIT_LITTLE, &unknown).path()).unwrap_err();
        assert!(error.contains("(0008,0012)"), "{error}");
    }
}
