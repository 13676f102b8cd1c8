//! [`PodRuntime`]: the members of one `EtcdCluster` as Pods, with a headless Service for
//! their DNS names, a client Service, a PodDisruptionBudget and, unless the spec asks for
//! `storage.emptyDir`, one PVC per member. The objects themselves are built in `objects.rs`; talking to etcd and
//! deciding what to do are the admin layer's and the planner's jobs.
//!
//! # Decisions
//! - **Readiness**: `GET /health` on 2379, served by every supported version (3.4–3.6).
//!   It fails for learners and for members without a leader, which keeps them out of the
//!   client Service and makes the PDB refuse evictions until they recover. There is no
//!   liveness probe: killing members of a cluster that lost quorum only makes recovery
//!   harder; crashes are already restarted by the kubelet.
//! - **Upgrade**: a Pod's image is mutable, so an upgrade patches it in place; the kubelet
//!   restarts the container and an emptyDir survives. Only a restart without a new version
//!   deletes the Pod, which is refused for emptyDir members ([`Error::RestartLosesData`]).
//! - **Launch**: the launch (flags and version) is kept as JSON in the `etcd.operator.dev/launch`
//!   annotation of the Pod and of the PVC, so a Pod lost with its node is recreated from the
//!   PVC as the same member. The rest of the Pod (repository, resources, overrides) follows
//!   the current spec.
//! - **Restore**: the bootstrap members of a cluster created by an EtcdRestore get init
//!   containers that put the snapshot into their data dir before etcd starts (`restore.rs`);
//!   so do the new bootstrap members of a recovery from a backup, from the pinned object the
//!   recovery put on the cluster ([`PodRuntime::set_seed`]).
//! - **Cleanup**: Pods, Services and the PDB have the `EtcdCluster` as controller owner, so
//!   deleting the cluster garbage-collects them; no finalizer is needed. PVCs are owned only
//!   with `retentionPolicy.whenDeleted: Delete`; by default they outlive the cluster,
//!   labelled with its uid, and a later cluster of the same name lists them as
//!   [`Error::RetainedClaims`] instead of adopting them. Removing a member deletes its PVC.
//! - **Going away**: a Pod or PVC with a deletion timestamp is no member, and no
//!   reservation: creating one of the same name waits for it to go.
//! - **Ownership**: members are this cluster's Pods by controller owner uid, not by label
//!   alone. A Pod of an earlier cluster of the same name (still being garbage-collected
//!   after `kubectl delete etcdcluster`) is never listed, restarted or adopted
//!   ([`Error::ForeignPod`]).
//! - **Ended Pods**: a Pod in phase `Failed` or `Succeeded` (evicted, its node shut down)
//!   is deleted and created again (on its PVC when it has one), never taken for running.
//!
//! # Assumptions
//! One reconcile of a cluster at a time (kube-runtime's Controller guarantees it), so two
//! methods never race on one member.

mod certificates;

pub use certificates::operator_tls;
mod objects;
pub mod restore;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::wait::{await_condition, conditions};
use kube::{Api, Client, Resource, ResourceExt};
use serde_json::json;
use tracing::{debug, info};

pub use self::objects::{
    ANNOTATION_LAUNCH, CLIENT_PORT, DataVolume, FIELD_MANAGER, LABEL_CLUSTER, LABEL_CLUSTER_UID,
    LABEL_MEMBER, LABEL_VERSION, PEER_PORT,
};
use self::objects::{LaunchAnnotation, Objects};
use super::{
    CertificateSource, ClusterCertificates, ClusterRef, Error, MemberAddress, MemberLaunch,
    MemberRuntime, RuntimeMember, Transport,
};
use crate::api::EtcdCluster;

/// How long a restart waits for the old Pod to go (its grace period is 30 s by default).
pub const DEFAULT_DELETE_TIMEOUT: Duration = Duration::from_secs(120);

/// Runs the members of one `EtcdCluster` as Pods in its namespace.
///
/// Every method checks it is asked about its own cluster ([`Error::OtherCluster`]). Meant
/// to be built per reconcile pass: the Services and the PDB are applied by its first
/// `create` only.
#[derive(Clone)]
pub struct PodRuntime {
    client: Client,
    objects: Objects,
    delete_timeout: Duration,
    /// The Services and the PDB were applied by this instance (or a clone).
    applied: Arc<AtomicBool>,
    /// The trust stamp of the certificates [`MemberRuntime::ensure_certificates`] last
    /// installed: what a Pod created now mounts, recorded in [`ANNOTATION_TRUST_STAMP`].
    trust_stamp: Arc<std::sync::Mutex<Option<String>>>,
    /// The snapshot a recovery from a backup bootstraps new members from: the cluster's
    /// [`restore::ANNOTATION_RECOVERY_SOURCE`] when read, then what [`Self::set_seed`] says.
    /// It wins over an EtcdRestore's source.
    seed: Arc<Mutex<Option<restore::SnapshotSource>>>,
}

