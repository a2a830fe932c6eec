"""Local test cluster for Safehold: pinned etcd, kube-apiserver, kube-controller-manager,
SeaweedFS S3 and a test-only node agent, all on 127.0.0.1 (see DESIGN.md §6)."""

from localcluster.cluster import LocalCluster
from localcluster.nodeagent import NODE_NAME, NodeAgent

__all__ = ["NODE_NAME", "LocalCluster", "NodeAgent"]
