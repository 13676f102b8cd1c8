//! The Kubernetes objects of one cluster's members, built without I/O: the headless and
//! client Services, the PodDisruptionBudget, each member's PVC and Pod, their labels and
//! the launch annotation a Pod is recreated from. Sending them is `pods.rs`'s job.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Affinity, Capabilities, Container, ContainerPort, EmptyDirVolumeSource, HTTPGetAction,
    PersistentVolumeClaim, PersistentVolumeClaimSpec, PersistentVolumeClaimVolumeSource, Pod,
    PodAffinityTerm, PodAntiAffinity, PodSecurityContext, PodSpec, Probe, SeccompProfile,
    SecretVolumeSource, SecurityContext, Service, ServicePort, ServiceSpec, Volume, VolumeMount,
    VolumeResourceRequirements, WeightedPodAffinityTerm,
};
use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde::{Deserialize, Serialize};

use super::restore::{RestoreContainers, SnapshotSource};
use crate::api::cluster::{EtcdClusterSpec, EtcdOptions, RetentionPolicyType};
use crate::runtime::flags::{option_flags, transport_flags};
use crate::runtime::{
    ClusterRef, Error, InitialClusterState, MemberAddress, MemberLaunch, TlsFiles, Transport,
};

/// The field manager of every object this runtime writes.
pub const FIELD_MANAGER: &str = "etcd-operator";
pub const CLIENT_PORT: i32 = 2379;
pub const PEER_PORT: i32 = 2380;
/// Plain HTTP `/health` and `/metrics` of a TLS member, for probes and scrapers.
pub const METRICS_PORT: i32 = 2381;
/// Where a TLS member's certificates are mounted (the member Secret's entries as files).
pub const TLS_MOUNT: &str = "/etc/etcd/tls";
pub const TLS_VOLUME: &str = "tls";
/// The member container's name.
pub const CONTAINER: &str = "etcd";
/// The data volume's name and where it is mounted.
pub const DATA_VOLUME: &str = "data";
pub const DATA_MOUNT: &str = "/var/lib/etcd";
/// etcd's data dir: a subdirectory, so etcd creates it with the 0700 mode it insists on.
pub const DATA_DIR: &str = "/var/lib/etcd/data";
/// The user and group members run as (distroless' `nonroot`).
pub const MEMBER_UID: i64 = 65532;

pub const LABEL_NAME: &str = "app.kubernetes.io/name";
pub const LABEL_INSTANCE: &str = "app.kubernetes.io/instance";
pub const LABEL_MANAGED_BY: &str = "app.kubernetes.io/managed-by";
/// Selects every object of a cluster; Services and the PDB select pods by it alone.
pub const LABEL_CLUSTER: &str = "etcd.operator.dev/cluster";
pub const LABEL_MEMBER: &str = "etcd.operator.dev/member";
/// The uid of the EtcdCluster that created a PVC: a retained PVC outlives its cluster, and
/// a later cluster of the same name must tell it from its own.
pub const LABEL_CLUSTER_UID: &str = "etcd.operator.dev/cluster-uid";
/// The version a member runs (Pod) or last ran (PVC).
pub const LABEL_VERSION: &str = "etcd.operator.dev/version";
/// On a PVC a recovery from lost quorum kept aside: the cluster it was a member of (the
/// cluster label is removed, so the cluster no longer selects it).
pub const LABEL_KEPT_FROM: &str = "etcd.operator.dev/kept-from";
/// On a PVC a recovery kept aside: the recovery (its UTC start time).
pub const LABEL_KEPT_BY: &str = "etcd.operator.dev/kept-by-recovery";
/// A member's launch as JSON (`LaunchAnnotation`), on its Pod and on its PVC.
pub const ANNOTATION_LAUNCH: &str = "etcd.operator.dev/launch";

/// Where a member's data lives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DataVolume {
    /// The PVC named like the member.
    Pvc,
    /// An emptyDir, gone with the Pod.
    EmptyDir,
}

/// Builds the objects of one cluster from its identity and spec.
#[derive(Clone, Debug)]
pub struct Objects {
    pub cluster: ClusterRef,
    pub owner: OwnerReference,
    pub spec: EtcdClusterSpec,
    /// The snapshot a restored cluster's bootstrap members start from.
    pub restore: Option<SnapshotSource>,
    /// The operator's own image, which runs two of the restore init containers.
    pub operator_image: Option<String>,
}

