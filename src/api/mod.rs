//! The resource kinds of group `etcd.operator.dev/v1alpha1` and their validation.
