//! `backup` against real etcd clusters and a real S3-compatible server (Garage) on loopback:
//! take, upload, prune, download, verify and restore, and every way that can fail.
//!
//! Each test starts its own etcd and Garage on free ports and waits only on conditions with
//! deadlines. Needs `ETCD_BIN_DIR` (3.4 and 3.5) and Garage (`scripts/install-test-deps`).

mod support;

use std::time::{Duration, Instant};

use aws_sdk_s3::Client;
use aws_sdk_s3::config::interceptors::BeforeTransmitInterceptorContextMut;
use aws_sdk_s3::config::{ConfigBag, Intercept, RuntimeComponents};
use aws_sdk_s3::primitives::ByteStream;
use bytes::Bytes;
use etcd_operator::api::backup::VerificationResult;
use etcd_operator::api::backup::{BackupRecord, Retention, S3Destination};
use etcd_operator::backup::key::{Scope, parse_key};
use etcd_operator::backup::{
    DownloadOptions, Error, Owner, SnapshotMetadata, SnapshotTools, StaticCredentials,
    UploadOptions, Verifier, abort_stale_uploads, apply_retention, client, download, download_with,
    fetch_snapshot, list_backups, pin_object, take_backup, upload_stream, verify_backup,
};
use etcd_operator::testing::garage::{BUCKET, TestGarage};
use etcd_operator::testing::{EtcdBin, TestCluster, bin_for_minor, free_port, wait_for};
use futures::stream::{self, Stream, StreamExt};
use support::{RestoredCluster, connect, digests, expected_digests, fill, sha256_file, value_for};

fn etcd(major: u64, minor: u64) -> EtcdBin {
    bin_for_minor(major, minor).unwrap_or_else(|e| panic!("{e}"))
}

fn destination(garage: &TestGarage, prefix: &str) -> S3Destination {
    S3Destination {
        bucket: BUCKET.into(),
        prefix: Some(prefix.into()),
        connection: garage.connection(),
        part_size_mib: None,
        compression: None,
        sign_payload: None,
    }
}

async fn started(bin: &EtcdBin, members: usize) -> (TestCluster, TestGarage) {
    let (cluster, garage) = tokio::join!(TestCluster::start(bin, members), TestGarage::start());
    (cluster.unwrap(), garage.unwrap())
}

/// The EtcdBackup `nightly` in `default` of the EtcdCluster `cluster`.
fn owner(cluster: &str) -> Owner<'_> {
    Owner {
        namespace: "default",
        cluster,
        backup: "nightly",
        cluster_uid: Some("uid-1"),
    }
}

/// `owner(cluster)`'s folder under `prefix`.
fn scope<'a>(prefix: Option<&'a str>, cluster: &'a str) -> Scope<'a> {
    owner(cluster).scope(prefix)
}

async fn backup(
    cluster: &TestCluster,
    s3: &Client,
    dest: &S3Destination,
    name: &str,
) -> BackupRecord {
    let admin = cluster.admin().await.unwrap();
    take_backup(&admin, None, s3, dest, &owner(name))
        .await
        .unwrap_or_else(|e| panic!("backup: {e:?}"))
}

/// A 3.5 cluster with a few keys, backed up once.
async fn one_backup() -> (TestCluster, TestGarage, BackupRecord) {
    let bin = etcd(3, 5);
    let (cluster, garage) = started(&bin, 1).await;
    fill(&connect(&cluster.client_urls()).await, "k", 200, 100, 16).await;
    let s3 = garage.client().await;
    let record = backup(&cluster, &s3, &destination(&garage, "p"), "main").await;
    (cluster, garage, record)
}

/// `total` distinct bytes in 1 MiB chunks.
fn chunks(total: usize) -> impl Stream<Item = Result<Bytes, Error>> + Send {
    const CHUNK: usize = 1 << 20;
    stream::iter((0..total.div_ceil(CHUNK)).map(move |i| {
        let len = CHUNK.min(total - i * CHUNK);
        Ok(Bytes::from(value_for(i as u64, len)))
    }))
}

fn small_parts() -> UploadOptions {
    UploadOptions {
        part_size: 5 << 20,
        parts_in_flight: 2,
        ..UploadOptions::default()
    }
}

async fn multipart_uploads(s3: &Client) -> Vec<String> {
    let listed = s3
        .list_multipart_uploads()
        .bucket(BUCKET)
        .send()
        .await
        .unwrap();
    listed
        .uploads()
        .iter()
        .filter_map(|u| u.key().map(str::to_owned))
        .collect()
}

async fn object_keys(s3: &Client) -> Vec<String> {
    let listed = s3.list_objects_v2().bucket(BUCKET).send().await.unwrap();
    listed
        .contents()
        .iter()
        .filter_map(|o| o.key().map(str::to_owned))
        .collect()
}

async fn put(s3: &Client, key: &str, body: Vec<u8>, metadata: &SnapshotMetadata) {
    s3.put_object()
        .bucket(BUCKET)
        .key(key)
        .set_metadata(Some(metadata.to_map()))
        .body(ByteStream::from(body))
        .send()
        .await
        .unwrap();
}

async fn get_bytes(s3: &Client, key: &str) -> Vec<u8> {
    let resp = s3
        .get_object()
        .bucket(BUCKET)
        .key(key)
        .send()
        .await
        .unwrap();
    resp.body.collect().await.unwrap().to_vec()
}