impl Objects {
    /// The member's stable DNS addresses: `<name>.<cluster>.<ns>.svc`, resolvable through
    /// the headless Service as soon as the Pod exists.
    pub fn address(&self, name: &str, transport: Transport) -> MemberAddress {
        let host = format!(
            "{name}.{}.{}.svc",
            self.cluster.name, self.cluster.namespace
        );
        let scheme = transport.scheme();
        MemberAddress {
            name: name.to_string(),
            peer_url: format!("{scheme}://{host}:{PEER_PORT}"),
            client_url: format!("{scheme}://{host}:{CLIENT_PORT}"),
        }
    }

    /// Every name a member is reached by, for the server and peer certificates: members
    /// through the headless Service (a wildcard: etcd accepts a peer whose address
    /// reverse-resolves under it), the client Service, and loopback inside the Pod.
    pub fn certificate_names(&self) -> Vec<String> {
        let (cluster, ns) = (&self.cluster.name, &self.cluster.namespace);
        let client = client_service_name(&self.cluster);
        vec![
            format!("*.{cluster}.{ns}.svc"),
            format!("*.{cluster}.{ns}.svc.cluster.local"),
            client.clone(),
            format!("{client}.{ns}"),
            format!("{client}.{ns}.svc"),
            format!("{client}.{ns}.svc.cluster.local"),
            "localhost".into(),
            "127.0.0.1".into(),
        ]
    }

    /// What a provided server or peer certificate must carry: the name every member is
    /// dialled at, as a wildcard (`*.<cluster>.<ns>.svc`, see [`Self::address`]), and for
    /// peers also the name a member's Pod IP resolves back to
    /// (`*.<cluster>.<ns>.svc.cluster.local`): etcd checks a peer's client certificate
    /// against the reverse DNS name of its address (found on a real cluster: without it
    /// members refuse each other and never form).
    pub fn provided_certificate_names(&self) -> crate::certs::provided::RequiredNames {
        let dialled = format!("*.{}.{}.svc", self.cluster.name, self.cluster.namespace);
        crate::certs::provided::RequiredNames {
            server: vec![dialled.clone()],
            peer: vec![dialled.clone(), format!("{dialled}.cluster.local")],
        }
    }

    /// Where new members keep their data, as the spec says (a PVC when unset).
    pub fn spec_volume(&self) -> DataVolume {
        match self.spec.pvc_storage() {
            Some(_) => DataVolume::Pvc,
            None => DataVolume::EmptyDir,
        }
    }

    /// `<repository>:v<version>`.
    pub fn image(&self, version: &semver::Version) -> String {
        format!("{}:v{version}", self.spec.repository_or_default())
    }

    /// The headless Service `<cluster>` giving each member its DNS name. Not-ready
    /// addresses are published: peers must resolve each other before any is healthy.
    pub fn headless_service(&self) -> Service {
        Service {
            metadata: self.meta(&self.cluster.name, self.cluster_labels()),
            spec: Some(ServiceSpec {
                cluster_ip: Some("None".into()),
                publish_not_ready_addresses: Some(true),
                selector: Some(self.selector_labels()),
                ports: Some(vec![
                    service_port("client", CLIENT_PORT),
                    service_port("peer", PEER_PORT),
                ]),
                ..Default::default()
            }),
            status: None,
        }
    }

    /// The Service `<cluster>-client` clients connect to; only ready members serve.
    pub fn client_service(&self) -> Service {
        Service {
            metadata: self.meta(&client_service_name(&self.cluster), self.cluster_labels()),
            spec: Some(ServiceSpec {
                selector: Some(self.selector_labels()),
                ports: Some(vec![service_port("client", CLIENT_PORT)]),
                ..Default::default()
            }),
            status: None,
        }
    }

