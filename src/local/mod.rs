//! The local runtime's driver: reconciles the EtcdClusters, EtcdBackups and EtcdRestores of
//! YAML files against etcd processes on this machine, and keeps their status in files.

pub mod backups;
pub mod driver;
pub mod restores;
pub mod status_files;
