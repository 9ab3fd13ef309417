//! The OpenAPI document's `webhooks` section: every envelope the hub delivers (captured by a real
//! receiver over loopback) and every JSON example in the README's event section validates against
//! its schema, with an independent JSON Schema (2020-12) validator, and a schema rejects an
//! envelope missing a field or carrying one more.

use std::collections::BTreeSet;

use connect_hub::{
    demo::receiver::{Delivery, Reply},
    domain::endpoint::{generate_secret, EndpointId, EndpointUrl, EventTypes},
    store::{ExchangeFailure, NewEndpoint},
    time::now_ms,
};
use serde_json::Value;

use crate::helpers::{receiver, spawn_app_with, TestApp, CREATE, SIGNED};

const DOC: &str = "file:///openapi.json";

/// The hub's own event types; every other `type` is SnapInspect's.
const HUB_TYPES: [&str; 7] = [
    "connection.created",
    "connection.needs_reconnect",
    "connection.recovered",
    "connection.disconnected",
    "delivery.dead",
    "endpoint.disabled",
    "endpoint.test",
];
const SNAPINSPECT_TYPES: [&str; 4] =
    ["Create_Inspection", "Update_Inspection_Status", "Create_Review", "Review_Signed"];

/// The envelope schemas of the document's `webhooks`, compiled.
struct Envelopes {
    schemas: boon::Schemas,
    doc: Value,
    compiled: std::collections::BTreeMap<String, boon::SchemaIndex>,
}

impl Envelopes {
    fn new(doc: Value) -> Self {
        let mut schemas = boon::Schemas::new();
        let mut compiler = boon::Compiler::new();
        compiler.set_default_draft(boon::Draft::V2020_12);
        compiler.enable_format_assertions();
        compiler.add_resource(DOC, doc.clone()).unwrap();
        let mut compiled = std::collections::BTreeMap::new();
        for (name, hook) in doc["webhooks"].as_object().expect("a webhooks section") {
            let schema = &hook["post"]["requestBody"]["content"]["application/json"]["schema"]["$ref"];
            let pointer = schema.as_str().unwrap_or_else(|| panic!("{name}: its body is a $ref"));
            let index =
                compiler.compile(&format!("{DOC}{pointer}"), &mut schemas).unwrap_or_else(|e| panic!("{name}: {e}"));
            compiled.insert(name.clone(), index);
        }
        Self { schemas, doc, compiled }
    }

    /// The webhook an envelope of this type is described by.
    fn hook_for(kind: Option<&str>) -> &str {
        match kind {
            Some(k) if HUB_TYPES.contains(&k) || SNAPINSPECT_TYPES.contains(&k) => k,
            _ => "SnapInspect",
        }
    }

    fn check(&self, hook: &str, envelope: &Value) -> Result<(), String> {
        let index = self.compiled.get(hook).unwrap_or_else(|| panic!("no webhook `{hook}` in the document"));
        self.schemas.validate(envelope, *index).map_err(|e| e.to_string())
    }

    /// Validate against its type's schema (and a known SnapInspect type against the generic one
    /// too), and see the schema refuse it with a field missing or one added. Returns the hook.
    fn assert_valid(&self, what: &str, envelope: &Value) -> String {
        let hook = Self::hook_for(envelope["type"].as_str()).to_owned();
        if let Err(e) = self.check(&hook, envelope) {
            panic!("{what}: does not match webhooks.{hook}: {e}\n{envelope:#}");
        }
        if SNAPINSPECT_TYPES.contains(&hook.as_str()) {
            self.check("SnapInspect", envelope).unwrap_or_else(|e| panic!("{what}: not a SnapInspect webhook: {e}"));
        }
        for field in ["id", "type", "received_at", "payload", "inspection", "company_id", "connection_id"] {
            let mut less = envelope.clone();
            less.as_object_mut().unwrap().remove(field);
            assert!(self.check(&hook, &less).is_err(), "{what}: webhooks.{hook} takes it without `{field}`");
        }
        let mut more = envelope.clone();
        more["surprise"] = Value::Bool(true);
        assert!(self.check(&hook, &more).is_err(), "{what}: webhooks.{hook} takes a field it does not name");
        hook
    }
}

async fn endpoint(app: &TestApp, url: &str, types: &str) -> EndpointId {
    let id = EndpointId::generate();
    let new = NewEndpoint {
        id: &id,
        url: &EndpointUrl::parse(url).unwrap(),
        description: "test",
        event_types: &EventTypes::parse(types).unwrap(),
        secret: &generate_secret(),
    };
    app.state.store.create_endpoint(&new, now_ms(), "test").await.unwrap();
    id
}

fn body(d: &Delivery) -> Value {
    serde_json::from_slice(&d.body).unwrap()
}

/// The JSON examples of the README's "Events delivered to endpoints" section.
fn readme_examples() -> Vec<Value> {
    let readme = include_str!("../../README.md");
    let start = readme.find("\n## Events delivered to endpoints").expect("the README's event section");
    let section = &readme[start + 1..];
    let section = &section[..section.find("\n## ").unwrap_or(section.len())];
    section
        .split("```json\n")
        .skip(1)
        .map(|block| {
            let json = &block[..block.find("```").unwrap()];
            serde_json::from_str(json).unwrap_or_else(|e| panic!("a README example is not JSON: {e}\n{json}"))
        })
        .collect()
}

