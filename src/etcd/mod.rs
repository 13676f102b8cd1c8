//! A typed admin layer over etcd-client: membership, status, health, snapshot, maintenance.
