//! The restore init containers of a Pod, run as the kubelet would run them, against real etcd
//! and Garage on loopback: `etcd-operator restore-fetch`, etcd's own tool and
//! `etcd-operator restore-finish`, with the exact arguments and environment the pod runtime
//! gives them (their volume's mount point moved to a temp dir); then etcd on the result.
//! What only a Kubernetes cluster can show (DNS names, the kubelet, Secrets as env) is left
//! to the e2e tests.
//!
//! Needs `ETCD_BIN_DIR` (3.5) and Garage (`scripts/install-test-deps`).

mod support;

use std::path::{Path, PathBuf};

use etcd_operator::api::restore::S3Object;
use etcd_operator::backup::member_restore::EMPTY_SNAPSHOT;
use etcd_operator::backup::member_restore::StepReport;
use etcd_operator::backup::{Owner, download, pin_object, take_backup};
use etcd_operator::runtime::pods::restore::{RestoreContainers, SnapshotSource};
use etcd_operator::runtime::{InitialClusterState, MemberLaunch, Transport};
use etcd_operator::testing::garage::{BUCKET, TestGarage};
use etcd_operator::testing::{EtcdBin, MemberAddr, TestCluster, bin_for_minor, free_port};
use k8s_openapi::api::core::v1::{Container, VolumeMount};
use support::{RestoredCluster, connect, digests, expected_digests, fill};

/// Where the Pod mounts the data volume.
const MOUNT: &str = "/var/lib/etcd";

/// Runs one init container: our own binary for the operator image's, the release's tool for
/// etcd's; mount paths point into `volume`. Returns the termination log it wrote; the
/// container must succeed.
async fn run_container(c: &Container, bin: &EtcdBin, garage: &TestGarage, volume: &Path) -> String {
    let (status, log, stderr) = run_container_once(c, bin, garage, volume).await;
    assert!(status.success(), "{} failed: {stderr}", c.name);
    log
}