/// The trust stamp ([`crate::certs::ca_rotation::trust_stamp`]) of the certificates a
/// member Pod mounted when it was created.
pub const ANNOTATION_TRUST_STAMP: &str = "etcd.operator.dev/trust-stamp";

impl PodRuntime {
    /// The runtime of `cluster`, owning what it creates through the cluster's uid.
    ///
    /// No request is sent until a method is called.
    ///
    /// # Errors
    /// [`Error::MissingClusterField`] when the cluster has no namespace, name or uid (it
    /// was not read from the API server); [`Error::ParseRestoreSource`] when its restore
    /// annotation is not one.
    pub fn for_cluster(client: Client, cluster: &EtcdCluster) -> Result<Self, Error> {
        let meta = &cluster.metadata;
        let missing = |field| Error::MissingClusterField { field };
        let namespace = meta.namespace.clone().ok_or_else(|| missing("namespace"))?;
        let name = meta.name.clone().ok_or_else(|| missing("name"))?;
        meta.uid.as_ref().ok_or_else(|| missing("uid"))?;
        let owner = cluster
            .controller_owner_ref(&())
            .ok_or_else(|| missing("uid"))?;
        let restore = restore::source_of(meta)?;
        // Written by the operator only; one that does not parse is restored by nobody (a
        // run's seed then fails and rolls back, and it is removed once no run needs it).
        let seed = restore::recovery_source_of(meta).unwrap_or_else(|e| {
            tracing::warn!(cluster = %name, error = %crate::error_chain::error_chain(&e), "ignoring an unreadable recovery source annotation");
            None
        });
        Ok(Self {
            client,
            objects: Objects {
                cluster: ClusterRef::new(namespace, name),
                owner,
                spec: cluster.spec.clone(),
                restore,
                operator_image: None,
            },
            delete_timeout: DEFAULT_DELETE_TIMEOUT,
            applied: Arc::default(),
            trust_stamp: Arc::default(),
            seed: Arc::new(Mutex::new(seed)),
        })
    }

    /// Makes `seed` (or, with `None`, no recovery snapshot) what bootstrap members created
    /// from now on restore from, for this runtime (and its clones). The recovery also writes
    /// it on the cluster ([`restore::ANNOTATION_RECOVERY_SOURCE`]), which the runtime of a
    /// later pass reads; this covers the pass that wrote it.
    pub fn set_seed(&self, seed: Option<restore::SnapshotSource>) {
        *self
            .seed
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = seed;
    }

