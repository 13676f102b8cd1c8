//! The drivers: what runs the reconcile pass for each runtime, persists the status and
//! decides when to run again. [`kubernetes`] is `etcd-operator run` (Controllers on the API
//! server), [`local`] is `etcd-operator local` (a loop over YAML files).

pub mod kubernetes;
pub mod local;
