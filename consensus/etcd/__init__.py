"""The etcd system-tier backend: the system tier kept in an external etcd v3 cluster."""

from __future__ import annotations

from consensus.etcd.backend import EtcdSystem

__all__ = ["EtcdSystem"]
