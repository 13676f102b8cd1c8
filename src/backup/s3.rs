//! Builds an aws-sdk-s3 client from an [`S3Connection`] and optional static credentials
//! (from a Secret) or, without them, the default AWS credential chain.
//!
//! Reading the Secret is the caller's job; [`StaticCredentials::from_secret_data`] reads its
//! data map. Credentials are never logged: their `Debug` shows only the access key id.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use aws_sdk_s3::Client;
use aws_sdk_s3::config::timeout::TimeoutConfig;
use aws_sdk_s3::config::{
    BehaviorVersion, Credentials, Region, RequestChecksumCalculation, ResponseChecksumValidation,
};
use k8s_openapi::ByteString;

use super::Error;
use crate::api::s3::S3Connection;

/// Secret data keys, as documented on [`S3Connection::credentials_secret`].
pub const ACCESS_KEY_ID: &str = "accessKeyId";
pub const SECRET_ACCESS_KEY: &str = "secretAccessKey";
pub const SESSION_TOKEN: &str = "sessionToken";

/// How long establishing a connection may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long to wait for a response once a request is sent (a large CopyObject answers late).
const READ_TIMEOUT: Duration = Duration::from_secs(300);

/// An access key pair and optional session token.
#[derive(Clone, PartialEq, Eq)]
pub struct StaticCredentials {
    pub access_key_id: String,
    secret_access_key: String,
    session_token: Option<String>,
}

impl StaticCredentials {
    pub fn new(
        access_key_id: impl Into<String>,
        secret_access_key: impl Into<String>,
        session_token: Option<String>,
    ) -> Self {
        Self {
            access_key_id: access_key_id.into(),
            secret_access_key: secret_access_key.into(),
            session_token,
        }
    }

    /// The secret half of the key pair (for handing to another client; never log it).
    pub fn secret_access_key(&self) -> &str {
        &self.secret_access_key
    }

    /// Reads a Secret's `data`: `accessKeyId`, `secretAccessKey` and optional `sessionToken`
    /// (UTF-8; surrounding whitespace such as a trailing newline is dropped).
    ///
    /// # Errors
    /// [`Error::CredentialsSecret`] naming the first key that is missing, empty or not UTF-8.
    pub fn from_secret_data(data: &BTreeMap<String, ByteString>) -> Result<Self, Error> {
        let read = |key: &'static str| -> Result<Option<String>, Error> {
            match data.get(key) {
                None => Ok(None),
                Some(ByteString(bytes)) => std::str::from_utf8(bytes)
                    .map(|s| Some(s.trim().to_owned()).filter(|s| !s.is_empty()))
                    .map_err(|_| Error::CredentialsSecret { key }),
            }
        };
        let required = |key| read(key)?.ok_or(Error::CredentialsSecret { key });
        Ok(Self {
            access_key_id: required(ACCESS_KEY_ID)?,
            secret_access_key: required(SECRET_ACCESS_KEY)?,
            session_token: read(SESSION_TOKEN)?,
        })
    }
}

impl fmt::Debug for StaticCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StaticCredentials")
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &"<redacted>")
            .field(
                "session_token",
                &self.session_token.as_ref().map(|_| "<redacted>"),
            )
            .finish()
    }
}

/// A client for `connection`: its endpoint (AWS S3 when absent), region (`us-east-1` when
/// absent) and addressing style, signed with `credentials` or, when `None`, whatever the
/// default AWS chain finds (environment, profile, web identity, container or instance role).
///
/// Request checksums are sent and response checksums checked only where S3 requires them:
/// S3-compatible servers such as Garage reject the SDK's default (always) checksums.
/// Connecting may take 5 s; the SDK retries failed calls (3 attempts, backoff).
///
/// Nothing is dialled here; errors show on the first call.
pub async fn client(connection: &S3Connection, credentials: Option<StaticCredentials>) -> Client {
    let region = Region::new(connection.region_or_default().to_owned());
    let builder = match credentials {
        Some(c) => aws_sdk_s3::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .credentials_provider(Credentials::new(
                c.access_key_id,
                c.secret_access_key,
                c.session_token,
                None,
                "etcd-operator",
            )),
        None => {
            let shared = aws_config::defaults(BehaviorVersion::latest())
                .region(region.clone())
                .load()
                .await;
            aws_sdk_s3::config::Builder::from(&shared)
        }
    };
    let mut builder = builder
        .region(region)
        .force_path_style(connection.force_path_style.unwrap_or(false))
        .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
        .response_checksum_validation(ResponseChecksumValidation::WhenRequired)
        .timeout_config(
            TimeoutConfig::builder()
                .connect_timeout(CONNECT_TIMEOUT)
                .read_timeout(READ_TIMEOUT)
                .build(),
        );
    if let Some(endpoint) = &connection.endpoint {
        builder = builder.endpoint_url(endpoint);
    }
    Client::from_conf(builder.build())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(pairs: &[(&str, &str)]) -> BTreeMap<String, ByteString> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), ByteString(v.as_bytes().to_vec())))
            .collect()
    }

    #[test]
    fn secret_data_gives_keys_and_optional_token() {
        let c = StaticCredentials::from_secret_data(&data(&[
            ("accessKeyId", "AKID\n"),
            ("secretAccessKey", "s3cr3t"),
        ]))
        .unwrap();
        assert_eq!(c, StaticCredentials::new("AKID", "s3cr3t", None));
    }

    #[test]
    fn secret_data_without_secret_key_names_it() {
        let err =
            StaticCredentials::from_secret_data(&data(&[("accessKeyId", "AKID")])).unwrap_err();
        assert!(matches!(
            err,
            Error::CredentialsSecret {
                key: SECRET_ACCESS_KEY
            }
        ));
    }

    #[test]
    fn debug_never_shows_the_secret() {
        let c = StaticCredentials::new("AKID", "s3cr3t", Some("sess-42".into()));
        let shown = format!("{c:?}");
        assert!(shown.contains("AKID"));
        assert!(
            !shown.contains("s3cr3t") && !shown.contains("sess-42"),
            "{shown}"
        );
    }
}
