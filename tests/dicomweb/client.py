"""dicomweb-client (PyPI) against the edge's DICOMweb with an API token. Prints what it found
as JSON (judged by tests/studies.rs).

Usage: client.py URL TOKEN PATIENT_PREFIX search
         searches for studies, series and instances, reads a series' metadata, and tries to
         retrieve an instance (refused until an admin grants the permission);
       client.py URL TOKEN PATIENT_PREFIX retrieve ORIGINAL TO_STORE
         retrieves the instance the search finds and its first frame (compared with ORIGINAL,
         read by pydicom), then stores TO_STORE (STOW-RS) and finds it."""
import json, sys
import pydicom
from dicomweb_client.api import DICOMwebClient
from pydicom.dataset import Dataset

url, token, prefix, phase = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4]
client = DICOMwebClient(url=url, headers={"Authorization": f"Bearer {token}"})
report = {}
if phase == "retrieve":
    original = pydicom.dcmread(sys.argv[5])
    study = Dataset.from_json(client.search_for_studies(search_filters={"PatientName": prefix + "*"})[0]).StudyInstanceUID
    series = Dataset.from_json(client.search_for_series(study_instance_uid=study)[0]).SeriesInstanceUID
    sop = Dataset.from_json(client.search_for_instances(study_instance_uid=study, series_instance_uid=series)[0]).SOPInstanceUID
    retrieved = client.retrieve_instance(study_instance_uid=study, series_instance_uid=series, sop_instance_uid=sop)
    report["retrieved_sop"] = retrieved.SOPInstanceUID
    report["same_pixels"] = retrieved.PixelData == original.PixelData
    frames = client.retrieve_instance_frames(study_instance_uid=study, series_instance_uid=series,
                                             sop_instance_uid=sop, frame_numbers=[1])
    report["frames"] = len(frames)
    report["same_frame"] = frames[0] == original.pixel_array.tobytes()
    try:
        client.retrieve_instance_frames(study_instance_uid=study, series_instance_uid=series,
                                        sop_instance_uid=sop, frame_numbers=[2])
        report["missing_frame"] = "served"
    except Exception as error:
        report["missing_frame"] = str(error)
    to_store = pydicom.dcmread(sys.argv[6])
    answer = client.store_instances([to_store])
    report["stored"] = [item.ReferencedSOPInstanceUID for item in answer.ReferencedSOPSequence]
    report["stored_study"] = to_store.StudyInstanceUID
    report["found_stored"] = len(client.search_for_instances(study_instance_uid=to_store.StudyInstanceUID))
    print(json.dumps(report))
    sys.exit(0)
studies = client.search_for_studies(search_filters={"PatientName": prefix + "*"})
report["studies"] = [Dataset.from_json(s).StudyInstanceUID for s in studies]
report["all_studies"] = len(client.search_for_studies())
report["modalities"] = [str(Dataset.from_json(s).ModalitiesInStudy) for s in studies]
study = report["studies"][0]
series = client.search_for_series(study_instance_uid=study)
report["series"] = [Dataset.from_json(s).SeriesInstanceUID for s in series]
report["series_modality"] = [Dataset.from_json(s).Modality for s in series]
instances = client.search_for_instances(study_instance_uid=study, series_instance_uid=report["series"][0])
report["instances"] = [Dataset.from_json(i).SOPInstanceUID for i in instances]
metadata = client.retrieve_series_metadata(study_instance_uid=study, series_instance_uid=report["series"][0])
first = Dataset.from_json(metadata[0])
report["metadata"] = {"PatientName": str(first.PatientName), "Rows": int(first.Rows),
                      "has_pixels": "PixelData" in first}
try:
    client.search_for_studies(search_filters={"NoSuchKeyword": "x"})
    report["bad_key"] = "accepted"
except Exception as error:  # requests.HTTPError with the status
    report["bad_key"] = str(error)
try:
    client.retrieve_instance(study_instance_uid=study, series_instance_uid=report["series"][0],
                             sop_instance_uid=report["instances"][0])
    report["retrieve_refused"] = "served"
except Exception as error:
    report["retrieve_refused"] = str(error)
print(json.dumps(report))
