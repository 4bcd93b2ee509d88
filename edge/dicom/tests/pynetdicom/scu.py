"""pynetdicom (PyPI) as a modality and a PACS against the edge's DICOM listener: C-ECHO,
C-STORE of the given files (each in its own transfer syntax), C-FIND at STUDY and SERIES level,
and a storage class the listener does not take. Prints what happened as JSON on its last line
(judged by edge/dicom/tests/dimse.rs).

Usage: scu.py PORT CALLED_AE FILE..."""
import json
import sys
import time

from pydicom import dcmread
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian
from pynetdicom import AE
from pynetdicom.sop_class import (
    RTPlanStorage,
    StudyRootQueryRetrieveInformationModelFind,
    Verification,
)

port, called, files = int(sys.argv[1]), sys.argv[2], sys.argv[3:]
datasets = [dcmread(f) for f in files]
ae = AE(ae_title="PYNETDICOM")
ae.add_requested_context(Verification)
ae.add_requested_context(StudyRootQueryRetrieveInformationModelFind)
for ds in datasets:
    ae.add_requested_context(ds.SOPClassUID, ds.file_meta.TransferSyntaxUID)
ae.add_requested_context(RTPlanStorage)
report = {"store": [], "found_studies": [], "found_series": []}
started = time.monotonic()
assoc = ae.associate("127.0.0.1", port, ae_title=called)
report["associated"] = assoc.is_established
if assoc.is_established:
    report["rejected_contexts"] = [c.abstract_syntax for c in assoc.rejected_contexts]
    report["echo"] = assoc.send_c_echo().Status
    for ds in datasets:
        report["store"].append(assoc.send_c_store(ds).Status)
    for level, key, out in (("STUDY", "StudyInstanceUID", "found_studies"), ("SERIES", "SeriesInstanceUID", "found_series")):
        query = Dataset()
        query.QueryRetrieveLevel = level
        query.PatientName = "*"
        query.StudyInstanceUID = "" if level == "STUDY" else datasets[0].StudyInstanceUID
        query.SeriesInstanceUID = ""
        query.Modality = ""
        final = None
        for status, identifier in assoc.send_c_find(query, StudyRootQueryRetrieveInformationModelFind):
            final = status.Status if status else None
            if identifier is not None and status.Status in (0xFF00, 0xFF01):
                report[out].append(str(getattr(identifier, key)))
        report[out + "_final"] = final
    try:
        rtplan = Dataset()
        rtplan.SOPClassUID = RTPlanStorage
        rtplan.SOPInstanceUID = "1.2.3.4.5"
        rtplan.file_meta = FileMetaDataset()
        rtplan.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        assoc.send_c_store(rtplan)
        report["unsupported_store"] = "sent"
    except ValueError as error:  # no accepted presentation context for it
        report["unsupported_store"] = str(error)
    report["before_release_s"] = round(time.monotonic() - started, 2)
    assoc.release()
report["seconds"] = round(time.monotonic() - started, 2)
print(json.dumps(report))
