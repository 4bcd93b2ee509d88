//! The API contract: each node's OpenAPI document (`/api/v1/openapi.json`) lists every
//! `/api/v1` route, and every answer of a real hub and edge matches the schema the document gives
//! for its status.
//!
//! One scenario drives every operation of both documents with real data (a slide, screening, a
//! sign-off, a referral answered by an expert, a model release, a federated round, accounts and
//! API tokens), and some with refused input; each answer's status must be documented for its
//! operation and its JSON must validate against that status's schema, with no property the
//! schema does not name. The test fails if an operation of a document was never answered with
//! success, so a new route needs a call here; a route registered without its annotation is
//! caught by the source scan below.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::*;
use serde_json::{json, Value};

/// The methods an operation can have in a path item.
const METHODS: [&str; 5] = ["get", "put", "post", "delete", "patch"];

enum Body {
    None,
    Json(Value),
    Bytes(Vec<u8>),
}

/// One node's document, and the operations the scenario has answered successfully.
struct Contract {
    node: &'static str,
    base: String,
    document: Value,
    succeeded: BTreeSet<(String, String)>,
}

impl Contract {
    async fn load(node: &'static str, at: &Node) -> Self {
        // Anyone may read the document: it describes the software, not the site.
        let response = reqwest::get(format!("{}/api/v1/openapi.json", at.http))
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        let document: Value = response.json().await.unwrap();
        assert_eq!(document["openapi"], "3.1.0", "{node}: OpenAPI 3.1");
        // Kept beside the build as an artefact, for reading and for client generators.
        let kept =
            std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("openapi-{node}.json"));
        std::fs::write(&kept, serde_json::to_vec_pretty(&document).unwrap()).unwrap();
        let contract = Self {
            node,
            base: at.http.clone(),
            document,
            succeeded: BTreeSet::new(),
        };
        contract.check_shape();
        contract
    }

    fn operations(&self) -> Vec<(String, String)> {
        let mut all = Vec::new();
        for (path, item) in self.document["paths"].as_object().unwrap() {
            for method in METHODS {
                if item.get(method).is_some() {
                    all.push((method.to_string(), path.clone()));
                }
            }
        }
        all
    }

    /// Every path is an API path; operation ids are unique; every operation documents the
    /// refusals of the role check and says how to authenticate.
    fn check_shape(&self) {
        let mut ids = BTreeSet::new();
        for (method, path) in self.operations() {
            assert!(path.starts_with("/api/v1/"), "{}: {path}", self.node);
            let operation = &self.document["paths"][&path][&method];
            let id = operation["operationId"].as_str().unwrap().to_string();
            assert!(
                ids.insert(id.clone()),
                "{}: operationId {id} twice",
                self.node
            );
            for status in ["401", "403", "500"] {
                assert!(
                    operation["responses"].get(status).is_some(),
                    "{}: {method} {path} does not document {status}",
                    self.node
                );
            }
        }
        let schemes = &self.document["components"]["securitySchemes"];
        assert_eq!(schemes["session"]["in"], "cookie");
        assert_eq!(schemes["token"]["scheme"], "bearer");
    }

    /// Calls `method path` (its `{parameters}` filled from `params`), checks the answer against
    /// the document and returns its status and JSON body.
    async fn call(
        &mut self,
        client: &reqwest::Client,
        method: &str,
        template: &str,
        params: &[(&str, &str)],
        body: Body,
    ) -> (u16, Value) {
        let (path, query) = template.split_once('?').unwrap_or((template, ""));
        let mut url = format!("{}{path}", self.base);
        for (name, value) in params {
            url = url.replace(&format!("{{{name}}}"), value);
        }
        if !query.is_empty() {
            url = format!("{url}?{query}");
        }
        let request = client.request(method.to_uppercase().parse().unwrap(), &url);
        let request = match body {
            Body::None => request,
            Body::Json(value) => request.json(&value),
            Body::Bytes(bytes) => request
                .header("content-type", "application/octet-stream")
                .body(bytes),
        };
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let content_type = response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        let text = response.text().await.unwrap();
        let what = format!("{}: {method} {template} answered {status}", self.node);
        let operation = self.document["paths"]
            .get(path)
            .and_then(|item| item.get(method))
            .unwrap_or_else(|| panic!("{what}, but the document has no such operation"))
            .clone();
        let documented = operation["responses"]
            .get(status.to_string())
            .unwrap_or_else(|| panic!("{what}, which its operation does not document: {text}"));
        let body = if content_type.starts_with("application/json") {
            let value: Value = serde_json::from_str(&text)
                .unwrap_or_else(|e| panic!("{what} with JSON that does not parse ({e}): {text}"));
            let schema = &documented["content"]["application/json"]["schema"];
            assert!(
                !schema.is_null(),
                "{what} with JSON, but the document gives no JSON schema for it: {text}"
            );
            self.validate(schema, &value, &what);
            value
        } else {
            let documented_types: Vec<&String> = documented["content"]
                .as_object()
                .map(|content| content.keys().collect())
                .unwrap_or_default();
            assert!(
                documented_types
                    .iter()
                    .any(|t| content_type.starts_with(t.as_str())),
                "{what} as {content_type:?}, documented as {documented_types:?}"
            );
            Value::Null
        };
        if (200..300).contains(&status) {
            self.succeeded
                .insert((method.to_string(), path.to_string()));
        }
        (status, body)
    }

    /// Validates `value` against `schema` (JSON Schema 2020-12, as OpenAPI 3.1 uses), strictly:
    /// an object may hold only the properties its schema names.
    fn validate(&self, schema: &Value, value: &Value, what: &str) {
        let mut parts = BTreeSet::new();
        all_of_parts(&self.document, &mut parts);
        let mut components = self.document["components"].clone();
        strict(&mut components, &parts);
        let mut root = schema.clone();
        strict(&mut root, &parts);
        if let Some(object) = root.as_object_mut() {
            object.insert("components".into(), components);
        }
        let validator = jsonschema::draft202012::new(&root)
            .unwrap_or_else(|e| panic!("{what}: its schema does not compile: {e}"));
        let errors: Vec<String> = validator
            .iter_errors(value)
            .map(|e| format!("{} at {}", e, e.instance_path()))
            .collect();
        assert!(
            errors.is_empty(),
            "{what} with a body its schema refuses:\n{}\nbody: {value}\nschema: {schema}",
            errors.join("\n")
        );
    }

    /// Every operation of the document was answered with success at least once.
    fn assert_all_succeeded(&self) {
        let missing: Vec<String> = self
            .operations()
            .into_iter()
            .filter(|operation| !self.succeeded.contains(operation))
            .map(|(method, path)| format!("{method} {path}"))
            .collect();
        assert!(
            missing.is_empty(),
            "{}: never answered with success (add them to the scenario): {missing:?}",
            self.node
        );
    }
}

