//! DIMSE command sets (PS3.7): reading a request's command and writing a response's. Commands
//! always travel in Implicit VR Little Endian, whatever the presentation context's transfer
//! syntax (that one is for the data sets).

use dicom_core::{dicom_value, DataElement, VR};
use dicom_dictionary_std::tags;
use dicom_object::InMemDicomObject;
use dicom_transfer_syntax_registry::entries::IMPLICIT_VR_LITTLE_ENDIAN;

use crate::instance::{text, unsigned};
use crate::{DicomError, Result};

pub const C_STORE_RQ: u16 = 0x0001;
pub const C_STORE_RSP: u16 = 0x8001;
pub const C_FIND_RQ: u16 = 0x0020;
pub const C_FIND_RSP: u16 = 0x8020;
pub const C_ECHO_RQ: u16 = 0x0030;
pub const C_ECHO_RSP: u16 = 0x8030;
pub const C_CANCEL_RQ: u16 = 0x0FFF;
/// Command Data Set Type: no data set follows.
pub const NO_DATA_SET: u16 = 0x0101;

/// Statuses this node answers with.
pub mod status {
    pub const SUCCESS: u16 = 0x0000;
    pub const PENDING: u16 = 0xFF00;
    /// Pending, and some optional keys of the query were not supported.
    pub const PENDING_UNSUPPORTED_KEYS: u16 = 0xFF01;
    pub const CANCELLED: u16 = 0xFE00;
    pub const SOP_CLASS_NOT_SUPPORTED: u16 = 0x0122;
    /// Refused: not authorized (PS3.7 C.5.1).
    pub const NOT_AUTHORIZED: u16 = 0x0124;
    pub const UNRECOGNIZED_OPERATION: u16 = 0x0211;
    pub const OUT_OF_RESOURCES: u16 = 0xA700;
    pub const DATA_SET_DOES_NOT_MATCH: u16 = 0xA900;
    pub const CANNOT_UNDERSTAND: u16 = 0xC000;
}

/// A request's command set, as far as this node needs it.
#[derive(Debug, Clone, PartialEq)]
pub struct Command {
    pub field: u16,
    pub message_id: u16,
    pub affected_sop_class_uid: String,
    pub affected_sop_instance_uid: String,
    /// Whether a data set follows (C-STORE's object, C-FIND's identifier).
    pub has_data_set: bool,
    /// For C-CANCEL: the request it cancels.
    pub message_id_being_responded_to: Option<u16>,
}

impl Command {
    pub fn parse(bytes: &[u8]) -> Result<Command> {
        let ts = IMPLICIT_VR_LITTLE_ENDIAN.erased();
        let object = InMemDicomObject::read_dataset_with_ts(bytes, &ts).map_err(|error| {
            DicomError::Network(format!("a command set that cannot be read: {error}"))
        })?;
        let field = unsigned::<u16>(&object, tags::COMMAND_FIELD)
            .ok_or_else(|| DicomError::Network("a command without its Command Field".into()))?;
        Ok(Command {
            field,
            message_id: unsigned::<u16>(&object, tags::MESSAGE_ID).unwrap_or(0),
            affected_sop_class_uid: text(&object, tags::AFFECTED_SOP_CLASS_UID),
            affected_sop_instance_uid: text(&object, tags::AFFECTED_SOP_INSTANCE_UID),
            has_data_set: unsigned::<u16>(&object, tags::COMMAND_DATA_SET_TYPE)
                .is_some_and(|t| t != NO_DATA_SET),
            message_id_being_responded_to: unsigned::<u16>(
                &object,
                tags::MESSAGE_ID_BEING_RESPONDED_TO,
            ),
        })
    }
}

/// A response to `request`: its command field, status and, for failures, a comment (at most
/// 64 characters, as Error Comment's LO allows).
#[derive(Debug, Clone)]
pub struct Response<'a> {
    pub field: u16,
    pub request: &'a Command,
    pub status: u16,
    pub has_data_set: bool,
    pub comment: Option<String>,
}

impl Response<'_> {
    pub fn encode(&self) -> Result<Vec<u8>> {
        let mut elements = vec![DataElement::new(
            tags::AFFECTED_SOP_CLASS_UID,
            VR::UI,
            dicom_value!(Str, self.request.affected_sop_class_uid.as_str()),
        )];
        elements.push(DataElement::new(
            tags::COMMAND_FIELD,
            VR::US,
            dicom_value!(U16, [self.field]),
        ));
        elements.push(DataElement::new(
            tags::MESSAGE_ID_BEING_RESPONDED_TO,
            VR::US,
            dicom_value!(U16, [self.request.message_id]),
        ));
        let data_set_type = if self.has_data_set {
            0x0000
        } else {
            NO_DATA_SET
        };
        elements.push(DataElement::new(
            tags::COMMAND_DATA_SET_TYPE,
            VR::US,
            dicom_value!(U16, [data_set_type]),
        ));
        elements.push(DataElement::new(
            tags::STATUS,
            VR::US,
            dicom_value!(U16, [self.status]),
        ));
        if !self.request.affected_sop_instance_uid.is_empty() {
            elements.push(DataElement::new(
                tags::AFFECTED_SOP_INSTANCE_UID,
                VR::UI,
                dicom_value!(Str, self.request.affected_sop_instance_uid.as_str()),
            ));
        }
        if let Some(comment) = &self.comment {
            let comment: String = comment.chars().filter(char::is_ascii).take(64).collect();
            elements.push(DataElement::new(
                tags::ERROR_COMMENT,
                VR::LO,
                dicom_value!(Str, comment.as_str()),
            ));
        }
        let object = InMemDicomObject::command_from_element_iter(elements);
        let mut bytes = Vec::new();
        object
            .write_dataset_with_ts(&mut bytes, &IMPLICIT_VR_LITTLE_ENDIAN.erased())
            .map_err(|error| DicomError::Network(format!("writing a response: {error}")))?;
        Ok(bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_response_reads_back_as_the_command_it_answers() {
        let request = Command {
            field: C_STORE_RQ,
            message_id: 7,
            affected_sop_class_uid: "1.2.840.10008.5.1.4.1.1.2".into(),
            affected_sop_instance_uid: "1.2.3.4".into(),
            has_data_set: true,
            message_id_being_responded_to: None,
        };
        let bytes = Response {
            field: C_STORE_RSP,
            request: &request,
            status: status::CANNOT_UNDERSTAND,
            has_data_set: false,
            comment: Some("not a DICOM object: truncated".into()),
        }
        .encode()
        .unwrap();
        let read = Command::parse(&bytes).unwrap();
        assert_eq!(read.field, C_STORE_RSP);
        assert_eq!(read.message_id_being_responded_to, Some(7));
        assert_eq!(read.affected_sop_instance_uid, "1.2.3.4");
        assert!(!read.has_data_set);
    }
}