/// Runs one init container as [`run_container`] does; returns its exit status, its
/// termination log and its stderr.
async fn run_container_once(
    c: &Container,
    bin: &EtcdBin,
    garage: &TestGarage,
    volume: &Path,
) -> (std::process::ExitStatus, String, String) {
    let moved = |arg: &String| arg.replace(MOUNT, &volume.display().to_string());
    let args: Vec<String> = c.args.iter().flatten().map(moved).collect();
    let termination_log = volume.join(format!("{}.termination-log", c.name));
    let mut cmd = match c.command.as_deref() {
        // The operator image: its entrypoint is this binary.
        None => {
            let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_etcd-operator"));
            cmd.args(&args)
                .arg(format!("--termination-log={}", termination_log.display()));
            cmd
        }
        Some([tool]) => {
            let mut cmd = tokio::process::Command::new(bin.dir.join(tool));
            cmd.args(&args);
            cmd
        }
        Some(other) => panic!("unexpected command {other:?}"),
    };
    for env in c.env.iter().flatten() {
        let value = match (&env.value, env.name.as_str()) {
            (Some(v), _) => v.clone(),
            // What the kubelet takes from the Secret.
            (None, "AWS_ACCESS_KEY_ID") => garage.credentials().access_key_id,
            (None, "AWS_SECRET_ACCESS_KEY") => garage.credentials().secret_access_key().into(),
            (None, _) => continue,
        };
        cmd.env(&env.name, value);
    }
    let output = cmd.output().await.expect("spawn");
    (
        output.status,
        std::fs::read_to_string(termination_log).unwrap_or_default(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn init_containers_restore_every_member_and_a_rerun_keeps_its_data() {
    let bin = bin_for_minor(3, 5).unwrap_or_else(|e| panic!("{e}"));
    let (source, garage) = tokio::join!(TestCluster::start(&bin, 1), TestGarage::start());
    let (source, garage) = (source.unwrap(), garage.unwrap());
    fill(&connect(&source.client_urls()).await, "k", 500, 100, 16).await;
    let destination = etcd_operator::api::backup::S3Destination {
        bucket: BUCKET.into(),
        prefix: Some("prod".into()),
        connection: garage.connection(),
        part_size_mib: None,
        compression: None,
        sign_payload: None,
    };
    let s3 = garage.client().await;
    let admin = source.admin().await.unwrap();
    let record = take_backup(
        &admin,
        None,
        &s3,
        &destination,
        &Owner {
            namespace: "default",
            cluster: "main",
            backup: "nightly",
            cluster_uid: None,
        },
    )
    .await
    .unwrap();
    drop(source);

    let port = || free_port().expect("free port");
    let members: Vec<MemberAddr> = (0..3)
        .map(|i| MemberAddr {
            name: format!("restored-{i}"),
            client_url: format!("http://127.0.0.1:{}", port()),
            peer_url: format!("http://127.0.0.1:{}", port()),
        })
        .collect();
    let initial_cluster: Vec<(String, String)> = members
        .iter()
        .map(|m| (m.name.clone(), m.peer_url.clone()))
        .collect();
    let snapshot = SnapshotSource {
        object: S3Object {
            bucket: BUCKET.into(),
            key: record.key.clone(),
            connection: etcd_operator::api::s3::S3Connection {
                credentials_secret: Some("s3-creds".into()),
                ..garage.connection()
            },
        },
        sha256: None,
        etag: None,
        version_id: None,
    };
    let containers = RestoreContainers {
        source: &snapshot,
        operator_image: "etcd-operator:dev",
        etcd_image: "etcd".into(),
        data_mount: VolumeMount::default(),
        security_context: Default::default(),
        resources: None,
    };
    let dir = tempfile::tempdir().unwrap();
    let mut data_dirs: Vec<PathBuf> = Vec::new();
    let mut init = Vec::new();
    for m in &members {
        let launch = MemberLaunch {
            name: m.name.clone(),
            version: bin.version.clone(),
            initial_cluster: initial_cluster.clone(),
            state: InitialClusterState::New,
            cluster_token: "restored".into(),
            options: None,
            transport: Transport::Plain,
        };
        let volume = dir.path().join(&m.name);
        std::fs::create_dir_all(&volume).unwrap();
        let pod_init = containers.for_member(&launch, "/var/lib/etcd/data");
        let fetched = run_container(&pod_init[0], &bin, &garage, &volume).await;
        assert_eq!(
            StepReport::parse(&fetched),
            Some(StepReport::Fetched {
                sha256: record.sha256.clone(),
                size: record.size as u64,
                revision: Some(record.revision),
            })
        );
        for c in &pod_init[1..] {
            run_container(c, &bin, &garage, &volume).await;
        }
        assert!(
            !volume.join("restore/snapshot.db").exists(),
            "staging removed"
        );
        data_dirs.push(volume.join("data"));
        init.push((volume, pod_init));
    }

    let mut restored = RestoredCluster::from_data_dirs(members.clone(), data_dirs.clone());
    restored.start(&bin, &[]).await;
    let kv = connect(&restored.client_urls()).await;
    let want = expected_digests("k", 500, 100);
    assert_eq!(digests(&kv, 500).await, want);
    kv.clone().put("after-restore", "1", None).await.unwrap();
    drop(kv);
    drop(restored);

    // The Pods' sandboxes are recreated: every init container runs again, on the data.
    for (volume, pod_init) in &init {
        let again = run_container(&pod_init[0], &bin, &garage, volume).await;
        assert_eq!(StepReport::parse(&again), Some(StepReport::AlreadyRestored));
        for c in &pod_init[1..] {
            run_container(c, &bin, &garage, volume).await;
        }
    }
    let mut restarted = RestoredCluster::from_data_dirs(members, data_dirs);
    restarted.start(&bin, &[]).await;
    let kv = connect(&restarted.client_urls()).await;
    let after = kv.clone().get("after-restore", None).await.unwrap();
    assert_eq!(
        after.kvs().len(),
        1,
        "writes after the restore survive a rerun"
    );
}

/// The pod runtime's restore containers for `members`, restoring `source`.
fn pod_init(source: &SnapshotSource, bin: &EtcdBin, member: &str) -> Vec<Container> {
    let containers = RestoreContainers {
        source,
        operator_image: "etcd-operator:dev",
        etcd_image: "etcd".into(),
        data_mount: VolumeMount::default(),
        security_context: Default::default(),
        resources: None,
    };
    let launch = MemberLaunch {
        name: member.into(),
        version: bin.version.clone(),
        initial_cluster: vec![(member.into(), "http://127.0.0.1:2380".into())],
        state: InitialClusterState::New,
        cluster_token: "restored".into(),
        options: None,
        transport: Transport::Plain,
    };
    containers.for_member(&launch, "/var/lib/etcd/data")
}

#[tokio::test(flavor = "multi_thread")]
async fn a_member_refuses_an_object_overwritten_after_the_restore_pinned_it() {
    let bin = bin_for_minor(3, 5).unwrap_or_else(|e| panic!("{e}"));
    let (source, garage) = tokio::join!(TestCluster::start(&bin, 1), TestGarage::start());
    let (source, garage) = (source.unwrap(), garage.unwrap());
    fill(&connect(&source.client_urls()).await, "k", 100, 100, 16).await;
    let s3 = garage.client().await;
    let destination = etcd_operator::api::backup::S3Destination {
        bucket: BUCKET.into(),
        prefix: Some("prod".into()),
        connection: garage.connection(),
        part_size_mib: None,
        compression: None,
        sign_payload: None,
    };
    let owner = Owner {
        namespace: "default",
        cluster: "main",
        backup: "nightly",
        cluster_uid: None,
    };
    let admin = source.admin().await.unwrap();
    let record = take_backup(&admin, None, &s3, &destination, &owner)
        .await
        .unwrap();
    drop(source);
    // The snapshot as a user uploads it by hand: a plain object without our metadata, so no
    // digest anywhere; only the pin's ETag keeps members on one object.
    let dir = tempfile::tempdir().unwrap();
    let snapshot = download(
        &s3,
        BUCKET,
        &record.key,
        None,
        None,
        &dir.path().join("s.db"),
    )
    .await
    .unwrap();
    let plain = "manual/main.db";
    let upload = |body: Vec<u8>| {
        s3.put_object()
            .bucket(BUCKET)
            .key(plain)
            .body(body.into())
            .send()
    };
    upload(std::fs::read(&snapshot.path).unwrap())
        .await
        .unwrap();

    // What the restore controller does once, before creating any member.
    let pinned = pin_object(&s3, BUCKET, plain, None).await.unwrap();
    assert_eq!(pinned.sha256, None, "a plain object records no digest");
    let object = S3Object {
        bucket: BUCKET.into(),
        key: plain.into(),
        connection: etcd_operator::api::s3::S3Connection {
            credentials_secret: Some("s3-creds".into()),
            ..garage.connection()
        },
    };
    let pinned_source = SnapshotSource {
        object: object.clone(),
        sha256: pinned.sha256.clone(),
        etag: Some(pinned.pin.etag.clone()),
        version_id: pinned.pin.version_id.clone(),
    };

    let first = dir.path().join("restored-0");
    std::fs::create_dir_all(&first).unwrap();
    let init = pod_init(&pinned_source, &bin, "restored-0");
    let fetched = run_container(&init[0], &bin, &garage, &first).await;
    assert_eq!(
        StepReport::parse(&fetched),
        Some(StepReport::Fetched {
            sha256: snapshot.sha256.clone(),
            size: snapshot.size,
            revision: None,
        })
    );

    // Someone replaces the key with another valid snapshot mid-restore.
    upload(EMPTY_SNAPSHOT.to_vec()).await.unwrap();
    let second = dir.path().join("restored-1");
    std::fs::create_dir_all(&second).unwrap();
    let init = pod_init(&pinned_source, &bin, "restored-1");
    let (status, log, stderr) = run_container_once(&init[0], &bin, &garage, &second).await;
    assert!(!status.success(), "the fetch must fail: {log}");
    match StepReport::parse(&log) {
        Some(StepReport::Failed {
            reason,
            retryable,
            message,
        }) => {
            assert_eq!(reason, "SourceChanged", "{message}");
            assert!(!retryable);
            assert!(message.contains(&pinned.pin.etag), "{message}");
        }
        other => panic!("expected a failure report, got {other:?} ({stderr})"),
    }
    assert!(
        !second.join("restore/snapshot.db").exists() && !second.join("data").exists(),
        "nothing staged: the restore tool and etcd have nothing to start from"
    );

    // Without the pin (a cluster restored before pins) the member takes the new object: the
    // split this prevents.
    let unpinned = SnapshotSource {
        etag: None,
        version_id: None,
        ..pinned_source
    };
    let third = dir.path().join("restored-2");
    std::fs::create_dir_all(&third).unwrap();
    let init = pod_init(&unpinned, &bin, "restored-2");
    let fetched = run_container(&init[0], &bin, &garage, &third).await;
    match StepReport::parse(&fetched) {
        Some(StepReport::Fetched { sha256, .. }) => assert_ne!(sha256, snapshot.sha256),
        other => panic!("expected a fetch, got {other:?}"),
    }
}