    /// The recovery snapshot bootstrap members restore from, if any.
    pub fn seed(&self) -> Option<restore::SnapshotSource> {
        self.seed
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// The operator image restore init containers run on, if known.
    pub fn operator_image(&self) -> Option<&str> {
        self.objects.operator_image.as_deref()
    }

    /// Run the restore init containers of a restored cluster's members on `image` (the
    /// operator's own).
    pub fn with_operator_image(mut self, image: Option<String>) -> Self {
        self.objects.operator_image = image;
        self
    }

    /// Wait `timeout` for a deleted Pod to go instead of [`DEFAULT_DELETE_TIMEOUT`].
    pub fn with_delete_timeout(mut self, timeout: Duration) -> Self {
        self.delete_timeout = timeout;
        self
    }

    pub fn cluster(&self) -> &ClusterRef {
        &self.objects.cluster
    }

    fn check(&self, asked: &ClusterRef) -> Result<(), Error> {
        if *asked == self.objects.cluster {
            Ok(())
        } else {
            Err(Error::OtherCluster {
                runtime: self.objects.cluster.clone(),
                asked: asked.clone(),
            })
        }
    }

    fn api<K>(&self) -> Api<K>
    where
        K: Resource<Scope = k8s_openapi::NamespaceResourceScope>,
        <K as Resource>::DynamicType: Default,
    {
        Api::namespaced(self.client.clone(), &self.objects.cluster.namespace)
    }

    /// Server-side applies the Services and the PDB, so drift is corrected on every pass
    /// that creates a member.
    async fn apply_cluster_objects(&self) -> Result<(), Error> {
        if self.applied.load(Ordering::Acquire) {
            return Ok(());
        }
        let params = PatchParams::apply(FIELD_MANAGER).force();
        let services: Api<k8s_openapi::api::core::v1::Service> = self.api();
        for svc in [
            self.objects.headless_service(),
            self.objects.client_service(),
        ] {
            let name = svc.name_any();
            services
                .patch(&name, &params, &Patch::Apply(&svc))
                .await
                .map_err(|source| Error::ApplyService { name, source })?;
        }
        let pdb = self.objects.pod_disruption_budget();
        let name = pdb.name_any();
        let pdbs: Api<PodDisruptionBudget> = self.api();
        pdbs.patch(&name, &params, &Patch::Apply(&pdb))
            .await
            .map_err(|source| Error::ApplyPodDisruptionBudget { name, source })?;
        self.applied.store(true, Ordering::Release);
        Ok(())
    }

    /// Creates the member's Pod. A live one that exists is left alone; one that ended
    /// (phase `Failed` or `Succeeded`: evicted, or its node shut down) is deleted and
    /// created again, and one being deleted is waited for first (issue 9, items 3 and 4).
    async fn create_pod(&self, launch: &MemberLaunch, volume: DataVolume) -> Result<(), Error> {
        self.create_pod_once(launch, volume, &[]).await
    }

    /// [`Self::create_pod`] of [`Objects::pod_once`].
    async fn create_pod_once(
        &self,
        launch: &MemberLaunch,
        volume: DataVolume,
        once: &[String],
    ) -> Result<(), Error> {
        let mut pod = match self.seed() {
            // A recovery's snapshot: its bootstrap members restore it, not the EtcdRestore's.
            Some(seed) => Objects {
                restore: Some(seed),
                ..self.objects.clone()
            }
            .pod_once(launch, volume, once)?,
            None => self.objects.pod_once(launch, volume, once)?,
        };
        let stamp = self
            .trust_stamp
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        if launch.transport.has_certificates()
            && let Some(stamp) = stamp
        {
            pod.metadata
                .annotations
                .get_or_insert_default()
                .insert(ANNOTATION_TRUST_STAMP.to_string(), stamp);
        }
        let name = launch.name.clone();
        let create = || async {
            match self.api::<Pod>().create(&post_params(), &pod).await {
                Ok(_) => Ok(true),
                Err(kube::Error::Api(s)) if s.is_already_exists() => Ok(false),
                // A full ResourceQuota refuses even a create of a Pod that exists (admission
                // runs before the name check): then it exists, and is looked at below.
                Err(source @ kube::Error::Api(_)) if is_forbidden(&source) => {
                    match self.api::<Pod>().get_opt(&name).await {
                        Ok(Some(_)) => Ok(false),
                        _ => Err(Error::CreatePod {
                            name: name.clone(),
                            source,
                        }),
                    }
                }
                Err(source) => Err(Error::CreatePod {
                    name: name.clone(),
                    source,
                }),
            }
        };
        if !create().await? {
            let existing = self.get_pod(&name).await?;
            match existing {
                // An earlier cluster's Pod: never adopted; one being deleted is waited for.
                Some(existing)
                    if !self.objects.is_own_pod(&existing) && !is_terminating(&existing) =>
                {
                    return Err(Error::ForeignPod {
                        name,
                        owner: controller_uid(&existing),
                    });
                }
                Some(existing) if is_alive(&existing) => {
                    debug!(cluster = %self.objects.cluster, member = name, "pod already exists");
                    return Ok(());
                }
                Some(existing) => {
                    info!(cluster = %self.objects.cluster, member = name, phase = phase(&existing).unwrap_or_default(), "replacing a pod that ended or is being deleted");
                    self.delete_pod_and_wait(&existing).await?;
                }
                // Deleted in between.
                None => {}
            }
            if !create().await? {
                // Created again by someone else in between: a later pass looks again.
                return Err(Error::StillTerminating {
                    kind: "pod",
                    name,
                    waited: self.delete_timeout,
                });
            }
        }
        info!(cluster = %self.objects.cluster, member = name, version = %launch.version, "created pod");
        Ok(())
    }

    /// Creates the member's PVC. One of this cluster that exists is left alone; one being
    /// deleted is waited for and created again.
    ///
    /// # Errors
    /// [`Error::RetainedClaims`] when the existing PVC was made by an earlier cluster of the
    /// same name: its data is never mounted by this one.
    async fn create_pvc(&self, pvc: &PersistentVolumeClaim) -> Result<(), Error> {
        let name = pvc.name_any();
        let api = self.api::<PersistentVolumeClaim>();
        for _ in 0..2 {
            match api.create(&post_params(), pvc).await {
                Ok(_) => {
                    info!(cluster = %self.objects.cluster, member = name, "created pvc");
                    return Ok(());
                }
                Err(kube::Error::Api(s)) if s.is_already_exists() => {}
                // A full ResourceQuota refuses a create of a PVC that exists, too.
                Err(source @ kube::Error::Api(_))
                    if is_forbidden(&source) && self.get_pvc(&name).await?.is_some() => {}
                Err(source) => return Err(Error::CreatePvc { name, source }),
            }
            let Some(existing) = self.get_pvc(&name).await? else {
                continue;
            };
            if is_terminating(&existing) {
                // Ours or an earlier cluster's: it is going away either way (issue 9, item 4).
                info!(cluster = %self.objects.cluster, member = name, "waiting for the pvc being deleted");
                self.wait_deleted::<PersistentVolumeClaim>("pvc", &name, &existing)
                    .await?;
                continue;
            }
            if !self.objects.is_own_pvc(&existing) {
                return Err(Error::RetainedClaims {
                    cluster: self.objects.cluster.clone(),
                    claims: vec![name],
                });
            }
            return Ok(());
        }
        Err(Error::StillTerminating {
            kind: "pvc",
            name,
            waited: self.delete_timeout,
        })
    }

    /// Deletes `pod` and waits until it is gone, so its name is free again.
    async fn delete_pod_and_wait(&self, pod: &Pod) -> Result<(), Error> {
        let name = pod.name_any();
        if !is_terminating(pod) {
            self.delete_pod(&name).await?;
        }
        self.wait_deleted::<Pod>("pod", &name, pod).await
    }

    /// Waits up to the delete timeout until `object` (this uid) is gone.
    async fn wait_deleted<K>(&self, kind: &'static str, name: &str, object: &K) -> Result<(), Error>
    where
        K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
            + Clone
            + std::fmt::Debug
            + serde::de::DeserializeOwned
            + Send
            + 'static,
    {
        let uid = object.uid().unwrap_or_default();
        let gone = await_condition(self.api::<K>(), name, conditions::is_deleted(&uid));
        match tokio::time::timeout(self.delete_timeout, gone).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(source)) => Err(Error::AwaitDeleted {
                kind,
                name: name.to_string(),
                source,
            }),
            Err(_) => Err(Error::StillTerminating {
                kind,
                name: name.to_string(),
                waited: self.delete_timeout,
            }),
        }
    }