#[tokio::test]
async fn every_envelope_the_hub_delivers_and_every_readme_example_matches_its_webhook_schema() {
    let app = spawn_app_with(|v| {
        v.extend([
            ("ENDPOINT_CONCURRENCY".to_owned(), "1".to_owned()),
            ("ENDPOINT_DISABLE_AFTER".to_owned(), "1h".to_owned()),
            ("RETRY_SCHEDULE".to_owned(), "0s".to_owned()),
        ])
    })
    .await;
    let doc: Value = app.get("/api/v1/openapi.json").await.json().await.unwrap();
    let envelopes = Envelopes::new(doc);
    let (all, all_url) = receiver();
    let (gone, gone_url) = receiver();
    let (failing, failing_url) = receiver();
    endpoint(&app, &all_url, "").await;
    let gone_ep = endpoint(&app, &gone_url, "Review_Signed").await;
    let failing_ep = endpoint(&app, &failing_url, "Create_Review").await;

    // connection.created, SnapInspect's webhooks enriched with the inspection (and ones of a
    // type not known yet, without a type, and of a company not connected), a dead delivery and
    // a disabled endpoint.
    let conn = app.connect_company(6847).await;
    gone.push_reply(Reply::Status(410));
    failing.push_reply(Reply::Status(500));
    sqlx::query("update endpoints set failing_since = $2 where id = $1")
        .bind(failing_ep.as_str())
        .bind(now_ms() - 7_200_000)
        .execute(app.state.store.pool())
        .await
        .unwrap();
    for webhook in [
        CREATE,
        SIGNED,
        r#"{"sType":"Update_Inspection_Status","iInspectionID":1388563,"iCompanyID":6847,"sStatus":"Completed"}"#,
        r#"{"sType":"Create_Review","iInsReviewID":"6","iInspectionID":"1388563","iCompanyID":"6847"}"#,
        r#"{"sType":"Inspection_Archived","iInspectionID":1388563,"iCompanyID":6847,"bNew":true}"#,
        r#"{"iInspectionID":1388563,"iCompanyID":6847}"#,
        r#"{"sType":"Create_Inspection","iInspectionID":77,"iCompanyID":9999}"#,
    ] {
        app.send_event(webhook).await;
    }
    app.state.worker.drain().await.unwrap();
    assert!(!app.state.store.endpoint(&failing_ep).await.unwrap().unwrap().enabled, "disabled");
    let _ = gone_ep;

    // connection.needs_reconnect, .recovered and .disconnected.
    let failure = ExchangeFailure::Dead { message: "the refresh token was revoked".into() };
    let now = now_ms();
    let lease = app.state.store.acquire_exchange_lease(&conn, "test", now, now + 60_000).await.unwrap();
    assert_eq!(lease, connect_hub::store::LeaseOutcome::Acquired);
    assert!(app.state.store.record_exchange_failure(&conn, "test", &failure, now_ms(), "test").await.unwrap());
    assert_eq!(app.connect_company(6847).await, conn);
    assert!(app.state.store.disconnect(&conn, now_ms(), "test").await.unwrap());
    app.state.worker.drain().await.unwrap();

    // endpoint.test, sent at once.
    let sent = connect_hub::delivery::manage::send_test(
        &app.state.store,
        app.state.worker.dispatcher().clients(),
        failing_ep.as_str(),
        "test",
    )
    .await
    .unwrap();
    assert!(sent.delivered, "{:?}", sent.error);

    let mut covered = BTreeSet::new();
    let delivered: Vec<Delivery> = all.received().into_iter().chain(failing.received()).collect();
    for d in &delivered {
        let envelope = body(d);
        assert_eq!(envelope["id"], d.webhook_id.as_str());
        covered.insert(envelopes.assert_valid(&format!("delivery {}", d.webhook_id), &envelope));
    }
    let every: BTreeSet<String> = envelopes.compiled.keys().cloned().collect();
    assert_eq!(covered, every, "a real delivery for every webhook in the document");
    assert!(delivered.iter().any(|d| body(d)["inspection"].is_object()), "an enriched webhook was among them");

    let examples = readme_examples();
    assert!(examples.len() >= 6, "{}", examples.len());
    for (n, example) in examples.iter().enumerate() {
        envelopes.assert_valid(&format!("README example {}", n + 1), example);
    }

    // The document's `webhooks` are exactly the hub's types, the four known SnapInspect ones and
    // the generic one.
    let mut expected: BTreeSet<String> =
        HUB_TYPES.iter().chain(SNAPINSPECT_TYPES.iter()).map(|s| s.to_string()).collect();
    expected.insert("SnapInspect".into());
    assert_eq!(every, expected);
    assert!(envelopes.doc["webhooks"]["SnapInspect"]["post"]["requestBody"]["required"].as_bool().unwrap());
}
