//! The demo's fake "your app" at `/fake/app/`: it starts a connect session through the hub's API
//! with its own API key (kept server-side), and shows what the end user came back with.

use std::sync::{Arc, OnceLock};

use actix_web::{http::header, web, HttpRequest, HttpResponse};
use askama::Template;
use secrecy::{ExposeSecret, SecretString};
use serde_json::{json, Value};

use super::fakes::fields;

/// Its pages use the hub's stylesheet and run no script.
const APP_CSP: &str = "default-src 'none'; style-src 'self'; img-src 'self'; frame-ancestors 'none'; base-uri 'none'";

/// The end user the start page offers, as the README's walkthrough names them.
const DEFAULT_END_USER: &str = "tenant-42";
const DEFAULT_DISPLAY_NAME: &str = "Harbour View Realty";

/// One fake app: the hub it talks to and the API key it talks with.
#[derive(Clone)]
pub struct FakeApp {
    hub: String,
    /// Set once the hub's store is open and the key made; until then the pages say so.
    key: Arc<OnceLock<SecretString>>,
    http: reqwest::Client,
}

#[derive(Template)]
#[template(path = "fake/app.html")]
struct StartPage<'a> {
    end_user_id: &'a str,
    display_name: &'a str,
    end_user_email: &'a str,
    error: Option<String>,
}

/// What came back, one row per query parameter the hub added.
#[derive(Template)]
#[template(path = "fake/app_back.html")]
struct BackPage {
    status: String,
    reason: Option<String>,
    connection_id: Option<String>,
    end_user: String,
    /// What the API says about that connection ("Never trust the query alone").
    confirmed: Option<Confirmed>,
    /// Why the API could not confirm it.
    unconfirmed: Option<String>,
}

struct Confirmed {
    name: String,
    company: String,
    status: String,
    end_user: String,
}

impl FakeApp {
    /// `hub` is the hub's public base URL; `http` the client it calls the hub's API with.
    pub fn new(hub: &str, http: reqwest::Client) -> Self {
        Self { hub: hub.trim_end_matches('/').to_owned(), key: Arc::default(), http }
    }

    /// The full-access API key it calls the hub with (the first one given is kept).
    pub fn set_key(&self, key: SecretString) {
        let _ = self.key.set(key);
    }

    /// Where the hub sends the end user back to: the origin `demo` allows out of the box.
    pub fn return_url(&self, end_user: &str) -> String {
        let mut url = url::Url::parse(&format!("{}/fake/app/back", self.hub)).expect("the hub's URL is a URL");
        url.query_pairs_mut().append_pair("end_user", end_user);
        url.into()
    }

    /// `/` (the start page), `POST /connect` and `/back`, relative to where it is mounted.
    pub fn configure(&self) -> impl Fn(&mut web::ServiceConfig) + Clone + Send + Sync + 'static {
        let me = self.clone();
        move |cfg: &mut web::ServiceConfig| {
            cfg.app_data(web::Data::new(me.clone()))
                .route("/", web::get().to(start_page))
                .route("/connect", web::post().to(connect))
                .route("/back", web::get().to(back));
        }
    }

    async fn api(&self, req: reqwest::RequestBuilder) -> Result<(u16, Value), String> {
        let key = self.key.get().ok_or("the demo is still starting; try again in a moment")?;
        let res = req
            .bearer_auth(key.expose_secret())
            .send()
            .await
            .map_err(|e| format!("the hub did not answer: {}", crate::outbound::client::describe_transport(&e)))?;
        let status = res.status().as_u16();
        let body = res.json::<Value>().await.unwrap_or(Value::Null);
        Ok((status, body))
    }
}

fn html(status: actix_web::http::StatusCode, body: String) -> HttpResponse {
    HttpResponse::build(status)
        .content_type("text/html; charset=utf-8")
        .insert_header((header::CONTENT_SECURITY_POLICY, APP_CSP))
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .body(body)
}

async fn start_page() -> HttpResponse {
    let page = StartPage {
        end_user_id: DEFAULT_END_USER,
        display_name: DEFAULT_DISPLAY_NAME,
        end_user_email: "",
        error: None,
    };
    html(actix_web::http::StatusCode::OK, page.render().unwrap_or_default())
}

/// Ask the hub for a connect session (server to server, with the key), then send the browser to
/// its `connect_url`. A refusal is shown on the form, with what was typed kept.
async fn connect(body: web::Bytes, app: web::Data<FakeApp>) -> HttpResponse {
    let p = fields(&body).unwrap_or_default();
    let get = |k: &str| p.get(k).map(|v| v.trim().to_owned()).unwrap_or_default();
    let (end_user, display_name, email) = (get("end_user_id"), get("display_name"), get("end_user_email"));
    let mut request = json!({ "end_user_id": end_user, "return_url": app.return_url(&end_user) });
    if !display_name.is_empty() {
        request["display_name"] = json!(display_name);
    }
    if !email.is_empty() {
        request["end_user_email"] = json!(email);
    }
    let sent = app.http.post(format!("{}/api/v1/connect-sessions", app.hub)).json(&request);
    let (status, error) = match app.api(sent).await {
        Ok((201, v)) => match v["connect_url"].as_str() {
            Some(url) => return HttpResponse::SeeOther().insert_header((header::LOCATION, url)).finish(),
            None => (502, "the hub's answer had no connect_url".to_owned()),
        },
        Ok((code, v)) => {
            let message = v["message"].as_str().unwrap_or("no message").to_owned();
            (if (400..500).contains(&code) { code } else { 502 }, format!("The hub answered {code}: {message}"))
        }
        Err(e) => (502, e),
    };
    let page =
        StartPage { end_user_id: &end_user, display_name: &display_name, end_user_email: &email, error: Some(error) };
    let code = actix_web::http::StatusCode::from_u16(status).unwrap_or(actix_web::http::StatusCode::BAD_GATEWAY);
    html(code, page.render().unwrap_or_default())
}

/// The page the hub sends the end user back to: what its query says, and what the API confirms.
async fn back(req: HttpRequest, app: web::Data<FakeApp>) -> HttpResponse {
    let q = fields(req.query_string().as_bytes()).unwrap_or_default();
    let end_user = q.get("end_user").cloned().unwrap_or_default();
    let connection_id = q.get("connection_id").cloned();
    let (mut confirmed, mut unconfirmed) = (None, None);
    if let Some(id) = &connection_id {
        let list = app.http.get(format!("{}/api/v1/connections", app.hub)).query(&[("end_user_id", &end_user)]);
        match app.api(list).await {
            Ok((200, v)) => {
                let found = v["connections"].as_array().and_then(|all| all.iter().find(|c| c["id"] == id.as_str()));
                match found {
                    Some(c) => {
                        let text = |k: &str| match &c[k] {
                            Value::String(s) => s.clone(),
                            Value::Null => "—".to_owned(),
                            other => other.to_string(),
                        };
                        confirmed = Some(Confirmed {
                            name: text("name"),
                            company: text("company_id"),
                            status: text("status"),
                            end_user: text("end_user_id"),
                        });
                    }
                    None => unconfirmed = Some(format!("the API lists no connection {id} for end user {end_user}")),
                }
            }
            Ok((code, _)) => unconfirmed = Some(format!("the API answered {code}")),
            Err(e) => unconfirmed = Some(e),
        }
    }
    let page = BackPage {
        status: q.get("status").cloned().unwrap_or_else(|| "—".to_owned()),
        reason: q.get("reason").cloned(),
        connection_id,
        end_user,
        confirmed,
        unconfirmed,
    };
    html(actix_web::http::StatusCode::OK, page.render().unwrap_or_default())
}