    async fn delete_pod(&self, name: &str) -> Result<(), Error> {
        match self
            .api::<Pod>()
            .delete(name, &DeleteParams::default())
            .await
        {
            Ok(_) => {
                info!(cluster = %self.objects.cluster, member = name, "deleted pod");
                Ok(())
            }
            Err(kube::Error::Api(s)) if s.is_not_found() => Ok(()),
            Err(source) => Err(Error::DeletePod {
                name: name.to_string(),
                source,
            }),
        }
    }

    /// Moves the member to `version`: the PVC's launch first (the intent survives a crash
    /// in between), then the running Pod's image, label and launch.
    async fn upgrade_in_place(&self, pod: &Pod, version: &semver::Version) -> Result<(), Error> {
        let name = pod.name_any();
        let mut launch = LaunchAnnotation::decode("pod", &pod.metadata)?;
        launch.version = version.clone();
        if let Some(claim) = pvc_of(pod) {
            self.record_launch_on_pvc(&claim, &launch).await?;
        }
        let mut patch = launch_patch(&launch)?;
        patch["spec"] = json!({
            "containers": [{ "name": objects::CONTAINER, "image": self.objects.image(version) }]
        });
        self.api::<Pod>()
            .patch(&name, &PatchParams::default(), &Patch::Strategic(&patch))
            .await
            .map_err(|source| Error::PatchPod {
                name: name.clone(),
                source,
            })?;
        info!(cluster = %self.objects.cluster, member = name, %version, "patched pod image");
        Ok(())
    }

    /// Stores `launch` (and its version label) on the PVC, so a recreated Pod uses it.
    async fn record_launch_on_pvc(&self, claim: &str, launch: &MemberLaunch) -> Result<(), Error> {
        self.api::<PersistentVolumeClaim>()
            .patch(
                claim,
                &PatchParams::default(),
                &Patch::Merge(&launch_patch(launch)?),
            )
            .await
            .map_err(|source| Error::PatchPvc {
                name: claim.to_string(),
                source,
            })?;
        Ok(())
    }

    /// The Pod of the name, whoever made it.
    async fn get_pod(&self, name: &str) -> Result<Option<Pod>, Error> {
        self.api::<Pod>()
            .get_opt(name)
            .await
            .map_err(|source| Error::GetPod {
                name: name.to_string(),
                source,
            })
    }

    /// The member's Pod, if one exists.
    ///
    /// # Errors
    /// [`Error::ForeignPod`] when a Pod of the name is not this cluster's.
    async fn own_pod(&self, name: &str) -> Result<Option<Pod>, Error> {
        let pod = self.get_pod(name).await?;
        if let Some(pod) = pod.as_ref().filter(|p| !self.objects.is_own_pod(p)) {
            return Err(Error::ForeignPod {
                name: name.to_string(),
                owner: controller_uid(pod),
            });
        }
        Ok(pod)
    }

