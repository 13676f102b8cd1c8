//! The local runtime's driver: reconciles the EtcdClusters of YAML files against etcd
//! processes on this machine, and keeps their status in files.

pub mod driver;
pub mod status_files;
