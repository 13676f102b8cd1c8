//! Test fixtures shared across modules: a scripted, mocked API server (tower-test) that
//! scenarios run against, each awaited with a timeout so a missing request fails.

use std::time::Duration;

use http::{Method, Request, Response, StatusCode};
use kube::Client;
use kube::client::Body;
use serde_json::{Value, json};
use tower_test::mock::{self, Handle, SendResponse};

/// The suffixes of the Secrets the operator keeps a cluster's certificates in.
const CERTIFICATE_SECRETS: [&str; 4] = ["-ca", "-member-tls", "-operator-tls", "-client-tls"];

/// The API server's side of a scenario.
pub struct ApiServer(Handle<Request<Body>, Response<Body>>);

/// One request the runtime sent.
pub struct Call {
    pub query: String,
    pub content_type: String,
    pub body: Value,
    send: SendResponse<Response<Body>>,
}

impl ApiServer {
    /// A client whose requests this server answers, defaulting to namespace `ns`.
    pub fn client(ns: &str) -> (Client, Self) {
        let (service, handle) = mock::pair::<Request<Body>, Response<Body>>();
        (Client::new(service, ns), Self(handle))
    }

    /// Runs `script` against the requests the runtime sends.
    pub fn run<F, Fut>(self, script: F) -> tokio::task::JoinHandle<()>
    where
        F: FnOnce(Self) -> Fut,
        Fut: Future<Output = ()> + Send + 'static,
    {
        tokio::spawn(script(self))
    }

    /// The next request, which must be `method` on `path`.
    pub async fn expect(&mut self, method: Method, path: &str) -> Call {
        self.expect_where(method, path, |p| p == path).await
    }

    /// The operator's four certificate Secrets of a cluster are read and found missing.
    pub async fn own_certificate_secrets_missing(&mut self, ns: &str, cluster: &str) {
        for suffix in CERTIFICATE_SECRETS {
            self.expect(
                Method::GET,
                &format!("/api/v1/namespaces/{ns}/secrets/{cluster}{suffix}"),
            )
            .await
            .fail(http::StatusCode::NOT_FOUND, "NotFound");
        }
    }

    /// A TLS cluster's first pass: its four certificate Secrets (`-ca`, `-member-tls`,
    /// `-operator-tls`, `-client-tls`) are read, found missing, and applied. Returns the
    /// applied Secrets.
    pub async fn serve_new_certificates(&mut self, ns: &str, cluster: &str) -> Vec<Value> {
        self.own_certificate_secrets_missing(ns, cluster).await;
        let mut applied = Vec::new();
        for suffix in CERTIFICATE_SECRETS {
            let call = self
                .expect(
                    Method::PATCH,
                    &format!("/api/v1/namespaces/{ns}/secrets/{cluster}{suffix}"),
                )
                .await;
            call.assert_apply();
            applied.push(call.body.clone());
            call.echo();
        }
        applied
    }

    /// The Event a TLS cluster's first pass publishes: every certificate issued, each
    /// "missing" or "new CA".
    pub async fn expect_certificates_issued_event(&mut self, ns: &str) {
        let event = self
            .expect(
                Method::POST,
                &format!("/apis/events.k8s.io/v1/namespaces/{ns}/events"),
            )
            .await;
        assert_eq!(event.body["type"], "Normal");
        assert_eq!(event.body["reason"], "CertificatesIssued");
        let note = event.body["note"].as_str().unwrap_or_default().to_string();
        for entry in [
            "ca (missing)",
            "server (new CA)",
            "peer (new CA)",
            "client (new CA)",
        ] {
            assert!(note.contains(entry), "{note}");
        }
        event.echo();
    }

    /// The next request, which must be `method` on a path under `prefix` (for names the
    /// client generates, such as a repeated Event's).
    pub async fn expect_under(&mut self, method: Method, prefix: &str) -> Call {
        self.expect_where(method, prefix, |p| p.starts_with(prefix))
            .await
    }

    async fn expect_where(
        &mut self,
        method: Method,
        what: &str,
        path_matches: impl Fn(&str) -> bool,
    ) -> Call {
        let (request, send) = self
            .0
            .next_request()
            .await
            .unwrap_or_else(|| panic!("expected {method} {what}, the runtime sent nothing"));
        assert!(
            request.method() == method && path_matches(request.uri().path()),
            "expected {method} {what}, got {} {}",
            request.method(),
            request.uri()
        );
        let query = request.uri().query().unwrap_or_default().to_string();
        let content_type = request
            .headers()
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        let bytes = request.into_body().collect_bytes().await.unwrap();
        let body = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).unwrap()
        };
        Call {
            query,
            content_type,
            body,
            send,
        }
    }
}

impl Call {
    pub fn reply(self, body: &Value) {
        self.send
            .send_response(Response::new(Body::from(serde_json::to_vec(body).unwrap())));
    }

    /// Answers with the object sent, as the API server does for a create or an apply.
    pub fn echo(self) {
        let body = self.body.clone();
        self.reply(&body);
    }

    pub fn fail(self, code: StatusCode, reason: &str) {
        let status = json!({
            "apiVersion": "v1",
            "kind": "Status",
            "status": "Failure",
            "message": reason,
            "reason": reason,
            "code": code.as_u16(),
        });
        let mut response = Response::new(Body::from(serde_json::to_vec(&status).unwrap()));
        *response.status_mut() = code;
        self.send.send_response(response);
    }

    /// Answers 404 with the plain-text body the API server sends for a resource it does
    /// not serve at all (an API group without its CRD), not a JSON `Status`.
    pub fn unknown_resource(self) {
        let mut response = Response::new(Body::from(b"404 page not found\n".to_vec()));
        *response.status_mut() = StatusCode::NOT_FOUND;
        self.send.send_response(response);
    }

    /// A server-side apply by our field manager, forced.
    pub fn assert_apply(&self) {
        assert_eq!(self.content_type, "application/apply-patch+yaml");
        assert!(
            self.query.contains("fieldManager=etcd-operator"),
            "{}",
            self.query
        );
        assert!(self.query.contains("force=true"), "{}", self.query);
    }
}

pub async fn within_1s(server: tokio::task::JoinHandle<()>) {
    tokio::time::timeout(Duration::from_secs(1), server)
        .await
        .expect("scenario timed out: the runtime sent fewer requests than expected")
        .expect("scenario failed");
}