    /// The launch recorded on the member's PVC (on its Pod, `pod`, for PVCs made before
    /// launches were recorded there): what a Pod recreated on the PVC runs.
    ///
    /// # Errors
    /// [`Error::RestartLosesData`] when there is no PVC but a live (emptyDir) Pod;
    /// [`Error::MemberNotFound`] when there is neither.
    async fn launch_on_pvc(
        &self,
        cluster: &ClusterRef,
        name: &str,
        pod: Option<&Pod>,
    ) -> Result<MemberLaunch, Error> {
        let Some(pvc) = self.get_pvc(name).await?.filter(|p| !is_terminating(p)) else {
            return Err(match pod.filter(|p| is_alive(p)) {
                Some(_) => Error::RestartLosesData {
                    name: name.to_string(),
                },
                None => Error::MemberNotFound {
                    cluster: cluster.clone(),
                    name: name.to_string(),
                },
            });
        };
        match LaunchAnnotation::decode("pvc", &pvc.metadata) {
            Ok(launch) => Ok(launch),
            Err(e) => match pod {
                Some(pod) => LaunchAnnotation::decode("pod", &pod.metadata),
                None => Err(e),
            },
        }
    }

    async fn get_pvc(&self, name: &str) -> Result<Option<PersistentVolumeClaim>, Error> {
        self.api::<PersistentVolumeClaim>()
            .get_opt(name)
            .await
            .map_err(|source| Error::GetPvc {
                name: name.to_string(),
                source,
            })
    }
}

impl MemberRuntime for PodRuntime {
    /// DNS names through the headless Service; no request is sent.
    async fn reserve(
        &self,
        cluster: &ClusterRef,
        name: &str,
        transport: Transport,
    ) -> Result<MemberAddress, Error> {
        self.check(cluster)?;
        Ok(self.objects.address(name, transport))
    }

    /// Reads and completes the cluster's certificate Secrets.
    async fn ensure_certificates(
        &self,
        cluster: &ClusterRef,
        source: CertificateSource<'_>,
    ) -> Result<ClusterCertificates, Error> {
        self.check(cluster)?;
        // Listed only while a CA rotation waits for members (never in a steady state).
        let stamps = async {
            Ok(self
                .list(cluster)
                .await?
                .into_iter()
                .map(|m| m.trust_stamp)
                .collect())
        };
        let installed = certificates::ensure(&self.client, &self.objects, source, stamps).await?;
        *self
            .trust_stamp
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = installed.trust_stamp.clone();
        Ok(installed)
    }

    fn provided_certificate_names(&self, _: &ClusterRef) -> crate::certs::provided::RequiredNames {
        self.objects.provided_certificate_names()
    }

    /// Applies the Services and the PDB, creates the PVC (unless `storage.emptyDir`) and the
    /// Pod.
    /// A PVC of this cluster or a live Pod that exists is left alone; a Pod that ended is
    /// replaced; objects being deleted are waited for.
    async fn create(&self, cluster: &ClusterRef, launch: &MemberLaunch) -> Result<(), Error> {
        self.check(cluster)?;
        // Before any write: a bad flag must not leave a PVC behind.
        self.objects.flags(launch)?;
        self.apply_cluster_objects().await?;
        if let Some(pvc) = self.objects.pvc(launch)? {
            self.create_pvc(&pvc).await?;
        }
        self.create_pod(launch, self.objects.spec_volume()).await
    }

    /// With a new `version` and a live Pod: patches its image in place. Otherwise a fresh
    /// Pod on the member's PVC, from the launch stored there (the old Pod deleted first).
    ///
    /// # Errors
    /// [`Error::MemberNotFound`] when neither a live Pod nor a PVC exists;
    /// [`Error::RestartLosesData`] when a live emptyDir Pod would have to be deleted.
    async fn restart(
        &self,
        cluster: &ClusterRef,
        name: &str,
        version: Option<semver::Version>,
    ) -> Result<(), Error> {
        self.check(cluster)?;
        let pod = self.own_pod(name).await?;
        let live = pod.as_ref().filter(|p| is_alive(p));
        if let (Some(pod), Some(version)) = (live, &version) {
            if label_version(pod).as_ref() == Some(version) {
                // A repeated upgrade: the patch is already in.
                debug!(cluster = %cluster, member = name, %version, "pod already runs version");
                return Ok(());
            }
            return self.upgrade_in_place(pod, version).await;
        }
        let mut launch = self.launch_on_pvc(cluster, name, pod.as_ref()).await?;
        if let Some(version) = version
            && version != launch.version
        {
            launch.version = version;
            self.record_launch_on_pvc(name, &launch).await?;
        }
        if let Some(pod) = &pod {
            self.delete_pod_and_wait(pod).await?;
        }
        info!(cluster = %cluster, member = name, "recreating pod on its pvc");
        self.create_pod(&launch, DataVolume::Pvc).await
    }

