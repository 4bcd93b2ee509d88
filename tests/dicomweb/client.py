"""dicomweb-client (PyPI) against the edge's DICOMweb: searches for studies, series and
instances, and a series' metadata, with an API token. Prints what it found as JSON (judged by
tests/studies.rs). Usage: client.py URL TOKEN PATIENT_PREFIX"""
import json, sys
from dicomweb_client.api import DICOMwebClient
from pydicom.dataset import Dataset

url, token, prefix = sys.argv[1], sys.argv[2], sys.argv[3]
client = DICOMwebClient(url=url, headers={"Authorization": f"Bearer {token}"})
report = {}
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
print(json.dumps(report))
