//! Where an S3-compatible object store is and how to authenticate to it; shared by
//! `EtcdBackup` destinations and `EtcdRestore` sources.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// How to reach an S3-compatible endpoint. Every field is optional: absent means AWS S3
/// with the default AWS credential chain.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct S3Connection {
    /// Endpoint URL of an S3-compatible server, e.g. `http://127.0.0.1:3900`. AWS S3 when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// Region; `us-east-1` when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// Path-style addressing (`endpoint/bucket/key`), which most S3-compatible servers need.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub force_path_style: Option<bool>,
    /// Name of a Secret in the resource's namespace with keys `accessKeyId`,
    /// `secretAccessKey` and optionally `sessionToken`. The default AWS chain when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials_secret: Option<String>,
}

/// Default region when none is given.
pub const DEFAULT_REGION: &str = "us-east-1";

impl S3Connection {
    /// The region to sign requests for.
    pub fn region_or_default(&self) -> &str {
        self.region.as_deref().unwrap_or(DEFAULT_REGION)
    }
}