    /// Records `transport` in the launch on the PVC, then deletes the Pod and waits until
    /// it is gone; [`Self::restart`] creates the next one from that launch.
    async fn set_transport(
        &self,
        cluster: &ClusterRef,
        name: &str,
        transport: Transport,
    ) -> Result<MemberAddress, Error> {
        self.check(cluster)?;
        let pod = self.own_pod(name).await?;
        let mut launch = self.launch_on_pvc(cluster, name, pod.as_ref()).await?;
        if launch.transport != transport {
            launch.transport = transport;
            self.record_launch_on_pvc(name, &launch).await?;
        }
        if let Some(pod) = &pod {
            self.delete_pod_and_wait(pod).await?;
        }
        info!(cluster = %cluster, member = name, ?transport, "pod deleted; its pvc's launch moved to another transport");
        Ok(self.objects.address(name, transport))
    }

    /// Deletes the Pod and the PVC; missing ones are fine.
    async fn delete(&self, cluster: &ClusterRef, name: &str) -> Result<(), Error> {
        self.check(cluster)?;
        self.delete_pod(name).await?;
        match self
            .api::<PersistentVolumeClaim>()
            .delete(name, &DeleteParams::default())
            .await
        {
            Ok(_) => {
                info!(cluster = %cluster, member = name, "deleted pvc");
                Ok(())
            }
            Err(kube::Error::Api(s)) if s.is_not_found() => Ok(()),
            Err(source) => Err(Error::DeletePvc {
                name: name.to_string(),
                source,
            }),
        }
    }

    /// Members from the cluster's Pods and PVCs, by name. A live Pod is running; a PVC, or
    /// a live Pod on an emptyDir, holds data; a PVC without a Pod is a stopped member.
    /// Objects being deleted are going away, not members: a Pod being deleted counts only
    /// through its PVC (a stopped member), so a removed member's name is never taken for a
    /// reservation and added again (issue 9, item 4).
    ///
    /// # Errors
    /// [`Error::RetainedClaims`] when PVCs of an earlier cluster of the same name exist:
    /// this cluster would otherwise start on their data or bootstrap over their names.
    /// [`Error::NoStorageClass`] when a PVC created without a class is pending and still
    /// has none: the Kubernetes cluster has no default StorageClass.
    async fn list(&self, cluster: &ClusterRef) -> Result<Vec<RuntimeMember>, Error> {
        self.check(cluster)?;
        let params = ListParams::default().labels(&self.objects.selector());
        let pods = self
            .api::<Pod>()
            .list(&params)
            .await
            .map_err(|source| Error::ListPods {
                cluster: cluster.clone(),
                source,
            })?;
        let pvcs = self
            .api::<PersistentVolumeClaim>()
            .list(&params)
            .await
            .map_err(|source| Error::ListPvcs {
                cluster: cluster.clone(),
                source,
            })?;
        let (own, retained): (Vec<_>, Vec<_>) = pvcs
            .into_iter()
            .filter(|p| !is_terminating(p))
            .partition(|p| self.objects.is_own_pvc(p));
        if !retained.is_empty() {
            return Err(Error::RetainedClaims {
                cluster: cluster.clone(),
                claims: retained.iter().map(ResourceExt::name_any).collect(),
            });
        }
        // The DefaultStorageClass admission plugin fills in the class of a PVC created
        // without one; a pending PVC still without one will never be provisioned.
        let classless: Vec<String> = own
            .iter()
            .filter(|p| is_classless_and_pending(p))
            .map(ResourceExt::name_any)
            .collect();
        if !classless.is_empty() {
            return Err(Error::NoStorageClass {
                cluster: cluster.clone(),
                claims: classless,
            });
        }
        let mut by_name: BTreeMap<String, (Option<Pod>, Option<PersistentVolumeClaim>)> =
            BTreeMap::new();
        // Only this cluster's Pods: one of an earlier cluster of the name is going away.
        for pod in pods
            .into_iter()
            .filter(|p| !is_terminating(p) && self.objects.is_own_pod(p))
        {
            let name = member_name(&pod);
            by_name.entry(name).or_default().0 = Some(pod);
        }
        for pvc in own {
            let name = member_name(&pvc);
            by_name.entry(name).or_default().1 = Some(pvc);
        }
        let mut members = Vec::with_capacity(by_name.len());
        for (name, (pod, pvc)) in by_name {
            let running = pod.as_ref().is_some_and(is_alive);
            // The Pod says what runs; a PVC without one what ran last.
            let version = match (&pod, &pvc) {
                (Some(pod), _) => version_label("pod", pod)?,
                (None, Some(pvc)) => version_label("pvc", pvc)?,
                (None, None) => continue,
            };
            // What its URLs speak is in its launch; a member made before TLS has none.
            let transport = pod
                .as_ref()
                .map(|p| &p.metadata)
                .or(pvc.as_ref().map(|p| &p.metadata))
                .and_then(|meta| LaunchAnnotation::decode("pod", meta).ok())
                .map_or(Transport::Plain, |l| l.transport);
            members.push(RuntimeMember {
                address: self.objects.address(&name, transport),
                name,
                running,
                has_data: running || pvc.is_some(),
                version,
                // The Pod's creation: when the operator (or its controller) last started it.
                started_at: pod
                    .as_ref()
                    .filter(|_| running)
                    .and_then(|p| p.metadata.creation_timestamp.as_ref())
                    .map(|t| t.0),
                restart_keeps_data: pvc.is_some(),
                trust_stamp: pod
                    .as_ref()
                    .and_then(|p| p.metadata.annotations.as_ref())
                    .and_then(|a| a.get(ANNOTATION_TRUST_STAMP))
                    .cloned(),
            });
        }
        Ok(members)
    }