/// Closes every object schema (`unevaluatedProperties: false`), so that a field a handler sends
/// but the document does not name fails validation. A schema that is a part of an `allOf` (a
/// flattened struct) stays open, and the `allOf` is closed instead: its parts name the rest.
fn strict(schema: &mut Value, parts: &BTreeSet<String>) {
    match schema {
        Value::Object(object) => {
            let closes = object.contains_key("properties") || object.contains_key("allOf");
            if closes && !object.contains_key("additionalProperties") {
                object.insert("unevaluatedProperties".into(), Value::Bool(false));
            }
            for (key, child) in object.iter_mut() {
                match (key.as_str(), child) {
                    ("allOf", Value::Array(items)) => {
                        for item in items {
                            item.as_object_mut()
                                .map(|o| o.remove("unevaluatedProperties"));
                            for grandchild in item
                                .as_object_mut()
                                .into_iter()
                                .flat_map(|o| o.values_mut())
                            {
                                strict(grandchild, parts);
                            }
                        }
                    }
                    ("schemas", Value::Object(schemas)) => {
                        for (name, component) in schemas.iter_mut() {
                            if parts.contains(name) {
                                for child in component
                                    .as_object_mut()
                                    .into_iter()
                                    .flat_map(|o| o.values_mut())
                                {
                                    strict(child, parts);
                                }
                            } else {
                                strict(component, parts);
                            }
                        }
                    }
                    (_, child) => strict(child, parts),
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(|item| strict(item, parts)),
        _ => {}
    }
}

/// The components an `allOf` refers to: the parts of flattened structs.
fn all_of_parts(schema: &Value, found: &mut BTreeSet<String>) {
    match schema {
        Value::Object(object) => {
            if let Some(Value::Array(items)) = object.get("allOf") {
                for item in items {
                    if let Some(reference) = item["$ref"].as_str() {
                        found.insert(reference.trim_start_matches("#/components/schemas/").into());
                    }
                }
            }
            object.values().for_each(|child| all_of_parts(child, found));
        }
        Value::Array(items) => items.iter().for_each(|item| all_of_parts(item, found)),
        _ => {}
    }
}

fn digest(bytes: &[u8]) -> String {
    blake3::hash(bytes).to_hex().to_string()
}

/// A client that authenticates with an API token, as a script would.
fn with_token(secret: &str) -> reqwest::Client {
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert("authorization", format!("Bearer {secret}").parse().unwrap());
    reqwest::Client::builder()
        .default_headers(headers)
        .build()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn every_operation_of_both_nodes_answers_as_its_document_says() {
    let net = Network::new(&["county-a"]);
    net.add_user("hub", "admin", "root");
    net.add_user("hub", "expert", "prof-zhang");
    net.add_user("hub", "authority", "health-bureau");
    net.add_user("county-a", "clinician", "dr-li");
    net.add_user("county-a", "admin", "it-wu");
    net.add_user("county-a", "clinician", "dr-spare");
    let hub = net.start_hub(&[
        "--rounds-min-sites",
        "1",
        "--rounds-deadline-s",
        "60",
        "--rounds-local-epochs",
        "1",
    ]);
    let edge = net.start_edge("county-a", &[]);
    let mut at_hub = Contract::load("hub", &hub).await;
    let mut at_edge = Contract::load("edge", &edge).await;
    let (root, expert, authority) = (
        signed_in(&hub, "root").await,
        signed_in(&hub, "prof-zhang").await,
        signed_in(&hub, "health-bureau").await,
    );
    let (clinician, edge_admin) = (
        signed_in(&edge, "dr-li").await,
        signed_in(&edge, "it-wu").await,
    );
    let anonymous = reqwest::Client::new();
    eventually("county-a online", Duration::from_secs(30), || async {
        is_online(&root, &hub, "county-a").await
    })
    .await;

    // Refusals are documented and shaped like every other error.
    let (status, _) = at_edge
        .call(&anonymous, "get", "/api/v1/slides", &[], Body::None)
        .await;
    assert_eq!(status, 401);
    let (status, _) = at_edge
        .call(&clinician, "get", "/api/v1/transfers", &[], Body::None)
        .await;
    assert_eq!(status, 403);
    let (status, body) = at_edge
        .call(
            &clinician,
            "post",
            "/api/v1/referrals/preview",
            &[],
            Body::Json(json!({ "case_number": "S26-1" })),
        )
        .await;
    assert_eq!(status, 422, "{body}");
    let (status, _) = at_edge
        .call(
            &clinician,
            "get",
            "/api/v1/screening/{id}",
            &[("id", "nope")],
            Body::None,
        )
        .await;
    assert_eq!(status, 404);
    let unknown = anonymous
        .get(format!("{}/api/v1/no-such-route", edge.http))
        .send()
        .await
        .unwrap();
    assert_eq!(unknown.status(), 404);
    assert!(unknown.json::<Value>().await.unwrap()["error"].is_string());

    // Models: the hub's registry, a release, and the edge installing it.
    let (v1, v2) = (
        untrained_package(&net, 1, "1.0.0", 6),
        untrained_package(&net, 2, "1.1.0", 6),
    );
    let (status, body) = at_hub
        .call(
            &root,
            "post",
            "/api/v1/model-versions",
            &[],
            Body::Bytes(b"not a package".to_vec()),
        )
        .await;
    assert_eq!(status, 422, "{body}");
    for package in [&v1, &v2] {
        let (status, body) = at_hub
            .call(
                &root,
                "post",
                "/api/v1/model-versions",
                &[],
                Body::Bytes(package.clone()),
            )
            .await;
        assert_eq!(status, 201, "{body}");
    }
    let v2_package = v2.clone();
    let (v1, v2) = (digest(&v1), digest(&v2));
    let (status, _) = at_hub
        .call(
            &root,
            "post",
            "/api/v1/model-versions/{digest}/release",
            &[("digest", &v1)],
            Body::Json(json!({})),
        )
        .await;
    assert_eq!(status, 200);
    let (status, _) = at_edge
        .call(
            &edge_admin,
            "post",
            "/api/v1/models",
            &[],
            Body::Bytes(b"junk".to_vec()),
        )
        .await;
    assert_eq!(status, 422);
    eventually("v1 at the edge", Duration::from_secs(30), || async {
        get_json(&clinician, format!("{}/api/v1/models", edge.http)).await["active"]["digest"]
            == v1.as_str()
    })
    .await;
    at_edge
        .call(&clinician, "get", "/api/v1/models", &[], Body::None)
        .await;

    // Slides, cases, screening.
    let svs = std::fs::read(fixture_svs()).unwrap();
    let (status, uploaded) = at_edge
        .call(
            &clinician,
            "post",
            "/api/v1/slides?name=biopsy.svs",
            &[],
            Body::Bytes(svs.clone()),
        )
        .await;
    assert_eq!(status, 201);
    let slide = uploaded["slide"]["id"].as_str().unwrap().to_string();
    let (status, _) = at_edge
        .call(
            &clinician,
            "post",
            "/api/v1/slides?name=biopsy.svs",
            &[],
            Body::Bytes(svs),
        )
        .await;
    assert_eq!(status, 200, "the same file again is a duplicate");
    let (status, _) = at_edge
        .call(
            &clinician,
            "post",
            "/api/v1/slides/{id}/case",
            &[("id", &slide)],
            Body::Json(json!({ "number": "S26-01234" })),
        )
        .await;
    assert_eq!(status, 200);
    eventually("the slide screened", Duration::from_secs(120), || async {
        get_json(
            &clinician,
            format!("{}/api/v1/screening/{slide}", edge.http),
        )
        .await["result"]
            .is_object()
    })
    .await;
    // A radiology study, imported through the running edge.
    let (imported, said) = import_studies(&net.data("county-a"), &[fixture_dicom("CT_small.dcm")]);
    assert!(imported, "{said}");
    let (status, studies) = at_edge
        .call(&clinician, "get", "/api/v1/studies", &[], Body::None)
        .await;
    assert_eq!(status, 200);
    let study = studies[0]["study_instance_uid"]
        .as_str()
        .unwrap()
        .to_string();
    at_edge
        .call(
            &clinician,
            "get",
            "/api/v1/studies/{study}",
            &[("study", &study)],
            Body::None,
        )
        .await;
    let (status, _) = at_edge
        .call(
            &clinician,
            "get",
            "/api/v1/studies/{study}",
            &[("study", "1.2.3")],
            Body::None,
        )
        .await;
    assert_eq!(status, 404);
    let detail = get_json(&clinician, format!("{}/api/v1/studies/{study}", edge.http)).await;
    let series = detail["series"][0]["series_instance_uid"]
        .as_str()
        .unwrap()
        .to_string();
    let instance = series_instances(&clinician, &edge, &study, &series)
        .await
        .remove(0);
    let region = "/api/v1/studies/{study}/series/{series}/instances/{instance}/region";
    let ids = [
        ("study", study.as_str()),
        ("series", series.as_str()),
        ("instance", instance.as_str()),
    ];
    let (status, _) = at_edge
        .call(
            &clinician,
            "get",
            &format!("{region}?x=10&y=10&width=8&height=8"),
            &ids,
            Body::None,
        )
        .await;
    assert_eq!(status, 200);
    let (status, _) = at_edge
        .call(
            &clinician,
            "get",
            &format!("{region}?x=1000&y=10&width=8&height=8"),
            &ids,
            Body::None,
        )
        .await;
    assert_eq!(status, 400);
    for path in [
        "/api/v1/slides",
        "/api/v1/cases",
        "/api/v1/screening",
        "/api/v1/link",
    ] {
        at_edge.call(&clinician, "get", path, &[], Body::None).await;
    }
    at_edge
        .call(
            &clinician,
            "get",
            "/api/v1/screening/{id}",
            &[("id", &slide)],
            Body::None,
        )
        .await;

    // A sign-off (a training label), then a federated round that trains on it.
    let (status, _) = at_edge
        .call(
            &clinician,
            "post",
            "/api/v1/slides/{id}/signoff",
            &[("id", &slide)],
            Body::Json(json!({ "class": "benign" })),
        )
        .await;
    assert_eq!(status, 201);
    let (status, body) = at_hub
        .call(&root, "post", "/api/v1/rounds", &[], Body::None)
        .await;
    assert_eq!(status, 201, "{body}");
    let (status, _) = at_hub
        .call(&root, "post", "/api/v1/rounds", &[], Body::None)
        .await;
    assert_eq!(status, 409, "one round at a time");
    eventually("the round over", Duration::from_secs(120), || async {
        let rounds = get_json(&root, format!("{}/api/v1/rounds", hub.http)).await;
        matches!(
            rounds["rounds"][0]["state"].as_str(),
            Some("done" | "failed")
        )
    })
    .await;
    at_hub
        .call(&root, "get", "/api/v1/rounds", &[], Body::None)
        .await;
    at_edge
        .call(&clinician, "get", "/api/v1/federated", &[], Body::None)
        .await;

    // Canary, pin and rollback in the registry.
    let (status, _) = at_hub
        .call(
            &root,
            "post",
            "/api/v1/model-versions/{digest}/canary",
            &[("digest", &v2)],
            Body::Json(json!({ "sites": ["county-a"] })),
        )
        .await;
    assert_eq!(status, 201);
    let (status, _) = at_hub
        .call(
            &root,
            "post",
            "/api/v1/sites/{site}/model",
            &[("site", "county-a")],
            Body::Json(json!({ "pin": v1 })),
        )
        .await;
    assert_eq!(status, 200);
    let (status, body) = at_hub
        .call(
            &root,
            "post",
            "/api/v1/model-versions/rollback",
            &[],
            Body::Json(json!({ "reason": "contract test" })),
        )
        .await;
    assert!(status == 200 || status == 422, "{status} {body}");
    if status != 200 {
        // Nothing to roll back to yet: release v2, then roll back to v1.
        at_hub
            .call(
                &root,
                "post",
                "/api/v1/model-versions/{digest}/release",
                &[("digest", &v2)],
                Body::Json(json!({})),
            )
            .await;
        let (status, body) = at_hub
            .call(
                &root,
                "post",
                "/api/v1/model-versions/rollback",
                &[],
                Body::Json(json!({ "reason": "contract test" })),
            )
            .await;
        assert_eq!(status, 200, "{body}");
    }
    for client in [&root, &authority] {
        at_hub
            .call(client, "get", "/api/v1/model-versions", &[], Body::None)
            .await;
        at_hub
            .call(client, "get", "/api/v1/sites", &[], Body::None)
            .await;
    }

    // A referral, answered by an expert, with a tile's descriptor fetched through the hub.
    let form = json!({
        "case_number": "S26-01234",
        "patient_name": "Wang Xiuying",
        "patient_id": "ID-330106-1977",
        "age_years": 47,
        "sex": "female",
        "specimen": "gastric biopsy, antrum",
        "question": "High-grade dysplasia or early carcinoma?",
        "urgency": "priority",
        "slide_ids": [slide],
        "regions": [{"slide_id": slide, "x": 100, "y": 100, "width": 300, "height": 200}],
    });
    let (status, _) = at_edge
        .call(
            &clinician,
            "post",
            "/api/v1/referrals/preview",
            &[],
            Body::Json(form.clone()),
        )
        .await;
    assert_eq!(status, 200);
    let (status, referred) = at_edge
        .call(
            &clinician,
            "post",
            "/api/v1/referrals",
            &[],
            Body::Json(form),
        )
        .await;
    assert_eq!(status, 201);
    let referral = referred["referral"]["referral_id"]
        .as_str()
        .unwrap()
        .to_string();
    let id = [("id", referral.as_str())];
    referral_reaches_hub(&root, &hub).await;
    let (status, _) = at_hub
        .call(
            &root,
            "post",
            "/api/v1/referrals/{id}/assign",
            &id,
            Body::Json(json!({ "expert": "prof-zhang" })),
        )
        .await;
    assert_eq!(status, 200);
    let (status, _) = at_hub
        .call(
            &expert,
            "post",
            "/api/v1/referrals/{id}/claim",
            &id,
            Body::None,
        )
        .await;
    assert_eq!(status, 200);
    let dzi = expert
        .get(format!(
            "{}/consult/{referral}/slides/{slide}.dzi",
            hub.http
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(dzi.status(), 200);
    for path in [
        "/api/v1/referrals/{id}/cache",
        "/api/v1/referrals/{id}/link",
        "/api/v1/referrals/{id}/audit",
    ] {
        let (status, body) = at_hub.call(&expert, "get", path, &id, Body::None).await;
        assert_eq!(status, 200, "{path}: {body}");
    }
    let (status, _) = at_hub
        .call(
            &expert,
            "post",
            "/api/v1/referrals/{id}/report",
            &id,
            Body::Json(json!({ "category": "benign", "diagnosis": "  " })),
        )
        .await;
    assert_eq!(status, 400, "a report needs a diagnosis");
    let (status, _) = at_hub
        .call(
            &expert,
            "post",
            "/api/v1/referrals/{id}/report",
            &id,
            Body::Json(json!({
                "category": "benign",
                "diagnosis": "Chronic gastritis, no dysplasia.",
                "recommendations": "Routine follow-up.",
            })),
        )
        .await;
    assert_eq!(status, 201);
    at_hub
        .call(&root, "get", "/api/v1/referrals", &[], Body::None)
        .await;
    answer_at_edge(&clinician, &edge, "benign").await;
    at_edge
        .call(&clinician, "get", "/api/v1/referrals", &[], Body::None)
        .await;
    let (_, egress) = at_edge
        .call(
            &clinician,
            "get",
            "/api/v1/referrals/{id}/egress",
            &id,
            Body::None,
        )
        .await;
    assert!(egress["items"].as_u64().unwrap() >= 1, "{egress}");

    // Labels: the sign-off and the answer; an admin withdraws one.
    let (_, labels) = at_edge
        .call(&clinician, "get", "/api/v1/labels", &[], Body::None)
        .await;
    let label = labels["labels"][0]["id"].as_str().unwrap().to_string();
    let (status, _) = at_edge
        .call(
            &edge_admin,
            "post",
            "/api/v1/labels/{id}/withdraw",
            &[("id", &label)],
            Body::None,
        )
        .await;
    assert_eq!(status, 200);

    // Transfers: a file of the outgoing folder, queued and received.
    let outgoing = net.data("county-a").join("outgoing");
    std::fs::create_dir_all(&outgoing).unwrap();
    std::fs::write(outgoing.join("report.csv"), b"site,slides\ncounty-a,1\n").unwrap();
    let (status, _) = at_edge
        .call(
            &edge_admin,
            "post",
            "/api/v1/transfers",
            &[],
            Body::Json(json!({ "path": "../secrets" })),
        )
        .await;
    assert_eq!(status, 400);
    let (status, _) = at_edge
        .call(
            &edge_admin,
            "post",
            "/api/v1/transfers",
            &[],
            Body::Json(json!({ "path": "report.csv", "label": "monthly report" })),
        )
        .await;
    assert_eq!(status, 202);
    at_edge
        .call(&edge_admin, "get", "/api/v1/transfers", &[], Body::None)
        .await;
    eventually(
        "the transfer at the hub",
        Duration::from_secs(30),
        || async {
            get_json(&root, format!("{}/api/v1/transfers", hub.http)).await["received"]
                .as_array()
                .is_some_and(|all| !all.is_empty())
        },
    )
    .await;
    at_hub
        .call(&root, "get", "/api/v1/transfers", &[], Body::None)
        .await;

    // Coverage: what the edge reports, and the hub's aggregates.
    at_edge
        .call(&clinician, "get", "/api/v1/coverage", &[], Body::None)
        .await;
    for path in [
        "/api/v1/coverage",
        "/api/v1/coverage?period=month&format=csv",
        "/api/v1/coverage/alerts",
        "/api/v1/coverage/trend?site=county-a",
    ] {
        let (status, body) = at_hub.call(&authority, "get", path, &[], Body::None).await;
        assert_eq!(status, 200, "{path}: {body}");
    }
    let (status, _) = at_hub
        .call(
            &authority,
            "get",
            "/api/v1/coverage?period=fortnight",
            &[],
            Body::None,
        )
        .await;
    assert_eq!(status, 400);

    // Accounts, API tokens and the security log, on both nodes (one router serves them).
    for (contract, admin, user) in [
        (&mut at_edge, &edge_admin, "dr-spare"),
        (&mut at_hub, &root, "health-bureau"),
    ] {
        let (status, created) = contract
            .call(
                admin,
                "post",
                "/api/v1/tokens",
                &[],
                Body::Json(json!({ "user": user, "name": "contract test" })),
            )
            .await;
        assert_eq!(status, 201);
        let secret = created["secret"].as_str().unwrap();
        let token = created["token"]["id"].as_str().unwrap().to_string();
        let scripted = with_token(secret);
        let (status, _) = contract
            .call(&scripted, "get", "/api/v1/coverage", &[], Body::None)
            .await;
        assert!(status == 200 || status == 403, "{status}");
        contract
            .call(admin, "get", "/api/v1/tokens", &[], Body::None)
            .await;
        let (status, _) = contract
            .call(
                admin,
                "delete",
                "/api/v1/tokens/{id}",
                &[("id", &token)],
                Body::None,
            )
            .await;
        assert_eq!(status, 200);
        let (status, _) = contract
            .call(&scripted, "get", "/api/v1/coverage", &[], Body::None)
            .await;
        assert_eq!(status, 401, "a revoked token");
        let name = [("name", user)];
        for path in [
            "/api/v1/accounts/{name}/disable",
            "/api/v1/accounts/{name}/enable",
            "/api/v1/accounts/{name}/sessions/revoke",
        ] {
            let (status, _) = contract.call(admin, "post", path, &name, Body::None).await;
            assert_eq!(status, 200, "{path}");
        }
        let (status, _) = contract
            .call(
                admin,
                "post",
                "/api/v1/accounts/{name}/password",
                &name,
                Body::Json(json!({ "password": "another long password" })),
            )
            .await;
        assert_eq!(status, 200);
        let (status, _) = contract
            .call(
                admin,
                "post",
                "/api/v1/accounts/{name}/permissions",
                &name,
                Body::Json(json!({ "permission": "dicom-retrieve", "granted": true })),
            )
            .await;
        assert_eq!(status, 200);
        let (status, _) = contract
            .call(
                admin,
                "post",
                "/api/v1/accounts/{name}/disable",
                &[("name", "nobody")],
                Body::None,
            )
            .await;
        assert_eq!(status, 404);
        contract
            .call(admin, "get", "/api/v1/accounts", &[], Body::None)
            .await;
        contract
            .call(
                admin,
                "get",
                "/api/v1/security-events?limit=50",
                &[],
                Body::None,
            )
            .await;
    }

    // An admin installs a package by hand (a site without a link, say).
    let (status, body) = at_edge
        .call(
            &edge_admin,
            "post",
            "/api/v1/models",
            &[],
            Body::Bytes(v2_package),
        )
        .await;
    assert_eq!(status, 200, "{body}");

    at_edge.assert_all_succeeded();
    at_hub.assert_all_succeeded();
}

/// Every `/api/v1` route is registered through utoipa-axum's `routes!`, which takes its path from
/// the handler's annotation: a plain `.route("/api/...")` would serve a route the document does
/// not list.
#[test]
fn no_api_route_is_registered_without_its_description() {
    let mut offenders = Vec::new();
    for (path, text) in web_sources() {
        let source: String = text.chars().filter(|c| !c.is_whitespace()).collect();
        for plain in [".route(\"/api", ".route(&format!(\"/api"] {
            if source.contains(plain) {
                offenders.push(path.display().to_string());
            }
        }
    }
    assert!(
        offenders.is_empty(),
        "API routes registered without routes!(...): {offenders:?}"
    );
}
