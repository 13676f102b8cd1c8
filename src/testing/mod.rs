//! Test support: real etcd members on 127.0.0.1 in temp dirs, always torn down.