    fn supports_recovery(&self) -> bool {
        true
    }

    /// Deletes the member's Pod (waiting until it is gone) and takes its PVC out of the
    /// cluster: the cluster label is replaced by [`objects::LABEL_KEPT_FROM`] and
    /// [`objects::LABEL_KEPT_BY`], and its owner reference removed, so neither this cluster
    /// nor its deletion touches it again. `None` for a member without a PVC (emptyDir: its
    /// data went with the Pod).
    async fn set_aside(
        &self,
        cluster: &ClusterRef,
        name: &str,
        tag: &str,
    ) -> Result<Option<String>, Error> {
        self.check(cluster)?;
        if let Some(pod) = self
            .get_pod(name)
            .await?
            .filter(|p| self.objects.is_own_pod(p))
        {
            self.delete_pod_and_wait(&pod).await?;
        }
        let Some(pvc) = self
            .get_pvc(name)
            .await?
            .filter(|p| self.objects.is_own_pvc(p) && !is_terminating(p))
        else {
            return Ok(None);
        };
        let patch = json!({
            "metadata": {
                "labels": {
                    objects::LABEL_CLUSTER: null,
                    objects::LABEL_KEPT_FROM: cluster.name,
                    objects::LABEL_KEPT_BY: tag,
                },
                "ownerReferences": null,
            }
        });
        self.api::<PersistentVolumeClaim>()
            .patch(
                &pvc.name_any(),
                &PatchParams::default(),
                &Patch::Merge(&patch),
            )
            .await
            .map_err(|source| Error::PatchPvc {
                name: name.to_string(),
                source,
            })?;
        info!(%cluster, member = name, kept_by = tag, "pod deleted and pvc kept aside for the recovery; never deleted");
        Ok(Some(format!("pvc/{}", pvc.name_any())))
    }

