"""etcd-backed storage: desired state, build records, placements, cluster snapshots."""