fn assert_same_data(
    got: &std::collections::BTreeMap<Vec<u8>, [u8; 32]>,
    want: &std::collections::BTreeMap<Vec<u8>, [u8; 32]>,
) {
    assert_eq!(got.len(), want.len(), "key count differs");
    let differing = want.iter().filter(|(k, v)| got.get(*k) != Some(v)).count();
    assert_eq!(
        differing, 0,
        "{differing} keys missing or with other values"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn backup_of_three_members_restores_every_key_into_a_new_cluster() {
    let bin = etcd(3, 5);
    let (cluster, garage) = started(&bin, 3).await;
    let kv = connect(&cluster.client_urls()).await;
    fill(&kv, "k", 3000, 200, 32).await;
    let s3 = garage.client().await;

    let record = backup(&cluster, &s3, &destination(&garage, "nightly"), "main").await;

    let parsed =
        parse_key(&scope(Some("nightly"), "main"), &record.key).expect("key in our layout");
    assert_eq!(parsed.revision, record.revision);
    assert!(record.revision > 3000, "revision {}", record.revision);
    assert!(record.size > 0 && record.duration_seconds > 0.0 && record.mb_per_second > 0.0);
    let head = s3
        .head_object()
        .bucket(BUCKET)
        .key(&record.key)
        .send()
        .await
        .unwrap();
    assert_eq!(head.content_length(), Some(record.size));
    let meta = SnapshotMetadata::from_map(head.metadata().expect("user metadata"));
    let cluster_id = cluster
        .admin()
        .await
        .unwrap()
        .member_list()
        .await
        .unwrap()
        .cluster_id;
    assert_eq!(
        meta,
        SnapshotMetadata {
            sha256: Some(record.sha256.clone()),
            size: Some(record.size as u64),
            revision: Some(record.revision),
            etcd_version: Some(bin.version.clone()),
            cluster_id: Some(cluster_id.to_string()),
            namespace: Some("default".into()),
            cluster: Some("main".into()),
            backup: Some("nightly".into()),
            cluster_uid: Some("uid-1".into()),
            compression: None,
        }
    );
    assert_eq!(record.cluster_id, cluster_id.to_string());
    assert_eq!(record.etcd_version, bin.version.to_string());

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("snapshot.db");
    let fetched = fetch_snapshot(
        &s3,
        BUCKET,
        &record.key,
        None,
        &path,
        &bin.dir,
        &bin.version,
    )
    .await
    .unwrap();
    assert_eq!(sha256_file(&path), record.sha256);
    assert_eq!(fetched.sha256, record.sha256);
    let status = bin
        .snapshot_status(&path)
        .await
        .expect("etcdutl accepts it");
    assert!(status.revision >= record.revision);
    assert_eq!(fetched.revision, status.revision);

    let mut restored = RestoredCluster::restore(&bin, &path, 3, dir.path()).await;
    restored.start(&bin, &[]).await;
    let want = digests(&kv, 500).await;
    assert_same_data(&want, &expected_digests("k", 3000, 200));
    let got = digests(&connect(&restored.client_urls()).await, 500).await;
    assert_same_data(&got, &want);
}

#[tokio::test(flavor = "multi_thread")]
async fn plain_etcdctl_snapshot_put_with_plain_s3_restores_through_our_path() {
    let bin = etcd(3, 5);
    let (cluster, garage) = started(&bin, 1).await;
    let kv = connect(&cluster.client_urls()).await;
    fill(&kv, "plain", 500, 300, 16).await;
    let dir = tempfile::tempdir().unwrap();
    let saved = dir.path().join("saved.db");
    let out = tokio::process::Command::new(bin.etcdctl())
        .env("ETCDCTL_API", "3")
        .arg(format!("--endpoints={}", cluster.client_url(0).unwrap()))
        .args(["snapshot", "save"])
        .arg(&saved)
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let s3 = garage.client().await;
    put(
        &s3,
        "manual/etcdctl.db",
        std::fs::read(&saved).unwrap(),
        &SnapshotMetadata::default(),
    )
    .await;

    let path = dir.path().join("fetched.db");
    let fetched = fetch_snapshot(
        &s3,
        BUCKET,
        "manual/etcdctl.db",
        None,
        &path,
        &bin.dir,
        &bin.version,
    )
    .await
    .unwrap();
    assert_eq!(fetched.metadata, SnapshotMetadata::default());
    assert_eq!(fetched.sha256, sha256_file(&saved));

    let mut restored = RestoredCluster::restore(&bin, &path, 3, dir.path()).await;
    restored.start(&bin, &[]).await;
    let got = digests(&connect(&restored.client_urls()).await, 500).await;
    assert_same_data(&got, &digests(&kv, 500).await);
}

#[tokio::test(flavor = "multi_thread")]
async fn wrong_or_unknown_credentials_are_a_credentials_error() {
    let garage = TestGarage::start().await.unwrap();
    let good = garage.credentials();
    let wrong_secret = StaticCredentials::new(good.access_key_id.clone(), "0".repeat(64), None);
    let unknown_key = StaticCredentials::new(format!("GK{}", "0".repeat(24)), "0".repeat(64), None);
    let dir = tempfile::tempdir().unwrap();
    for credentials in [wrong_secret, unknown_key] {
        let s3 = client(&garage.connection(), Some(credentials)).await;
        let meta = SnapshotMetadata::default();
        let err = upload_stream(&s3, BUCKET, "k.db", &meta, chunks(1000), &small_parts())
            .await
            .unwrap_err();
        assert!(matches!(err, Error::Credentials { .. }), "{err:?}");
        assert!(!err.is_retryable());
        let err = download(&s3, BUCKET, "k.db", None, None, &dir.path().join("x"))
            .await
            .unwrap_err();
        assert!(matches!(err, Error::Credentials { .. }), "{err:?}");
        let err = list_backups(&s3, BUCKET, &scope(Some("p"), "main"))
            .await
            .unwrap_err();
        assert_eq!(err.reason(), "Credentials");
    }
    assert!(multipart_uploads(&garage.client().await).await.is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_backup_with_wrong_credentials_fails_typed_and_leaves_nothing() {
    let bin = etcd(3, 5);
    let (cluster, garage) = started(&bin, 1).await;
    let wrong = StaticCredentials::new(garage.credentials().access_key_id, "0".repeat(64), None);
    let s3 = client(&garage.connection(), Some(wrong)).await;
    let admin = cluster.admin().await.unwrap();
    let err = take_backup(
        &admin,
        None,
        &s3,
        &destination(&garage, "p"),
        &owner("main"),
    )
    .await
    .unwrap_err();
    assert_eq!(err.reason(), "Credentials", "{err:?}");
    let good = garage.client().await;
    assert!(object_keys(&good).await.is_empty());
    assert!(multipart_uploads(&good).await.is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_missing_bucket_is_bucket_missing() {
    let garage = TestGarage::start().await.unwrap();
    let s3 = garage.client().await;
    let meta = SnapshotMetadata::default();
    let err = upload_stream(
        &s3,
        "no-such-bucket",
        "k.db",
        &meta,
        chunks(1000),
        &small_parts(),
    )
    .await
    .unwrap_err();
    assert!(matches!(err, Error::BucketMissing { .. }), "{err:?}");
    let dir = tempfile::tempdir().unwrap();
    let err = download(
        &s3,
        "no-such-bucket",
        "k.db",
        None,
        None,
        &dir.path().join("x"),
    )
    .await
    .unwrap_err();
    assert!(matches!(err, Error::BucketMissing { .. }), "{err:?}");
    let err = list_backups(&s3, "no-such-bucket", &scope(None, "main"))
        .await
        .unwrap_err();
    assert_eq!(err.reason(), "BucketMissing");
    assert!(!err.is_retryable());
}

#[tokio::test(flavor = "multi_thread")]
async fn an_endpoint_nobody_listens_on_is_unreachable() {
    let connection = etcd_operator::api::s3::S3Connection {
        endpoint: Some(format!("http://127.0.0.1:{}", free_port().unwrap())),
        region: Some("garage".into()),
        force_path_style: Some(true),
        credentials_secret: None,
    };
    let s3 = client(&connection, Some(StaticCredentials::new("GK1", "s", None))).await;
    let meta = SnapshotMetadata::default();
    let err = upload_stream(&s3, BUCKET, "k.db", &meta, chunks(1000), &small_parts())
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Unreachable { .. }), "{err:?}");
    assert!(err.is_retryable());
    let dir = tempfile::tempdir().unwrap();
    let err = download(&s3, BUCKET, "k.db", None, None, &dir.path().join("x"))
        .await
        .unwrap_err();
    assert_eq!(err.reason(), "Unreachable", "{err:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_corrupt_object_is_a_sha_mismatch_and_leaves_no_file() {
    let (_cluster, garage, record) = one_backup().await;
    let bin = etcd(3, 5);
    let s3 = garage.client().await;
    let mut body = get_bytes(&s3, &record.key).await;
    let middle = body.len() / 2;
    body[middle] ^= 0xff;
    let head = s3
        .head_object()
        .bucket(BUCKET)
        .key(&record.key)
        .send()
        .await
        .unwrap();
    let meta = SnapshotMetadata::from_map(head.metadata().unwrap());
    put(&s3, "p/main/corrupt.db", body, &meta).await;

    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("s.db");
    let err = fetch_snapshot(
        &s3,
        BUCKET,
        "p/main/corrupt.db",
        None,
        &dest,
        &bin.dir,
        &bin.version,
    )
    .await
    .unwrap_err();
    match &err {
        Error::ShaMismatch { expected, actual } => {
            assert_eq!(expected, &record.sha256);
            assert_ne!(actual, &record.sha256);
        }
        other => panic!("{other:?}"),
    }
    assert!(!dest.exists() && !dir.path().join("s.db.part").exists());

    // A digest given by the caller wins over the metadata.
    let err = fetch_snapshot(
        &s3,
        BUCKET,
        &record.key,
        Some(&"0".repeat(64)),
        &dest,
        &bin.dir,
        &bin.version,
    )
    .await
    .unwrap_err();
    assert_eq!(err.reason(), "ShaMismatch");
}

#[tokio::test(flavor = "multi_thread")]
async fn random_bytes_without_a_digest_are_not_a_snapshot() {
    let bin = etcd(3, 5);
    let garage = TestGarage::start().await.unwrap();
    let s3 = garage.client().await;
    put(
        &s3,
        "p/main/random.db",
        value_for(7, 256 << 10),
        &SnapshotMetadata::default(),
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("s.db");
    let err = fetch_snapshot(
        &s3,
        BUCKET,
        "p/main/random.db",
        None,
        &dest,
        &bin.dir,
        &bin.version,
    )
    .await
    .unwrap_err();
    assert!(matches!(err, Error::NotASnapshot { .. }), "{err:?}");
    assert!(!dest.exists());
    // The 3.4 tool (etcdctl) refuses it the same way.
    let old = etcd(3, 4);
    let err = fetch_snapshot(
        &s3,
        BUCKET,
        "p/main/random.db",
        None,
        &dest,
        &old.dir,
        &old.version,
    )
    .await
    .unwrap_err();
    assert_eq!(err.reason(), "NotASnapshot", "{err:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_3_5_snapshot_is_too_new_for_a_3_4_target() {
    let (_cluster, garage, record) = one_backup().await;
    let old = etcd(3, 4);
    let s3 = garage.client().await;
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("s.db");
    let err = fetch_snapshot(
        &s3,
        BUCKET,
        &record.key,
        None,
        &dest,
        &old.dir,
        &old.version,
    )
    .await
    .unwrap_err();
    match &err {
        Error::SnapshotTooNew { snapshot, target } => {
            assert_eq!((snapshot.major, snapshot.minor), (3, 5));
            assert_eq!(target, &old.version);
        }
        other => panic!("{other:?}"),
    }
    assert!(!dest.exists());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failing_snapshot_stream_aborts_the_multipart_upload() {
    let garage = TestGarage::start().await.unwrap();
    let s3 = garage.client().await;
    // Three full parts go out, then the source fails.
    let failing = chunks(15 << 20).chain(stream::once(async {
        Err(Error::Snapshot {
            endpoint: "http://127.0.0.1:1".into(),
            source: etcd_operator::etcd::Error::SnapshotTruncated {
                endpoint: "http://127.0.0.1:1".into(),
                received: 15 << 20,
            },
        })
    }));
    let meta = SnapshotMetadata::default();
    let err = upload_stream(
        &s3,
        BUCKET,
        "p/main/failed.db",
        &meta,
        failing,
        &small_parts(),
    )
    .await
    .unwrap_err();
    assert_eq!(err.reason(), "Snapshot");
    assert!(multipart_uploads(&s3).await.is_empty());
    assert!(object_keys(&s3).await.is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_cancelled_upload_is_aborted() {
    let garage = TestGarage::start().await.unwrap();
    let s3 = garage.client().await;
    let (reached, reached_rx) = tokio::sync::oneshot::channel::<()>();
    let mut reached = Some(reached);
    // Two parts' worth, then the source hangs: the upload is cancelled there.
    let hanging = chunks(10 << 20).chain(stream::once(async move {
        let _ = reached.take().map(|tx| tx.send(()));
        std::future::pending::<Result<Bytes, Error>>().await
    }));
    let meta = SnapshotMetadata::default();
    let options = small_parts();
    let upload = upload_stream(&s3, BUCKET, "p/main/cancelled.db", &meta, hanging, &options);
    tokio::select! {
        done = upload => panic!("upload ended: {done:?}"),
        _ = reached_rx => {}
    }
    wait_for(Duration::from_secs(20), "upload aborted", || async {
        match multipart_uploads(&s3).await {
            uploads if uploads.is_empty() => Ok(()),
            uploads => Err(uploads),
        }
    })
    .await
    .unwrap();
    assert!(object_keys(&s3).await.is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn parts_signed_or_sent_unsigned_store_the_stream_with_its_digest_in_order() {
    let garage = TestGarage::start().await.unwrap();
    let s3 = garage.client().await;
    // Five parts and a short one, uploading two at a time while another thread hashes them.
    let size = (25 << 20) + 4321;
    let expected = {
        use sha2::Digest;
        let mut h = sha2::Sha256::new();
        let mut all = std::pin::pin!(chunks(size));
        while let Some(c) = all.next().await {
            h.update(c.unwrap());
        }
        hex::encode(h.finalize())
    };
    for sign_payload in [true, false] {
        let key = format!("p/main/signed-{sign_payload}.db");
        let options = UploadOptions {
            sign_payload,
            ..small_parts()
        };
        let uploaded = upload_stream(
            &s3,
            BUCKET,
            &key,
            &SnapshotMetadata::default(),
            chunks(size),
            &options,
        )
        .await
        .unwrap();
        assert_eq!((uploaded.size, uploaded.parts), (size as u64, 6));
        assert_eq!(uploaded.sha256, expected, "sign_payload {sign_payload}");
        let body = get_bytes(&s3, &key).await;
        assert_eq!(hex_sha256(&body), expected, "sign_payload {sign_payload}");
    }
    assert!(multipart_uploads(&s3).await.is_empty());
}

/// What an UploadPart request carried on the wire (after signing).
#[derive(Clone, Debug)]
struct SentPart {
    number: i32,
    content_sha256: String,
    crc32c: Option<String>,
    /// The SigV4 `SignedHeaders` list.
    signed_headers: String,
}

/// Records every UploadPart as sent and, for `corrupt_part`, flips one bit of its body after
/// it was signed and checksummed: what a bad link or a man in the middle does to it.
#[derive(Clone, Debug, Default)]
struct PartWire {
    sent: std::sync::Arc<std::sync::Mutex<Vec<SentPart>>>,
    corrupt_part: Option<i32>,
}

impl Intercept for PartWire {
    fn name(&self) -> &'static str {
        "PartWire"
    }

    fn modify_before_transmit(
        &self,
        context: &mut BeforeTransmitInterceptorContextMut<'_>,
        _runtime_components: &RuntimeComponents,
        _cfg: &mut ConfigBag,
    ) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        let request = context.request_mut();
        let query = request
            .uri()
            .split_once('?')
            .map_or("", |(_, q)| q)
            .to_owned();
        let number = query
            .split('&')
            .find_map(|p| p.strip_prefix("partNumber=")?.parse::<i32>().ok());
        let Some(number) = number else {
            return Ok(());
        };
        let header = |name: &str| request.headers().get(name).map(str::to_owned);
        let signed_headers = header("authorization")
            .and_then(|a| {
                let list = a.split("SignedHeaders=").nth(1)?;
                Some(list.split(',').next()?.to_owned())
            })
            .unwrap_or_default();
        self.sent.lock().unwrap().push(SentPart {
            number,
            content_sha256: header("x-amz-content-sha256").unwrap_or_default(),
            crc32c: header("x-amz-checksum-crc32c"),
            signed_headers,
        });
        if self.corrupt_part == Some(number) {
            let mut body = request
                .body()
                .bytes()
                .expect("parts are sent from memory")
                .to_vec();
            let middle = body.len() / 2;
            body[middle] ^= 0x01;
            *request.body_mut() = aws_smithy_types::body::SdkBody::from(body);
        }
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn parts_go_unsigned_with_a_signed_crc32c_and_garage_refuses_a_changed_part() {
    let garage = TestGarage::start().await.unwrap();
    let plain = garage.client().await;
    let with = |wire: &PartWire| {
        Client::from_conf(
            plain
                .config()
                .to_builder()
                .interceptor(wire.clone())
                .build(),
        )
    };
    // Two full parts and a short one, over plain HTTP with the default options.
    let size = (10 << 20) + 4321;
    let options = small_parts();
    assert!(!options.sign_payload, "unsigned is the default");
    let mut data = Vec::with_capacity(size);
    let mut all = std::pin::pin!(chunks(size));
    while let Some(c) = all.next().await {
        data.extend_from_slice(&c.unwrap());
    }
    let crc32c = |bytes: &[u8]| {
        let crc = crc_fast::checksum(crc_fast::CrcAlgorithm::Crc32Iscsi, bytes) as u32;
        aws_smithy_types::base64::encode(crc.to_be_bytes())
    };

    let wire = PartWire::default();
    let key = "p/main/unsigned-crc32c.db";
    let uploaded = upload_stream(
        &with(&wire),
        BUCKET,
        key,
        &SnapshotMetadata::default(),
        chunks(size),
        &options,
    )
    .await
    .unwrap();
    assert_eq!(uploaded.sha256, hex_sha256(&data));
    assert_eq!(hex_sha256(&get_bytes(&plain, key).await), uploaded.sha256);
    let mut sent = wire.sent.lock().unwrap().clone();
    sent.sort_by_key(|p| p.number);
    assert_eq!(sent.iter().map(|p| p.number).collect::<Vec<_>>(), [1, 2, 3]);
    for (part, bytes) in sent.iter().zip(data.chunks(options.part_size)) {
        assert_eq!(part.content_sha256, "UNSIGNED-PAYLOAD", "{part:?}");
        assert_eq!(
            part.crc32c.as_deref(),
            Some(crc32c(bytes).as_str()),
            "{part:?}"
        );
        assert!(
            part.signed_headers
                .split(';')
                .any(|h| h == "x-amz-checksum-crc32c"),
            "the checksum header is signed: {part:?}"
        );
    }

    // The second part's body changed after signing: Garage checks it against the CRC32C,
    // refuses it, and the upload is aborted with nothing left.
    let wire = PartWire {
        corrupt_part: Some(2),
        ..PartWire::default()
    };
    let key = "p/main/changed-on-the-way.db";
    let err = upload_stream(
        &with(&wire),
        BUCKET,
        key,
        &SnapshotMetadata::default(),
        chunks(size),
        &options,
    )
    .await
    .unwrap_err();
    match &err {
        Error::UploadPart {
            part: 2, source, ..
        } => {
            assert_eq!(source.status(), Some(400), "{err:?}");
            assert_eq!(source.code(), Some("InvalidDigest"), "{err:?}");
        }
        other => panic!("expected part 2 refused, got {other:?}"),
    }
    assert!(multipart_uploads(&plain).await.is_empty());
    assert!(!object_keys(&plain).await.contains(&key.to_owned()));
}

#[tokio::test(flavor = "multi_thread")]
async fn objects_beyond_the_single_copy_limit_get_metadata_by_multipart_copy() {
    let garage = TestGarage::start().await.unwrap();
    let s3 = garage.client().await;
    let options = UploadOptions {
        max_single_copy: 0,
        ..small_parts()
    };
    let meta = SnapshotMetadata {
        revision: Some(42),
        ..SnapshotMetadata::default()
    };
    let size = (12 << 20) + 123;
    let uploaded = upload_stream(&s3, BUCKET, "p/main/big.db", &meta, chunks(size), &options)
        .await
        .unwrap();
    assert_eq!((uploaded.size, uploaded.parts), (size as u64, 3));
    let head = s3
        .head_object()
        .bucket(BUCKET)
        .key("p/main/big.db")
        .send()
        .await
        .unwrap();
    let got = SnapshotMetadata::from_map(head.metadata().unwrap());
    assert_eq!(got.sha256.as_deref(), Some(uploaded.sha256.as_str()));
    assert_eq!((got.size, got.revision), (Some(size as u64), Some(42)));
    let dir = tempfile::tempdir().unwrap();
    let downloaded = download(
        &s3,
        BUCKET,
        "p/main/big.db",
        None,
        None,
        &dir.path().join("b"),
    )
    .await
    .unwrap();
    assert_eq!(downloaded.sha256, uploaded.sha256);
    assert!(multipart_uploads(&s3).await.is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn retention_keeps_the_newest_two_of_ours_and_nothing_else() {
    let bin = etcd(3, 5);
    let (cluster, garage) = started(&bin, 1).await;
    let s3 = garage.client().await;
    let dest = destination(&garage, "keep");
    // Never deleted, however old: other files, the earlier layout's backups, another
    // EtcdBackup's, another namespace's, and one in our folder whose metadata does not name
    // this EtcdBackup.
    let impostor = "keep/default/main/nightly/20000101T000000Z-rev1.db";
    let foreign = [
        "keep/default/main/nightly/notes.txt",
        "keep/default/main/nightly/20000101T000000Z-rev1.db.bak",
        "keep/main/20000101T000000Z-rev1.db",
        "keep/default/main/weekly/20000101T000000Z-rev1.db",
        "keep/other/main/nightly/20000101T000000Z-rev1.db",
        "keep/20000101T000000Z-rev1.db",
        impostor,
    ];
    for key in foreign {
        put(&s3, key, b"not ours".to_vec(), &SnapshotMetadata::default()).await;
    }
    let retention = Retention {
        keep_last: Some(2),
        max_age: None,
    };
    let mut records = Vec::new();
    for i in 0..4 {
        cluster.put("tick", i.to_string()).await.unwrap();
        let record = backup(&cluster, &s3, &dest, "main").await;
        apply_retention(
            &s3,
            BUCKET,
            &scope(Some("keep"), "main"),
            &retention,
            &record.key,
            jiff::Timestamp::now(),
        )
        .await
        .unwrap();
        records.push(record);
    }
    let left: Vec<String> = list_backups(&s3, BUCKET, &scope(Some("keep"), "main"))
        .await
        .unwrap()
        .into_iter()
        .map(|b| b.key)
        .filter(|k| k != impostor)
        .collect();
    assert_eq!(left, [records[3].key.clone(), records[2].key.clone()]);
    let all = object_keys(&s3).await;
    for key in foreign {
        assert!(all.contains(&key.to_owned()), "{key} was deleted");
    }
    assert_eq!(all.len(), foreign.len() + 2, "{all:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn stale_multipart_uploads_under_the_cluster_folder_are_aborted() {
    let garage = TestGarage::start().await.unwrap();
    let s3 = garage.client().await;
    for key in [
        "p/default/main/nightly/crashed.db",
        "p/default/main/weekly/running.db",
        "p/main/legacy.db",
    ] {
        s3.create_multipart_upload()
            .bucket(BUCKET)
            .key(key)
            .send()
            .await
            .unwrap();
    }
    let now = jiff::Timestamp::now() + jiff::SignedDuration::from_hours(2);
    let recent = abort_stale_uploads(
        &s3,
        BUCKET,
        &scope(Some("p"), "main"),
        Duration::from_secs(3 * 3600),
        now,
    )
    .await
    .unwrap();
    assert!(recent.is_empty(), "{recent:?}");
    let aborted = abort_stale_uploads(
        &s3,
        BUCKET,
        &scope(Some("p"), "main"),
        Duration::from_secs(3600),
        now,
    )
    .await
    .unwrap();
    assert_eq!(aborted, ["p/default/main/nightly/crashed.db"]);
    // Another EtcdBackup's uploads and the earlier layout's are not ours to abort. An abort
    // may take a moment to leave the listing.
    let want = ["p/default/main/weekly/running.db", "p/main/legacy.db"];
    etcd_operator::testing::wait_for(
        Duration::from_secs(10),
        "the aborted upload to leave the listing",
        || async {
            let mut left = multipart_uploads(&s3).await;
            left.sort();
            if left == want { Ok(()) } else { Err(left) }
        },
    )
    .await
    .unwrap();
}

/// ≥ 200 MB of 100 KiB values through backup and restore, compared value by value (hashed).
#[tokio::test(flavor = "multi_thread")]
async fn two_hundred_megabytes_round_trip_through_backup_and_restore() {
    const KEYS: u64 = 2100;
    const VALUE: usize = 100 << 10;
    let bin = etcd(3, 5);
    let (cluster, garage) = tokio::join!(
        TestCluster::builder(&bin)
            .members(3)
            .arg("--quota-backend-bytes=2147483648")
            .start(),
        TestGarage::start()
    );
    let (cluster, garage) = (cluster.unwrap(), garage.unwrap());
    let started = Instant::now();
    let written = fill(
        &connect(&cluster.client_urls()).await,
        "big",
        KEYS,
        VALUE,
        16,
    )
    .await;
    assert!(written >= 200_000_000);
    eprintln!(
        "wrote {} MB in {:.1?}",
        written / 1_000_000,
        started.elapsed()
    );

    let s3 = garage.client().await;
    let record = backup(&cluster, &s3, &destination(&garage, "large"), "main").await;
    eprintln!(
        "backup: {} MB in {:.1} s ({:.0} MB/s upload)",
        record.size / 1_000_000,
        record.duration_seconds,
        record.mb_per_second
    );
    assert!(record.size as u64 >= written);

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("snapshot.db");
    let restore_started = Instant::now();
    fetch_snapshot(
        &s3,
        BUCKET,
        &record.key,
        Some(&record.sha256),
        &path,
        &bin.dir,
        &bin.version,
    )
    .await
    .unwrap();
    let mut restored = RestoredCluster::restore(&bin, &path, 3, dir.path()).await;
    std::fs::remove_file(&path).unwrap();
    restored
        .start(&bin, &["--quota-backend-bytes=2147483648"])
        .await;
    eprintln!(
        "download + restore + start: {:.1?}",
        restore_started.elapsed()
    );

    let got = digests(&connect(&restored.client_urls()).await, 20).await;
    assert_same_data(&got, &expected_digests("big", KEYS, VALUE));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_pinned_download_gets_the_pinned_object_or_refuses_a_replaced_one() {
    let garage = TestGarage::start().await.unwrap();
    let s3 = garage.client().await;
    let dir = tempfile::tempdir().unwrap();
    // A plain upload: no digest anywhere, so the ETag is all that pins it.
    put(
        &s3,
        "manual/x.db",
        value_for(1, 300_000),
        &SnapshotMetadata::default(),
    )
    .await;
    let pinned = pin_object(&s3, BUCKET, "manual/x.db", None).await.unwrap();
    assert_eq!(
        (pinned.sha256.as_deref(), pinned.size),
        (None, Some(300_000))
    );
    let first = download(
        &s3,
        BUCKET,
        "manual/x.db",
        None,
        Some(&pinned.pin),
        &dir.path().join("a"),
    )
    .await
    .unwrap();
    assert_eq!(first.size, 300_000);

    put(
        &s3,
        "manual/x.db",
        value_for(2, 300_000),
        &SnapshotMetadata::default(),
    )
    .await;
    let dest = dir.path().join("b");
    let err = download(&s3, BUCKET, "manual/x.db", None, Some(&pinned.pin), &dest)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::SourceChanged { .. }), "{err:?}");
    assert_eq!(err.reason(), "SourceChanged");
    assert!(
        !err.is_retryable(),
        "restoring another object needs a new restore"
    );
    assert!(!dest.exists() && !dir.path().join("b.part").exists());
    // Unpinned, the replaced object is taken as it is: what members did before pins.
    let unpinned = download(&s3, BUCKET, "manual/x.db", None, None, &dest)
        .await
        .unwrap();
    assert_ne!(unpinned.sha256, first.sha256);

    // A digest given to the pin must be the one the object records.
    let meta = SnapshotMetadata {
        sha256: Some(unpinned.sha256.clone()),
        ..SnapshotMetadata::default()
    };
    put(&s3, "ours/y.db", value_for(2, 300_000), &meta).await;
    let err = pin_object(&s3, BUCKET, "ours/y.db", Some(&"ab".repeat(32)))
        .await
        .unwrap_err();
    assert_eq!(err.reason(), "ShaMismatch");
    let pinned = pin_object(&s3, BUCKET, "ours/y.db", None).await.unwrap();
    assert_eq!(pinned.sha256.as_deref(), Some(unpinned.sha256.as_str()));
    let err = pin_object(&s3, BUCKET, "ours/none.db", None)
        .await
        .unwrap_err();
    assert_eq!(err.reason(), "ObjectMissing");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_download_in_many_ranges_is_the_object_and_an_empty_object_downloads_too() {
    let garage = TestGarage::start().await.unwrap();
    let s3 = garage.client().await;
    let dir = tempfile::tempdir().unwrap();
    let body = value_for(7, 3_000_001);
    let meta = SnapshotMetadata {
        sha256: Some(hex_sha256(&body)),
        ..SnapshotMetadata::default()
    };
    put(&s3, "manual/ranges.db", body.clone(), &meta).await;
    let options = DownloadOptions {
        range_size: 256 << 10,
        ranges_in_flight: 3,
    };
    let dest = dir.path().join("ranges.db");
    let got = download_with(&s3, BUCKET, "manual/ranges.db", None, None, &dest, &options)
        .await
        .unwrap();
    assert_eq!(got.size, 3_000_001);
    assert_eq!(got.timings.ranges, 12, "3 000 001 bytes in 256 KiB ranges");
    assert_eq!(std::fs::read(&dest).unwrap(), body);

    // S3 has no range of an empty object to give (416): it comes whole.
    put(
        &s3,
        "manual/empty.db",
        Vec::new(),
        &SnapshotMetadata::default(),
    )
    .await;
    let dest = dir.path().join("empty.db");
    let got = download_with(&s3, BUCKET, "manual/empty.db", None, None, &dest, &options)
        .await
        .unwrap();
    assert_eq!(got.size, 0);
    assert_eq!(got.sha256, hex_sha256(&[]));
    assert!(dest.exists());
}

#[tokio::test(flavor = "multi_thread")]
async fn an_object_overwritten_between_ranges_fails_the_download_instead_of_mixing_two() {
    let garage = TestGarage::start().await.unwrap();
    let s3 = garage.client().await;
    let dir = tempfile::tempdir().unwrap();
    let old = value_for(1, 40 << 20);
    put(
        &s3,
        "manual/moving.db",
        old.clone(),
        &SnapshotMetadata::default(),
    )
    .await;
    // Small ranges one at a time: hundreds of GETs, so the overwrite lands among them.
    let options = DownloadOptions {
        range_size: 64 << 10,
        ranges_in_flight: 1,
    };
    let dest = dir.path().join("moving.db");
    let part = dir.path().join("moving.db.part");
    let overwrite = {
        let s3 = s3.clone();
        let part = part.clone();
        async move {
            wait_for(Duration::from_secs(60), "download under way", || {
                let size = std::fs::metadata(&part).map(|m| m.len()).unwrap_or(0);
                async move {
                    if size >= 1 << 20 {
                        Ok(())
                    } else {
                        Err("not yet")
                    }
                }
            })
            .await
            .unwrap();
            put(
                &s3,
                "manual/moving.db",
                value_for(2, 40 << 20),
                &SnapshotMetadata::default(),
            )
            .await;
        }
    };
    let (got, ()) = tokio::join!(
        download_with(&s3, BUCKET, "manual/moving.db", None, None, &dest, &options),
        overwrite
    );
    match got {
        Err(err) => {
            assert_eq!(err.reason(), "SourceChanged", "{err:?}");
            assert!(!dest.exists() && !part.exists());
        }
        // Only if the whole download beat the overwrite: then it is all the old object.
        Ok(got) => {
            eprintln!("the download finished before the overwrite landed");
            assert_eq!(got.sha256, hex_sha256(&old));
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn verification_reads_the_object_back_and_refuses_a_bad_one() {
    let (_cluster, garage, record) = one_backup().await;
    let bin = etcd(3, 5);
    let s3 = garage.client().await;
    let scratch = tempfile::tempdir().unwrap();
    let verifier = Verifier {
        tools: SnapshotTools::Dir(bin.dir.clone()),
        scratch_dir: scratch.path().to_owned(),
    };
    let v = verify_backup(&s3, BUCKET, &record, &verifier)
        .await
        .unwrap();
    assert_eq!(v.result, VerificationResult::Verified, "{v:?}");
    assert!(v.revision.unwrap() >= record.revision);
    assert!(v.total_keys.unwrap() >= 200, "{v:?}");

    // Not what was uploaded: another object under the key.
    let mut body = get_bytes(&s3, &record.key).await;
    body[1000] ^= 0xff;
    put(&s3, "p/main/corrupt.db", body, &SnapshotMetadata::default()).await;
    let corrupt = BackupRecord {
        key: "p/main/corrupt.db".into(),
        ..record.clone()
    };
    let err = verify_backup(&s3, BUCKET, &corrupt, &verifier)
        .await
        .unwrap_err();
    assert_eq!(err.reason(), "ShaMismatch", "{err:?}");

    // The digest recorded, but etcd's tool does not take it for a snapshot.
    let junk = value_for(9, 100_000);
    put(
        &s3,
        "p/main/junk.db",
        junk.clone(),
        &SnapshotMetadata::default(),
    )
    .await;
    let junk = BackupRecord {
        key: "p/main/junk.db".into(),
        sha256: hex_sha256(&junk),
        ..record.clone()
    };
    let err = verify_backup(&s3, BUCKET, &junk, &verifier)
        .await
        .unwrap_err();
    assert_eq!(err.reason(), "NotASnapshot", "{err:?}");

    // Without the tool: the digest only, and saying so.
    let no_tools = Verifier {
        tools: SnapshotTools::PerVersion(scratch.path().join("none")),
        scratch_dir: scratch.path().to_owned(),
    };
    let v = verify_backup(&s3, BUCKET, &record, &no_tools)
        .await
        .unwrap();
    assert_eq!(v.result, VerificationResult::DigestOnly);
    assert!(
        v.message.contains("snapshot status not run"),
        "{}",
        v.message
    );
    let err = verify_backup(&s3, BUCKET, &corrupt, &no_tools)
        .await
        .unwrap_err();
    assert_eq!(err.reason(), "ShaMismatch");
    assert_eq!(
        std::fs::read_dir(scratch.path()).unwrap().count(),
        0,
        "no snapshot is left in the scratch dir"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_3_4_backup_is_verified_with_its_own_releases_etcdctl() {
    let bin = etcd(3, 4);
    let (cluster, garage) = started(&bin, 1).await;
    fill(&connect(&cluster.client_urls()).await, "k", 50, 50, 16).await;
    let s3 = garage.client().await;
    let record = backup(&cluster, &s3, &destination(&garage, "p"), "main").await;
    assert!(record.etcd_version.starts_with("3.4."), "{record:?}");
    let scratch = tempfile::tempdir().unwrap();
    // As the local runtime looks: <etcd bin dir>/<the snapshot's version>/, where 3.4 has
    // no etcdutl.
    let verifier = Verifier {
        tools: SnapshotTools::PerVersion(etcd_operator::testing::etcd_bin_dir()),
        scratch_dir: scratch.path().to_owned(),
    };
    assert!(!bin.dir.join("etcdutl").exists());
    let v = verify_backup(&s3, BUCKET, &record, &verifier)
        .await
        .unwrap();
    assert_eq!(v.result, VerificationResult::Verified, "{v:?}");
    assert!(v.total_keys.unwrap() >= 50, "{v:?}");
    assert!(
        v.message
            .contains(&format!("{}/etcdctl", bin.dir.display())),
        "{}",
        v.message
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_upload_that_fails_verification_is_deleted_and_retention_does_not_run() {
    let bin = etcd(3, 5);
    let (cluster, garage) = started(&bin, 1).await;
    let s3 = garage.client().await;
    let dest = destination(&garage, "v");
    let kept = backup(&cluster, &s3, &dest, "main").await;
    // An etcdutl that refuses every snapshot, as it would a corrupt one.
    let tools = tempfile::tempdir().unwrap();
    let fake = tools.path().join("etcdutl");
    std::fs::write(
        &fake,
        "#!/bin/sh\necho 'snapshot file is corrupt' >&2\nexit 1\n",
    )
    .unwrap();
    std::fs::set_permissions(&fake, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let verifier = Verifier {
        tools: SnapshotTools::Dir(tools.path().to_owned()),
        scratch_dir: tools.path().join("scratch"),
    };
    let retention = Retention {
        keep_last: Some(1),
        max_age: None,
    };
    cluster.put("tick", "1").await.unwrap();
    let err = etcd_operator::backup::attempt::run(etcd_operator::backup::attempt::Attempt {
        endpoints: cluster.client_urls(),
        tls: None,
        destination: &dest,
        credentials: Some(garage.credentials()),
        owner: owner("main"),
        retention: Some(&retention),
        verify: Some(&verifier),
    })
    .await
    .unwrap_err();
    assert_eq!(err.reason(), "VerificationFailed", "{err:?}");
    assert!(err.is_retryable());
    let message = etcd_operator::error_chain::error_chain(&err);
    assert!(message.contains("snapshot file is corrupt"), "{message}");
    // The failed one is gone; the earlier one is still there, retention did not run.
    let left: Vec<String> = list_backups(&s3, BUCKET, &scope(Some("v"), "main"))
        .await
        .unwrap()
        .into_iter()
        .map(|b| b.key)
        .collect();
    assert_eq!(left, std::slice::from_ref(&kept.key));

    // With etcd's own tool the same attempt passes, records it, and retention runs.
    let verifier = Verifier {
        tools: SnapshotTools::Dir(bin.dir.clone()),
        scratch_dir: tools.path().join("scratch"),
    };
    let outcome = etcd_operator::backup::attempt::run(etcd_operator::backup::attempt::Attempt {
        endpoints: cluster.client_urls(),
        tls: None,
        destination: &dest,
        credentials: Some(garage.credentials()),
        owner: owner("main"),
        retention: Some(&retention),
        verify: Some(&verifier),
    })
    .await
    .unwrap();
    let v = outcome.record.verification.as_ref().unwrap();
    assert_eq!(v.result, VerificationResult::Verified);
    assert_eq!(
        outcome.pruned.unwrap().unwrap(),
        std::slice::from_ref(&kept.key)
    );
}

/// `zstd`, the plain tool users restore compressed backups with (`scripts/install-deps test`
/// installs it).
fn zstd_bin() -> std::path::PathBuf {
    let found = std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
        .map(|d| d.join("zstd"))
        .find(|p| p.is_file());
    found.unwrap_or_else(|| panic!("zstd not found on PATH: run scripts/install-deps test"))
}

#[tokio::test(flavor = "multi_thread")]
async fn a_compressed_backup_restores_through_our_path_and_through_zstd_and_etcdutl() {
    let bin = etcd(3, 5);
    let (cluster, garage) = started(&bin, 1).await;
    let kv = connect(&cluster.client_urls()).await;
    fill(&kv, "z", 400, 300, 16).await;
    // Text-like values as well, which compress, next to `fill`'s random ones, which do not.
    for i in 0..2000 {
        let value = format!(
            "{{\"id\":{i},\"owner\":\"team-{}\",\"state\":\"ready\"}}",
            i % 9
        );
        kv.clone()
            .put(format!("json/{i:05}"), value, None)
            .await
            .unwrap();
    }
    let s3 = garage.client().await;
    let dest = S3Destination {
        compression: Some(etcd_operator::api::backup::Compression::Zstd),
        ..destination(&garage, "z")
    };
    let record = backup(&cluster, &s3, &dest, "main").await;
    assert!(record.key.ends_with(".db.zst"), "{}", record.key);
    assert!(
        parse_key(&scope(Some("z"), "main"), &record.key).is_some(),
        "retention sees it"
    );
    let head = s3
        .head_object()
        .bucket(BUCKET)
        .key(&record.key)
        .send()
        .await
        .unwrap();
    let meta = SnapshotMetadata::from_map(head.metadata().unwrap());
    assert_eq!(
        meta.compression,
        Some(etcd_operator::api::backup::Compression::Zstd)
    );
    let object = get_bytes(&s3, &record.key).await;
    assert_eq!(
        object.len() as i64,
        record.size,
        "the record is the object's"
    );
    assert_eq!(
        meta.sha256.as_deref(),
        Some(hex_sha256(&object).as_str()),
        "the digest is the object's, as stored"
    );

    // Our path: downloaded, decompressed, checked, restored.
    let dir = tempfile::tempdir().unwrap();
    let ours = dir.path().join("ours.db");
    let fetched = fetch_snapshot(
        &s3,
        BUCKET,
        &record.key,
        Some(&record.sha256),
        &ours,
        &bin.dir,
        &bin.version,
    )
    .await
    .unwrap();
    let plain_size = std::fs::metadata(&ours).unwrap().len();
    assert!(
        (record.size as u64) < plain_size,
        "compressed {} of {plain_size}",
        record.size
    );
    assert!(fetched.revision >= record.revision);
    let want = digests(&kv, 2400).await;
    let mut restored = RestoredCluster::restore(&bin, &ours, 1, &dir.path().join("a")).await;
    restored.start(&bin, &[]).await;
    assert_same_data(
        &digests(&connect(&restored.client_urls()).await, 2400).await,
        &want,
    );
    drop(restored);

    // The plain tools, as README shows: zstd -d, then etcdutl snapshot restore.
    let downloaded = dir.path().join("backup.db.zst");
    std::fs::write(&downloaded, &object).unwrap();
    let plain = dir.path().join("backup.db");
    let out = tokio::process::Command::new(zstd_bin())
        .args(["-d", "-q"])
        .arg(&downloaded)
        .arg("-o")
        .arg(&plain)
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(sha256_file(&plain), sha256_file(&ours), "same snapshot");
    let mut restored = RestoredCluster::restore(&bin, &plain, 1, &dir.path().join("b")).await;
    restored.start(&bin, &[]).await;
    assert_same_data(
        &digests(&connect(&restored.client_urls()).await, 2400).await,
        &want,
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_object_that_claims_compression_but_is_not_fails_to_decompress() {
    let garage = TestGarage::start().await.unwrap();
    let s3 = garage.client().await;
    put(
        &s3,
        "manual/x.db.zst",
        value_for(3, 100_000),
        &SnapshotMetadata::default(),
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("x.db");
    let err = download(&s3, BUCKET, "manual/x.db.zst", None, None, &dest)
        .await
        .unwrap_err();
    assert_eq!(err.reason(), "Decompress", "{err:?}");
    assert!(!err.is_retryable());
    assert!(!dest.exists() && !dir.path().join("x.db.part").exists());
}

fn hex_sha256(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}