    /// Gives the kept PVC back to the cluster (its labels and owner as the cluster makes
    /// them); the member is stopped, a later pass starts it on it.
    async fn put_back(&self, cluster: &ClusterRef, name: &str, at: &str) -> Result<(), Error> {
        self.check(cluster)?;
        let claim = at
            .strip_prefix("pvc/")
            .filter(|c| *c == name)
            .ok_or_else(|| Error::NotKept {
                path: at.to_owned(),
            })?;
        let Some(pvc) = self.get_pvc(claim).await? else {
            return Ok(());
        };
        let launch = LaunchAnnotation::decode("pvc", &pvc.metadata)?;
        let Some(own) = self.objects.pvc(&launch)? else {
            return Ok(());
        };
        let mut labels =
            serde_json::to_value(own.metadata.labels.unwrap_or_default()).unwrap_or_default();
        labels[objects::LABEL_KEPT_FROM] = serde_json::Value::Null;
        labels[objects::LABEL_KEPT_BY] = serde_json::Value::Null;
        let patch = json!({
            "metadata": {
                "labels": labels,
                "ownerReferences": own.metadata.owner_references,
            }
        });
        self.api::<PersistentVolumeClaim>()
            .patch(claim, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .map_err(|source| Error::PatchPvc {
                name: claim.to_string(),
                source,
            })?;
        info!(%cluster, member = name, "kept pvc put back: the recovery was rolled back");
        Ok(())
    }

    /// A new Pod on the member's PVC whose etcd runs once with `--force-new-cluster` (the
    /// launch on the PVC and the Pod is the member's own, without it).
    async fn force_new_cluster(&self, cluster: &ClusterRef, name: &str) -> Result<(), Error> {
        self.check(cluster)?;
        let Some(pvc) = self.get_pvc(name).await?.filter(|p| !is_terminating(p)) else {
            return Err(Error::RestartLosesData {
                name: name.to_string(),
            });
        };
        let launch = LaunchAnnotation::decode("pvc", &pvc.metadata)?;
        if let Some(pod) = self.own_pod(name).await? {
            self.delete_pod_and_wait(&pod).await?;
        }
        info!(%cluster, member = name, "creating the member's pod once with --force-new-cluster");
        self.create_pod_once(
            &launch,
            DataVolume::Pvc,
            &[super::flags::FORCE_NEW_CLUSTER.to_owned()],
        )
        .await
    }

    /// Deletes every Pod of the cluster and keeps the PVCs; emptyDir data goes with its Pod.
    /// One delete per Pod: the operator's RBAC grants no `deletecollection`.
    async fn stop_all(&self, cluster: &ClusterRef) -> Result<(), Error> {
        self.check(cluster)?;
        let params = ListParams::default().labels(&self.objects.selector());
        let pods = self
            .api::<Pod>()
            .list(&params)
            .await
            .map_err(|source| Error::ListPods {
                cluster: cluster.clone(),
                source,
            })?;
        for pod in pods
            .items
            .iter()
            .filter(|p| !is_terminating(*p) && self.objects.is_own_pod(p))
        {
            self.delete_pod(&pod.name_any()).await?;
        }
        Ok(())
    }
}

fn post_params() -> PostParams {
    PostParams {
        field_manager: Some(FIELD_MANAGER.to_string()),
        ..Default::default()
    }
}

/// The version label and launch annotation of `launch`, as a patch of an object's metadata.
fn launch_patch(launch: &MemberLaunch) -> Result<serde_json::Value, Error> {
    Ok(json!({
        "metadata": {
            "labels": { LABEL_VERSION: launch.version.to_string() },
            "annotations": { ANNOTATION_LAUNCH: LaunchAnnotation::encode(launch)? },
        }
    }))
}

/// Exists, is not being deleted and has not ended (a Pod without a phase was just created).
fn is_alive(pod: &Pod) -> bool {
    !is_terminating(pod) && matches!(phase(pod), None | Some("Pending" | "Running"))
}

fn phase(pod: &Pod) -> Option<&str> {
    pod.status.as_ref().and_then(|s| s.phase.as_deref())
}

/// Pending without a StorageClass: no default class was there to fill it in.
fn is_classless_and_pending(pvc: &PersistentVolumeClaim) -> bool {
    let class = pvc
        .spec
        .as_ref()
        .and_then(|s| s.storage_class_name.as_deref());
    let phase = pvc.status.as_ref().and_then(|s| s.phase.as_deref());
    class.is_none() && phase == Some("Pending")
}

fn is_forbidden(error: &kube::Error) -> bool {
    matches!(error, kube::Error::Api(s) if s.code == 403)
}

/// The uid of the object's controller owner, or `none`.
fn controller_uid<K: Resource>(object: &K) -> String {
    object
        .meta()
        .owner_references
        .iter()
        .flatten()
        .find(|o| o.controller == Some(true))
        .map_or_else(|| "none".to_string(), |o| o.uid.clone())
}

fn is_terminating<K: Resource>(object: &K) -> bool {
    object.meta().deletion_timestamp.is_some()
}

fn member_name<K: Resource>(object: &K) -> String {
    object
        .labels()
        .get(LABEL_MEMBER)
        .cloned()
        .unwrap_or_else(|| object.name_any())
}

fn label_version<K: Resource>(object: &K) -> Option<semver::Version> {
    object.labels().get(LABEL_VERSION)?.parse().ok()
}

fn version_label<K: Resource>(kind: &'static str, object: &K) -> Result<semver::Version, Error> {
    label_version(object).ok_or_else(|| Error::InvalidLabel {
        kind,
        name: object.name_any(),
        label: LABEL_VERSION,
    })
}

/// The claim the Pod's data volume is on, if it is a PVC.
fn pvc_of(pod: &Pod) -> Option<String> {
    pod.spec
        .as_ref()?
        .volumes
        .as_ref()?
        .iter()
        .find(|v| v.name == objects::DATA_VOLUME)?
        .persistent_volume_claim
        .as_ref()
        .map(|c| c.claim_name.clone())
}
