//! The DICOM listener against real peers: dcmtk's echoscu, storescu and findscu (Debian), and a
//! DIMSE client of our own on dicom-ul for what dcmtk will not send (a corrupt data set, an
//! association broken half-way). Fixtures are pydicom's test files (scripts/fetch-fixtures).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use dicom_core::{dicom_value, DataElement, VR};
use dicom_dictionary_std::{tags, uids};
use dicom_object::{InMemDicomObject, OpenFileOptions};
use dicom_transfer_syntax_registry::entries::EXPLICIT_VR_LITTLE_ENDIAN;
use dicom_ul::pdu::{PDataValue, PDataValueType};
use dicom_ul::{ClientAssociationOptions, Pdu};
use grassroots_dicom::scp::AllowedPeer;
use grassroots_dicom::{DicomListener, Ingest, InstanceAttributes, ScpConfig};

const AE: &str = "COUNTYCT";

fn fixture(name: &str) -> PathBuf {
    let dir = std::env::var("GRASSROOTS_FIXTURES")
        .expect("set GRASSROOTS_FIXTURES to a directory filled by scripts/fetch-fixtures");
    let path = PathBuf::from(dir).join("pydicom").join(name);
    assert!(
        path.is_file(),
        "{} missing: run scripts/fetch-fixtures",
        path.display()
    );
    path
}

/// Images of every kind the listener stores, in the common transfer syntaxes, each with the
/// storescu option that proposes its transfer syntax (storescu proposes uncompressed ones
/// unless told, and would otherwise try to decompress).
const IMAGES: [(&str, &str); 11] = [
    ("CT_small.dcm", "-x="),
    ("MR_small.dcm", "-x="),
    ("MR_small_implicit.dcm", "-xi"),
    ("MR_small_RLE.dcm", "-xr"),
    ("MR_small_jpeg_ls_lossless.dcm", "-xt"),
    ("MR_small_jp2klossless.dcm", "-xv"),
    ("JPEG-lossy.dcm", "-xx"),
    ("SC_rgb_jpeg_dcmtk.dcm", "-xy"),
    ("SC_rgb_rle.dcm", "-xr"),
    ("image_dfl.dcm", "-xd"),
    ("examples_ybr_color.dcm", "-xy"),
];

struct Node {
    _dir: tempfile::TempDir,
    ingest: Ingest,
    listener: DicomListener,
}

async fn start(config: ScpConfig) -> Node {
    let dir = tempfile::tempdir().unwrap();
    let store = grassroots_store::Store::open(dir.path()).unwrap();
    let ingest = Ingest::open(&store, dir.path(), AE).unwrap();
    let listener = DicomListener::bind("127.0.0.1:0".parse().unwrap(), config, ingest.clone())
        .await
        .unwrap();
    Node {
        _dir: dir,
        ingest,
        listener,
    }
}

impl Node {
    fn port(&self) -> String {
        self.listener.local_addr().port().to_string()
    }

    /// Runs a dcmtk tool against the listener (off the runtime: it blocks): `tool options
    /// 127.0.0.1 port files`.
    async fn dcmtk(&self, tool: &str, options: Vec<String>) -> Output {
        self.dcmtk_files(tool, options, Vec::new()).await
    }

    async fn dcmtk_files(&self, tool: &str, options: Vec<String>, files: Vec<String>) -> Output {
        let mut args = options;
        args.extend(["127.0.0.1".to_string(), self.port()]);
        args.extend(files);
        let tool = tool.to_string();
        tokio::task::spawn_blocking(move || {
            Command::new(&tool)
                .args(&args)
                .output()
                .unwrap_or_else(|e| panic!("{tool} (Debian package dcmtk): {e}"))
        })
        .await
        .unwrap()
    }

    fn stored(&self) -> BTreeSet<(String, String, String)> {
        let index = &self.ingest.index;
        let mut all = BTreeSet::new();
        for study in index.studies().unwrap() {
            let study_uid = study.study.study_instance_uid;
            for series in index.series_of(&study_uid).unwrap() {
                let series_uid = series.series.series_instance_uid;
                for instance in index.instances_of(&study_uid, &series_uid).unwrap() {
                    all.insert((
                        study_uid.clone(),
                        series_uid.clone(),
                        instance.attributes.sop_instance_uid,
                    ));
                }
            }
        }
        all
    }
}