    /// The PodDisruptionBudget `<cluster>`: an integer `minAvailable` equal to the quorum of
    /// `spec.size`, so exactly the evictions that keep quorum are allowed (one at a time for
    /// 3 members, none while a member is not ready). `maxUnavailable` would need a scale
    /// subresource on EtcdCluster to count the expected pods: without one the disruption
    /// controller allows no eviction at all and `kubectl drain` hangs (issue 9, item 1).
    pub fn pod_disruption_budget(&self) -> PodDisruptionBudget {
        let size = usize::try_from(self.spec.size).unwrap_or(0);
        let min_available = i32::try_from(crate::plan::quorum::quorum(size)).unwrap_or(i32::MAX);
        PodDisruptionBudget {
            metadata: self.meta(&self.cluster.name, self.cluster_labels()),
            spec: Some(PodDisruptionBudgetSpec {
                min_available: Some(IntOrString::Int(min_available)),
                selector: Some(LabelSelector {
                    match_labels: Some(self.selector_labels()),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            status: None,
        }
    }

    /// The member's data PVC, carrying its launch so a lost Pod can be recreated; `None`
    /// when the spec asks for `storage.emptyDir`.
    ///
    /// It is labelled with the cluster's uid ([`LABEL_CLUSTER_UID`]). The cluster owns it
    /// only with `retentionPolicy.whenDeleted: Delete`: an owner reference is what makes the
    /// garbage collector delete it with the cluster (or with the CRD).
    ///
    /// # Errors
    /// [`Error::EncodeLaunch`].
    pub fn pvc(&self, launch: &MemberLaunch) -> Result<Option<PersistentVolumeClaim>, Error> {
        let Some(pvc) = self.spec.pvc_storage() else {
            return Ok(None);
        };
        let mut labels = self.member_labels(launch);
        labels.insert(LABEL_CLUSTER_UID.to_string(), self.owner.uid.clone());
        let mut meta = self.meta(&launch.name, labels);
        if pvc.when_deleted() == RetentionPolicyType::Retain {
            meta.owner_references = None;
        }
        meta.annotations = Some(BTreeMap::from([(
            ANNOTATION_LAUNCH.to_string(),
            LaunchAnnotation::encode(launch)?,
        )]));
        Ok(Some(PersistentVolumeClaim {
            metadata: meta,
            spec: Some(PersistentVolumeClaimSpec {
                access_modes: Some(vec!["ReadWriteOnce".into()]),
                storage_class_name: pvc.storage_class_name.clone(),
                resources: Some(VolumeResourceRequirements {
                    requests: Some(BTreeMap::from([(
                        "storage".to_string(),
                        Quantity(pvc.size.clone()),
                    )])),
                    limits: None,
                }),
                ..Default::default()
            }),
            status: None,
        }))
    }

    /// The member's Pod for `launch`, its data on `volume`.
    ///
    /// The launch (etcd flags and version) is frozen in the Pod's annotation; the rest
    /// (repository, resources, pod overrides) follows the current spec. A bootstrap member
    /// of a restored cluster gets the restore init containers (see `restore.rs`).
    ///
    /// # Errors
    /// [`Error::ReservedFlag`] when `extraArgs` sets a flag the runtime owns;
    /// [`Error::EncodeLaunch`]; [`Error::MissingOperatorImage`] for a restored member when
    /// the operator does not know its image.
    #[cfg(test)]
    pub fn pod(&self, launch: &MemberLaunch, volume: DataVolume) -> Result<Pod, Error> {
        self.pod_once(launch, volume, &[])
    }

    /// [`Self::pod`] whose etcd gets `once` after its flags: for this Pod only, never in the
    /// launch annotation, so the Pod a later restart creates runs without them.
    pub fn pod_once(
        &self,
        launch: &MemberLaunch,
        volume: DataVolume,
        once: &[String],
    ) -> Result<Pod, Error> {
        // TLS listeners (probed on the plaintext metrics port); certificates mounted for
        // them, or for a plaintext member dialling TLS peers.
        let tls = launch.transport == Transport::Tls;
        let certs = launch.transport.has_certificates();
        let name = launch.name.as_str();
        let policy = self.spec.pod.clone().unwrap_or_default();
        // The user's labels and annotations first, so ours win.
        let mut labels = policy.labels.clone();
        labels.extend(self.member_labels(launch));
        let mut annotations = policy.annotations.clone();
        annotations.insert(
            ANNOTATION_LAUNCH.to_string(),
            LaunchAnnotation::encode(launch)?,
        );
        let mut meta = self.meta(name, labels);
        meta.annotations = Some(annotations);
        let data_mount = VolumeMount {
            name: DATA_VOLUME.into(),
            mount_path: DATA_MOUNT.into(),
            ..Default::default()
        };
        let init_containers = match (&self.restore, launch.state) {
            (Some(source), InitialClusterState::New) => {
                let operator_image =
                    self.operator_image
                        .as_deref()
                        .ok_or_else(|| Error::MissingOperatorImage {
                            cluster: self.cluster.clone(),
                        })?;
                let containers = RestoreContainers {
                    source,
                    operator_image,
                    etcd_image: self.image(&launch.version),
                    data_mount: data_mount.clone(),
                    security_context: container_security(),
                    resources: self.spec.resources.clone(),
                };
                Some(containers.for_member(launch, DATA_DIR))
            }
            _ => None,
        };
        let container = Container {
            name: CONTAINER.into(),
            image: Some(self.image(&launch.version)),
            command: Some(vec!["etcd".into()]),
            args: Some({
                let mut args = self.flags(launch)?;
                args.extend(once.iter().cloned());
                args
            }),
            ports: Some(
                [
                    container_port("client", CLIENT_PORT),
                    container_port("peer", PEER_PORT),
                ]
                .into_iter()
                .chain(tls.then(|| container_port("metrics", METRICS_PORT)))
                .collect(),
            ),
            volume_mounts: Some(
                std::iter::once(data_mount)
                    .chain(certs.then(|| VolumeMount {
                        name: TLS_VOLUME.into(),
                        mount_path: TLS_MOUNT.into(),
                        read_only: Some(true),
                        ..Default::default()
                    }))
                    .collect(),
            ),
            resources: self.spec.resources.clone(),
            readiness_probe: Some(readiness_probe(if tls {
                METRICS_PORT
            } else {
                CLIENT_PORT
            })),
            security_context: Some(container_security()),
            ..Default::default()
        };
        let volume = match volume {
            DataVolume::Pvc => Volume {
                name: DATA_VOLUME.into(),
                persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                    claim_name: name.to_string(),
                    read_only: None,
                }),
                ..Default::default()
            },
            DataVolume::EmptyDir => {
                let e = self
                    .spec
                    .storage
                    .as_ref()
                    .and_then(|s| s.empty_dir.clone())
                    .unwrap_or_default();
                Volume {
                    name: DATA_VOLUME.into(),
                    empty_dir: Some(EmptyDirVolumeSource {
                        medium: e.memory.then(|| "Memory".to_string()),
                        size_limit: e.size_limit.map(Quantity),
                    }),
                    ..Default::default()
                }
            }
        };
        Ok(Pod {
            metadata: meta,
            spec: Some(PodSpec {
                hostname: Some(name.to_string()),
                subdomain: Some(self.cluster.name.clone()),
                init_containers,
                containers: vec![container],
                volumes: Some(
                    std::iter::once(volume)
                        .chain(certs.then(|| Volume {
                            name: TLS_VOLUME.into(),
                            secret: Some(SecretVolumeSource {
                                secret_name: Some(member_tls_secret_name(&self.cluster)),
                                // Readable by the member's user only (fsGroup owns it).
                                default_mode: Some(0o440),
                                ..Default::default()
                            }),
                            ..Default::default()
                        }))
                        .collect(),
                ),
                security_context: Some(PodSecurityContext {
                    run_as_non_root: Some(true),
                    run_as_user: Some(MEMBER_UID),
                    run_as_group: Some(MEMBER_UID),
                    fs_group: Some(MEMBER_UID),
                    seccomp_profile: Some(SeccompProfile {
                        type_: "RuntimeDefault".into(),
                        localhost_profile: None,
                    }),
                    ..Default::default()
                }),
                affinity: Some(
                    policy
                        .affinity
                        .unwrap_or_else(|| self.spread_across_nodes()),
                ),
                node_selector: (!policy.node_selector.is_empty()).then_some(policy.node_selector),
                tolerations: (!policy.tolerations.is_empty()).then_some(policy.tolerations),
                priority_class_name: policy.priority_class_name,
                // etcd reads ETCD_* variables as flags; service links would inject some
                // (`ETCD_CLIENT_PORT` for a cluster named `etcd`).
                enable_service_links: Some(false),
                // etcd never talks to the API server.
                automount_service_account_token: Some(false),
                ..Default::default()
            }),
            status: None,
        })
    }

    /// The etcd command line after `etcd`: listen on every interface, advertise DNS names.
    pub fn flags(&self, launch: &MemberLaunch) -> Result<Vec<String>, Error> {
        let address = self.address(&launch.name, launch.transport);
        let scheme = launch.transport.scheme();
        let initial_cluster = launch
            .initial_cluster
            .iter()
            .map(|(name, url)| format!("{name}={url}"))
            .collect::<Vec<_>>()
            .join(",");
        let mut flags = vec![
            format!("--name={}", launch.name),
            format!("--data-dir={DATA_DIR}"),
            format!("--listen-client-urls={scheme}://0.0.0.0:{CLIENT_PORT}"),
            format!("--advertise-client-urls={}", address.client_url),
            format!("--listen-peer-urls={scheme}://0.0.0.0:{PEER_PORT}"),
            format!("--initial-advertise-peer-urls={}", address.peer_url),
            format!("--initial-cluster={initial_cluster}"),
            format!("--initial-cluster-state={}", launch.state.as_flag()),
            format!("--initial-cluster-token={}", launch.cluster_token),
        ];
        flags.extend(transport_flags(
            launch.transport,
            &launch.name,
            Some(&TlsFiles::in_dir(TLS_MOUNT)),
        )?);
        if launch.transport == Transport::Tls {
            // The client port wants a certificate the kubelet has not: probes go here.
            flags.push(format!(
                "--listen-metrics-urls=http://0.0.0.0:{METRICS_PORT}"
            ));
        }
        if let Some(options) = &launch.options {
            flags.extend(option_flags(options)?);
        }
        Ok(flags)
    }

    /// Labels every object of the cluster carries.
    pub fn cluster_labels(&self) -> BTreeMap<String, String> {
        BTreeMap::from([
            (LABEL_NAME.to_string(), "etcd".to_string()),
            (LABEL_INSTANCE.to_string(), self.cluster.name.clone()),
            (LABEL_MANAGED_BY.to_string(), FIELD_MANAGER.to_string()),
            (LABEL_CLUSTER.to_string(), self.cluster.name.clone()),
        ])
    }

    /// Whether a PVC listed under this cluster's name was created by this cluster (and not
    /// by an earlier one of the same name): by its uid label, or, for PVCs made before that
    /// label, by its controller owner.
    pub fn is_own_pvc(&self, pvc: &PersistentVolumeClaim) -> bool {
        let uid = &self.owner.uid;
        match pvc
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(LABEL_CLUSTER_UID))
        {
            Some(label) => label == uid,
            None => pvc
                .metadata
                .owner_references
                .iter()
                .flatten()
                .any(|o| o.controller == Some(true) && &o.uid == uid),
        }
    }

    /// This cluster is the Pod's controller owner. A Pod of the same name owned by another
    /// uid belongs to an earlier cluster of the name (being garbage-collected, or orphaned)
    /// and is never taken for a member (issue 9, item 5).
    pub fn is_own_pod(&self, pod: &Pod) -> bool {
        pod.metadata
            .owner_references
            .iter()
            .flatten()
            .any(|o| o.controller == Some(true) && o.uid == self.owner.uid)
    }

    /// `etcd.operator.dev/cluster=<cluster>`, for list calls.
    pub fn selector(&self) -> String {
        format!("{LABEL_CLUSTER}={}", self.cluster.name)
    }

    fn selector_labels(&self) -> BTreeMap<String, String> {
        BTreeMap::from([(LABEL_CLUSTER.to_string(), self.cluster.name.clone())])
    }

    fn member_labels(&self, launch: &MemberLaunch) -> BTreeMap<String, String> {
        let mut labels = self.cluster_labels();
        labels.insert(LABEL_MEMBER.to_string(), launch.name.clone());
        labels.insert(LABEL_VERSION.to_string(), launch.version.to_string());
        labels
    }

    pub(super) fn meta(&self, name: &str, labels: BTreeMap<String, String>) -> ObjectMeta {
        ObjectMeta {
            name: Some(name.to_string()),
            namespace: Some(self.cluster.namespace.clone()),
            labels: Some(labels),
            owner_references: Some(vec![self.owner.clone()]),
            ..Default::default()
        }
    }

    /// Preferred, not required: a cluster larger than the node count must still schedule.
    fn spread_across_nodes(&self) -> Affinity {
        Affinity {
            pod_anti_affinity: Some(PodAntiAffinity {
                preferred_during_scheduling_ignored_during_execution: Some(vec![
                    WeightedPodAffinityTerm {
                        weight: 100,
                        pod_affinity_term: PodAffinityTerm {
                            label_selector: Some(LabelSelector {
                                match_labels: Some(self.selector_labels()),
                                ..Default::default()
                            }),
                            topology_key: "kubernetes.io/hostname".into(),
                            ..Default::default()
                        },
                    },
                ]),
                required_during_scheduling_ignored_during_execution: None,
            }),
            ..Default::default()
        }
    }
}

/// `<cluster>-member-tls`: the CA certificate and the server and peer certificates and
/// keys every member mounts.
pub fn member_tls_secret_name(cluster: &ClusterRef) -> String {
    format!("{}-member-tls", cluster.name)
}

/// `<cluster>-client`.
pub fn client_service_name(cluster: &ClusterRef) -> String {
    format!("{}-client", cluster.name)
}

/// Every container of a member Pod: no privileges, read-only root, non-root.
fn container_security() -> SecurityContext {
    SecurityContext {
        allow_privilege_escalation: Some(false),
        read_only_root_filesystem: Some(true),
        run_as_non_root: Some(true),
        capabilities: Some(Capabilities {
            drop: Some(vec!["ALL".into()]),
            add: None,
        }),
        ..Default::default()
    }
}

/// `GET /health` on the client port (the metrics port of a TLS member), which every
/// supported version (3.4–3.6) serves. It fails while the member has no leader, has an
/// alarm raised or is a learner, so such a member gets no client traffic and the PDB
/// blocks evictions until it recovers.
fn readiness_probe(port: i32) -> Probe {
    Probe {
        http_get: Some(HTTPGetAction {
            path: Some("/health".into()),
            port: IntOrString::Int(port),
            ..Default::default()
        }),
        period_seconds: Some(5),
        timeout_seconds: Some(5),
        failure_threshold: Some(3),
        ..Default::default()
    }
}

fn service_port(name: &str, port: i32) -> ServicePort {
    ServicePort {
        name: Some(name.into()),
        port,
        target_port: Some(IntOrString::Int(port)),
        ..Default::default()
    }
}

fn container_port(name: &str, port: i32) -> ContainerPort {
    ContainerPort {
        name: Some(name.into()),
        container_port: port,
        ..Default::default()
    }
}

/// [`MemberLaunch`] as stored in [`ANNOTATION_LAUNCH`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LaunchAnnotation {
    pub name: String,
    #[serde(with = "version_string")]
    pub version: semver::Version,
    pub initial_cluster: Vec<InitialPeer>,
    pub state: InitialClusterState,
    pub cluster_token: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub options: Option<EtcdOptions>,
    /// Absent on members made before TLS existed: they are plaintext.
    #[serde(default = "plain", skip_serializing_if = "is_plain")]
    pub transport: Transport,
}

fn plain() -> Transport {
    Transport::Plain
}

fn is_plain(t: &Transport) -> bool {
    *t == Transport::Plain
}

/// One `--initial-cluster` entry.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct InitialPeer {
    pub name: String,
    #[serde(rename = "peerURL")]
    pub peer_url: String,
}

impl LaunchAnnotation {
    /// The annotation value for `launch`.
    ///
    /// # Errors
    /// [`Error::EncodeLaunch`] (plain strings and numbers; not expected to happen).
    pub fn encode(launch: &MemberLaunch) -> Result<String, Error> {
        let a = Self {
            name: launch.name.clone(),
            version: launch.version.clone(),
            initial_cluster: launch
                .initial_cluster
                .iter()
                .map(|(name, peer_url)| InitialPeer {
                    name: name.clone(),
                    peer_url: peer_url.clone(),
                })
                .collect(),
            state: launch.state,
            cluster_token: launch.cluster_token.clone(),
            options: launch.options.clone(),
            transport: launch.transport,
        };
        serde_json::to_string(&a).map_err(|source| Error::EncodeLaunch {
            name: launch.name.clone(),
            source,
        })
    }

    /// The launch stored in an object's annotations.
    ///
    /// # Errors
    /// [`Error::MissingLaunch`] without the annotation, [`Error::ParseLaunch`] when it is
    /// not one.
    pub fn decode(kind: &'static str, meta: &ObjectMeta) -> Result<MemberLaunch, Error> {
        let name = meta.name.clone().unwrap_or_default();
        let value = meta
            .annotations
            .as_ref()
            .and_then(|a| a.get(ANNOTATION_LAUNCH))
            .ok_or_else(|| Error::MissingLaunch {
                kind,
                name: name.clone(),
            })?;
        let a: Self = serde_json::from_str(value).map_err(|source| Error::ParseLaunch {
            kind,
            name,
            source,
        })?;
        Ok(MemberLaunch {
            name: a.name,
            version: a.version,
            initial_cluster: a
                .initial_cluster
                .into_iter()
                .map(|p| (p.name, p.peer_url))
                .collect(),
            state: a.state,
            cluster_token: a.cluster_token,
            options: a.options,
            transport: a.transport,
        })
    }
}

/// `semver::Version` as its string (the crate's serde feature is not enabled here).
mod version_string {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &semver::Version, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(v)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<semver::Version, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}