fn said(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

fn attributes(path: &Path) -> InstanceAttributes {
    let object = OpenFileOptions::new().open_file(path).unwrap();
    InstanceAttributes::from_object(&object, "fixture").unwrap()
}

/// The pixel data's bytes, native or the encapsulated fragments.
fn pixels(object: &InMemDicomObject) -> Vec<u8> {
    let value = object.element(tags::PIXEL_DATA).unwrap().value();
    match value.fragments() {
        Some(fragments) => fragments.concat(),
        None => value.to_bytes().unwrap().into_owned(),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn dcmtk_echoes_stores_every_kind_of_image_and_finds_them() {
    let mut config = ScpConfig::new(AE);
    config.find_from_anyone = true;
    let node = start(config).await;
    let args = |list: &[&str]| list.iter().map(|s| s.to_string()).collect::<Vec<_>>();

    let echo = node.dcmtk("echoscu", args(&["-aec", AE])).await;
    assert!(echo.status.success(), "C-ECHO: {}", said(&echo));
    let wrong = node.dcmtk("echoscu", args(&["-aec", "SOMEONEELSE"])).await;
    assert!(
        !wrong.status.success(),
        "called AE not ours: {}",
        said(&wrong)
    );

    for (name, proposal) in IMAGES {
        let stored = node
            .dcmtk_files(
                "storescu",
                args(&["-aec", AE, "-aet", "CT1", proposal]),
                vec![fixture(name).display().to_string()],
            )
            .await;
        assert!(stored.status.success(), "C-STORE {name}: {}", said(&stored));
    }

    let expected: BTreeSet<_> = IMAGES
        .iter()
        .map(|(n, _)| {
            let a = attributes(&fixture(n));
            (
                a.study_instance_uid,
                a.series_instance_uid,
                a.sop_instance_uid,
            )
        })
        .collect();
    assert_eq!(node.stored(), expected, "every image, each instance once");
    // What is stored is what was sent: the same object, pixel data byte for byte.
    for (name, _) in IMAGES {
        let source = OpenFileOptions::new().open_file(fixture(name)).unwrap();
        let a = InstanceAttributes::from_object(&source, name).unwrap();
        let record = node
            .ingest
            .index
            .instance(
                &a.study_instance_uid,
                &a.series_instance_uid,
                &a.sop_instance_uid,
            )
            .unwrap()
            .unwrap();
        assert_eq!(record.received_from, "CT1");
        let kept = OpenFileOptions::new()
            .open_file(node.ingest.archive.path_of(&record.file))
            .unwrap();
        if record.transfer_syntax_uid == source.meta().transfer_syntax() {
            assert_eq!(pixels(&kept), pixels(&source), "{name}: pixel data");
        }
        assert_eq!(
            kept.meta().media_storage_sop_instance_uid(),
            a.sop_instance_uid
        );
    }

    // A SOP class the node does not store (a segmentation): refused at negotiation.
    let before = node.stored();
    let refused = node
        .dcmtk_files(
            "storescu",
            args(&["-aec", AE, "-aet", "CT1"]),
            vec![fixture("liver_1frame.dcm").display().to_string()],
        )
        .await;
    assert!(!refused.status.success(), "{}", said(&refused));
    assert_eq!(node.stored(), before);

    // C-FIND at the study level, by name with a wildcard, returning keys.
    let ct = attributes(&fixture("CT_small.dcm"));
    let (find, answers) = find_with_dcmtk(
        &node,
        &[],
        &[
            "QueryRetrieveLevel=STUDY".into(),
            format!("PatientName={}*", &ct.patient_name[..3]),
            "StudyInstanceUID".into(),
            "ModalitiesInStudy".into(),
            "NumberOfStudyRelatedInstances".into(),
        ],
    )
    .await;
    assert!(find.status.success(), "C-FIND: {}", said(&find));
    assert!(!answers.is_empty(), "{}", said(&find));
    let expected_studies: BTreeSet<String> = node
        .ingest
        .index
        .studies()
        .unwrap()
        .into_iter()
        .filter(|s| s.study.patient_name.starts_with(&ct.patient_name[..3]))
        .map(|s| s.study.study_instance_uid)
        .collect();
    let found: BTreeSet<String> = answers
        .iter()
        .map(|a| text(a, tags::STUDY_INSTANCE_UID))
        .collect();
    assert_eq!(found, expected_studies);
    let ct_answer = answers
        .iter()
        .find(|a| text(a, tags::STUDY_INSTANCE_UID) == ct.study_instance_uid)
        .expect("the CT study is found by its patient's name");
    assert_eq!(text(ct_answer, tags::MODALITIES_IN_STUDY), "CT");
    assert_eq!(
        text(ct_answer, tags::NUMBER_OF_STUDY_RELATED_INSTANCES),
        "1"
    );

    // At the series level, within a study.
    let (find, series) = find_with_dcmtk(
        &node,
        &[],
        &[
            "QueryRetrieveLevel=SERIES".into(),
            format!("StudyInstanceUID={}", ct.study_instance_uid),
            "SeriesInstanceUID".into(),
            "Modality".into(),
        ],
    )
    .await;
    assert!(find.status.success(), "{}", said(&find));
    assert_eq!(series.len(), 1, "{}", said(&find));
    assert_eq!(
        text(&series[0], tags::SERIES_INSTANCE_UID),
        ct.series_instance_uid
    );
    assert_eq!(text(&series[0], tags::MODALITY), "CT");

    // A level this node does not answer: a failure status with the reason, no matches.
    let (find, found) = find_with_dcmtk(&node, &["-d"], &["QueryRetrieveLevel=IMAGE".into()]).await;
    assert!(found.is_empty());
    assert!(
        said(&find).contains("IMAGE is not supported"),
        "the reason reaches the peer: {}",
        said(&find)
    );
}

/// findscu in the Study Root model with `keys`, its answers extracted: what it said and them.
async fn find_with_dcmtk(
    node: &Node,
    options: &[&str],
    keys: &[String],
) -> (Output, Vec<InMemDicomObject>) {
    let out = tempfile::tempdir().unwrap();
    let mut args: Vec<String> = ["-S", "-aec", AE, "-X", "-od"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    args.push(out.path().display().to_string());
    args.extend(options.iter().map(|s| s.to_string()));
    for key in keys {
        args.extend(["-k".to_string(), key.clone()]);
    }
    let said = node.dcmtk("findscu", args).await;
    let found = responses(out.path());
    (said, found)
}

fn responses(dir: &Path) -> Vec<InMemDicomObject> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    files
        .iter()
        .map(|f| OpenFileOptions::new().open_file(f).unwrap().into_inner())
        .collect()
}

fn text(object: &InMemDicomObject, tag: dicom_core::Tag) -> String {
    object
        .element_opt(tag)
        .unwrap()
        .map(|e| {
            e.to_str()
                .unwrap()
                .trim_end_matches(['\0', ' '])
                .to_string()
        })
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread")]
async fn only_the_listed_peers_may_associate() {
    let mut config = ScpConfig::new(AE);
    config.allow = vec![AllowedPeer::parse("CT1@127.0.0.1").unwrap()];
    let node = start(config).await;
    let echo = |calling: &'static str| {
        vec![
            "-aec".to_string(),
            AE.to_string(),
            "-aet".to_string(),
            calling.to_string(),
        ]
    };
    let allowed = node.dcmtk("echoscu", echo("CT1")).await;
    assert!(allowed.status.success(), "{}", said(&allowed));
    // Without a list, anyone may store, but C-FIND, which lists patients, is refused.
    let open = start(ScpConfig::new(AE)).await;
    let (find, _) = find_with_dcmtk(&open, &["-d"], &["QueryRetrieveLevel=STUDY".into()]).await;
    assert!(
        said(&find).contains("only the AEs listed"),
        "{}",
        said(&find)
    );
    let stranger = node.dcmtk("echoscu", echo("CT2")).await;
    assert!(!stranger.status.success());
    assert!(
        said(&stranger).contains("Calling AE Title Not Recognized"),
        "{}",
        said(&stranger)
    );
    assert!(AllowedPeer::parse("CT1").is_err(), "AE@HOST");
    assert!(AllowedPeer::parse("@127.0.0.1").is_err());
}

/// One C-STORE on our own association: the status and its comment.
fn c_store(
    association: &mut dicom_ul::ClientAssociation<std::net::TcpStream>,
    message_id: u16,
    sop_class: &str,
    sop_instance: &str,
    data_set: &[u8],
) -> (u16, String) {
    let command = InMemDicomObject::command_from_element_iter([
        DataElement::new(
            tags::AFFECTED_SOP_CLASS_UID,
            VR::UI,
            dicom_value!(Str, sop_class),
        ),
        DataElement::new(tags::COMMAND_FIELD, VR::US, dicom_value!(U16, [0x0001])),
        DataElement::new(tags::MESSAGE_ID, VR::US, dicom_value!(U16, [message_id])),
        DataElement::new(tags::PRIORITY, VR::US, dicom_value!(U16, [0])),
        DataElement::new(
            tags::COMMAND_DATA_SET_TYPE,
            VR::US,
            dicom_value!(U16, [0x0000]),
        ),
        DataElement::new(
            tags::AFFECTED_SOP_INSTANCE_UID,
            VR::UI,
            dicom_value!(Str, sop_instance),
        ),
    ]);
    let context = association.presentation_contexts()[0].id;
    let mut bytes = Vec::new();
    command
        .write_dataset_with_ts(
            &mut bytes,
            &dicom_transfer_syntax_registry::entries::IMPLICIT_VR_LITTLE_ENDIAN.erased(),
        )
        .unwrap();
    association
        .send(&Pdu::PData {
            data: vec![
                PDataValue {
                    presentation_context_id: context,
                    value_type: PDataValueType::Command,
                    is_last: true,
                    data: bytes,
                },
                PDataValue {
                    presentation_context_id: context,
                    value_type: PDataValueType::Data,
                    is_last: true,
                    data: data_set.to_vec(),
                },
            ],
        })
        .unwrap();
    let Pdu::PData { data } = association.receive().unwrap() else {
        panic!("no response");
    };
    let response = grassroots_dicom::dimse::Command::parse(&data[0].data).unwrap();
    assert_eq!(response.field, 0x8001);
    let object = InMemDicomObject::read_dataset_with_ts(
        data[0].data.as_slice(),
        &dicom_transfer_syntax_registry::entries::IMPLICIT_VR_LITTLE_ENDIAN.erased(),
    )
    .unwrap();
    (
        object
            .element(tags::STATUS)
            .unwrap()
            .to_int::<u16>()
            .unwrap(),
        text(&object, tags::ERROR_COMMENT),
    )
}

/// A fixture's data set in Explicit VR Little Endian (no meta group), with its UIDs.
fn data_set(name: &str) -> (Vec<u8>, InstanceAttributes) {
    let object = OpenFileOptions::new().open_file(fixture(name)).unwrap();
    let attributes = InstanceAttributes::from_object(&object, name).unwrap();
    let mut bytes = Vec::new();
    object
        .write_dataset_with_ts(&mut bytes, &EXPLICIT_VR_LITTLE_ENDIAN.erased())
        .unwrap();
    (bytes, attributes)
}

#[tokio::test(flavor = "multi_thread")]
async fn corrupt_objects_and_broken_associations_lose_nothing_acknowledged() {
    let node = start(ScpConfig::new(AE)).await;
    let addr = node.listener.local_addr();
    let (ct, ct_uids) = data_set("CT_small.dcm");
    let sop = ct_uids.sop_instance_uid.clone();
    let stored = tokio::task::spawn_blocking(move || {
        let mut association = ClientAssociationOptions::new()
            .calling_ae_title("TESTSCU")
            .called_ae_title(AE)
            .with_presentation_context(
                uids::CT_IMAGE_STORAGE,
                vec![EXPLICIT_VR_LITTLE_ENDIAN.uid()],
            )
            .establish(addr)
            .unwrap();
        let good = c_store(&mut association, 1, uids::CT_IMAGE_STORAGE, &sop, &ct);
        // The same object cut short: refused with the reason; the association goes on.
        let truncated = c_store(
            &mut association,
            2,
            uids::CT_IMAGE_STORAGE,
            "1.2.3.4.5",
            &ct[..ct.len() / 3],
        );
        // A data set that is another instance than the command announced.
        let mismatch = c_store(
            &mut association,
            3,
            uids::CT_IMAGE_STORAGE,
            "1.2.3.4.6",
            &ct,
        );
        // The same good object again: success, still one instance.
        let again = c_store(&mut association, 4, uids::CT_IMAGE_STORAGE, &sop, &ct);
        // Half an object, then the connection drops: nothing of it may be stored.
        let context = association.presentation_contexts()[0].id;
        association
            .send(&Pdu::PData {
                data: vec![PDataValue {
                    presentation_context_id: context,
                    value_type: PDataValueType::Data,
                    is_last: false,
                    data: ct[..ct.len() / 2].to_vec(),
                }],
            })
            .unwrap();
        drop(association);
        (good, truncated, mismatch, again)
    })
    .await
    .unwrap();
    let (good, truncated, mismatch, again) = stored;
    assert_eq!(good.0, 0x0000, "{good:?}");
    assert_eq!(truncated.0, 0xC000, "{truncated:?}");
    assert!(truncated.1.contains("not a DICOM object"), "{truncated:?}");
    assert_eq!(mismatch.0, 0xA900, "{mismatch:?}");
    assert_eq!(again.0, 0x0000);
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let expected: BTreeSet<_> = [(
        ct_uids.study_instance_uid.clone(),
        ct_uids.series_instance_uid.clone(),
        ct_uids.sop_instance_uid.clone(),
    )]
    .into();
    assert_eq!(node.stored(), expected);
    // The archive holds that one file and no leftovers of the others.
    let mut files = Vec::new();
    let mut stack = vec![node.ingest.archive.path_of("")];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else {
                files.push(path);
            }
        }
    }
    assert_eq!(files.len(), 1, "{files:?}");

    // Files refused at import: truncated, without a meta group, not DICOM at all.
    for name in ["MR_truncated.dcm", "no_meta.dcm"] {
        let error = node.ingest.import_file(&fixture(name)).unwrap_err();
        assert!(error.to_string().contains(name), "{name}: {error}");
    }
    let not_dicom = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(not_dicom.path(), b"a scanner's log, not an image").unwrap();
    assert!(node.ingest.import_file(not_dicom.path()).is_err());
    assert_eq!(node.stored(), expected, "nothing refused was stored");

    // An import keeps the file byte for byte.
    let imported = node.ingest.import_file(&fixture("MR_small.dcm")).unwrap();
    assert_eq!(
        std::fs::read(node.ingest.archive.path_of(&imported.file)).unwrap(),
        std::fs::read(fixture("MR_small.dcm")).unwrap()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn pynetdicom_echoes_stores_and_finds() {
    let mut config = ScpConfig::new(AE);
    config.find_from_anyone = true;
    let node = start(config).await;
    let python =
        PathBuf::from(std::env::var("GRASSROOTS_FIXTURES").unwrap()).join(".venv-tools/bin/python");
    let files = ["CT_small.dcm", "MR_small_RLE.dcm", "JPEG-lossy.dcm"];
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/pynetdicom/scu.py");
    let port = node.port();
    let paths: Vec<PathBuf> = files.iter().map(|f| fixture(f)).collect();
    let output = tokio::task::spawn_blocking(move || {
        Command::new(&python)
            .arg(script)
            .arg(port)
            .arg(AE)
            .args(&paths)
            .output()
            .unwrap_or_else(|e| {
                panic!(
                    "{}: {e} (scripts/fetch-fixtures makes it)",
                    python.display()
                )
            })
    })
    .await
    .unwrap();
    assert!(output.status.success(), "{}", said(&output));
    let report: serde_json::Value = serde_json::from_str(
        String::from_utf8_lossy(&output.stdout)
            .lines()
            .last()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(report["associated"], true, "{report}");
    assert_eq!(report["echo"], 0, "{report}");
    assert_eq!(report["store"], serde_json::json!([0, 0, 0]), "{report}");
    // RT Plan is no image: its presentation context is rejected and nothing is sent.
    assert_eq!(
        report["rejected_contexts"],
        serde_json::json!([uids::RT_PLAN_STORAGE]),
        "{report}"
    );
    assert!(
        report["unsupported_store"]
            .as_str()
            .unwrap()
            .contains("presentation context"),
        "{report}"
    );
    let stored = node.stored();
    assert_eq!(stored.len(), 3);
    let studies: BTreeSet<String> = stored.iter().map(|(s, _, _)| s.clone()).collect();
    let found: BTreeSet<String> = report["found_studies"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    assert_eq!(found, studies, "{report}");
    assert_eq!(report["found_studies_final"], 0, "{report}");
    let ct = attributes(&fixture("CT_small.dcm"));
    assert_eq!(
        report["found_series"],
        serde_json::json!([ct.series_instance_uid]),
        "{report}"
    );
}
