"""One node process: wires the system tier, the gRPC server and peer links.

Everything runs on one asyncio loop except the Raft tick thread (see
``consensus.raft.backend``). ``run_node`` is what ``tadpole node`` calls.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import signal
import sys
import time
from typing import Any

import grpc
from google.protobuf import json_format
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from consensus.backend import SystemBackend
from consensus.durable import Histogram
from consensus.etcd.backend import EtcdSystem
from consensus.raft.backend import RaftBackend
from consensus.raft.bridge import RaftSystem
from consensus.statemachine import PutOp, Txn
from gossip.config import GossipConfig
from node.api.audit import AuditServicer
from node.api.authz import Authorize, Identify, PolicyCache
from node.api.backup import BackupServicer
from node.api.documents import DocumentsServicer
from node.api.guard import DecodeGuard, RateLimit, WriteFence
from node.api.keys import KeysServicer
from node.api.kv import VERSION, ClusterServicer, KVServicer
from node.api.ledger import LedgerApi, LedgerServicer
from node.api.login import AuthServicer, Login
from node.api.peer import PeerServicer
from node.api.tiers import TiersServicer, tier_health
from node.atrest import AtRest
from node.audit import AuditExport, AuditLog
from node.backup.layout import ARCHIVE_DIR, AUDIT_LOG, TIERS_DB
from node.backup.schedule import BackupScheduler, Policy
from node.backup.wal import WalArchiver
from node.config import NodeConfig
from node.http.app import HttpServer
from node.ledger.export import Exporter
from node.ledger.service import Lifecycle
from node.observe.gcpause import PAUSES, settle
from node.observe.latency import BUCKETS as LATENCY_BUCKETS
from node.observe.latency import LatencyInterceptor, RequestLatency
from node.observe.operations import TimedSystem
from node.observe.view import Family
from node.pb import tadpole_pb2 as pb
from node.pb import tadpole_pb2_grpc as pb_grpc
from node.peer.auth import PeerAuthInterceptor
from node.peer.cluster_metrics import ClusterMetrics
from node.peer.gossip import GossipDriver
from node.peer.links import RaftLink
from node.peer.traffic import PeerTraffic
from node.replication.driver import Replication
from node.replication.grpc_transport import CHANNEL_OPTIONS, GrpcTransport
from node.replication.scrub import Scrubber
from node.replication.store import TierStore
from node.tiers.ops import TIERS
from node.tls import Renewal, aio_channel, server_name_for

log = logging.getLogger(__name__)

SERVICE_NAMES = tuple(
    pb.DESCRIPTOR.services_by_name[name].full_name
    for name in ("KV", "Cluster", "Tiers", "Backup", "Keys", "Audit", "Ledger", "Peer")
)


class NodeServer:
    def __init__(self, config: NodeConfig) -> None:
        self.config = config
        self.started_at = time.monotonic()
        self._links: dict[str, RaftLink] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: grpc.aio.Server | None = None
        # With etcd the node's Raft group is not started: etcd is the system
        # tier, and the peer service only keeps refusing unauthenticated calls.
        backend: SystemBackend
        # Encryption at rest (None: off); read once here, again by `tadpole keys rotate`.
        self._keyring = config.keyring()
        self.atrest: AtRest | None = None
        self._raft_system: RaftSystem | None = None
        self._peer_servicer: PeerServicer | None = None  # once the server is built
        self._raft: RaftBackend | None = None
        if config.system_backend == "etcd":
            backend = EtcdSystem(config.etcd_endpoints, config.etcd_prefix)
        else:
            raft_system = RaftSystem(
                config.node_id,
                list(config.peers),
                config.data_path,
                sender=self._send_raft,
                config=config.raft,
                keyring=self._keyring,
                keyring_loader=config.keyring,
            )
            backend, self._raft_system, self._raft = raft_system, raft_system, raft_system.raft
        # Both faces (gRPC, HTTP) reach the system tier through this: it times them.
        self.system = TimedSystem(backend)
        self._cluster: ClusterServicer | None = None
        self.traffic = PeerTraffic()  # bytes per peer and channel, SWIM round trips
        self.gossip = GossipDriver(
            node_id=config.node_id,
            address=config.address,
            seeds=sorted(config.peers.values()),
            token=config.peer_token(),
            data_dir=config.data_path,
            version=VERSION,
            tiers=["system", *TIERS],
            config=GossipConfig.lan(),
            role=lambda: self.system.info().role,
            traffic=self.traffic,
            tls=config.tls(),
        )
        self._health_servicer: health.aio.HealthServicer | None = None
        self.store: TierStore | None = None
        self.replication: Replication | None = None
        self.metrics = ClusterMetrics(config.node_id, self.gossip)
        self.latency = RequestLatency()
        self.http = HttpServer(self, config.http_listen) if config.http_listen else None
        # Operator actions and refused calls (docs/security.md#audit).
        self.audit: AuditLog | None = None
        self.audit_export: AuditExport | None = None  # its feed into the event log
        self.login: Login | None = None  # made with the audit log, in start()
        # Per-client rate limits, one table for both ports (None: off).
        self.rate_limits = config.rate_limits()
        # Roles (node/rbac.py), as the local replica of the system tier holds them; read
        # past TimedSystem, whose operation metrics count clients' calls only.
        self.policy = PolicyCache(self.system.inner, os.path.join(config.data_path, "auth.policy"))
        # Who a client call comes from, alike on both ports (node/api/authz.py).
        self.identify = Identify(config.operator_token(), frozenset(config.peers), config.tokens())
        # The lifecycle API and the ledger (docs/ledger.md): lifecycle changes are
        # system-tier transactions; the leader's exporter feeds them to the database.
        self.lifecycle = Lifecycle(self.system, timeout_s=config.request_timeout_s)
        ledger_url, embedded = config.ledger_database()
        self.exporter = Exporter(
            self.system.inner,
            self.lifecycle,
            ledger_url,
            is_leader=lambda: self.system.info().role == "leader",
            retain_s=config.ledger_retain_s,
        )
        self.ledger = LedgerApi(
            config.node_id,
            self.system,
            self.lifecycle,
            self.exporter,
            embedded=embedded,
            timeout_s=config.request_timeout_s,
        )
        self.backups: BackupScheduler | None = None
        self.wal: WalArchiver | None = None
        self.scrubber: Scrubber | None = None
        if config.backup_repo:
            interval = config.backup_interval_s
            self.backups = BackupScheduler(
                config.node_id,
                self.system,
                config.address,
                config.operator_token(),
                config.backup_repo,
                config.backup_recipient_list,
                Policy(
                    interval_s=interval,
                    full_interval_s=config.backup_full_interval_s,
                    retry_s=min(300.0, interval),
                    claim_ttl_s=max(600.0, 2 * interval),
                ),
                prune=config.backup_prune,
                tls=config.tls(),
            )
            self.wal = WalArchiver(
                self.system,
                config.backup_repo,
                config.backup_recipient_list,
                seal_s=config.backup_wal_seal_s,
            )

    def load(self) -> dict[str, Any]:
        """The load fields of ``Cluster.Status``: calls served per method since start
        (the latency histogram's buckets), CPU seconds and resident memory; and the
        scheduled backups' state."""
        backup: dict[str, Any] = {"backup_age_s": -1.0}
        if self.backups is not None:
            state = self.backups.state
            if state.last_success_ns:
                backup["backup_age_s"] = max(0.0, (time.time_ns() - state.last_success_ns) / 1e9)
            backup["backup_id"] = state.last_id
            backup["backup_error"] = state.last_error
        return {
            **backup,
            "load": [
                pb.MethodLoad(method=method, count=count, seconds=seconds, buckets=buckets)
                for method, count, seconds, buckets in self.latency.load()
            ],
            "latency_bounds": LATENCY_BUCKETS,
            "cpu_seconds": time.process_time(),
            "rss_bytes": _resident_bytes(),
        }

    def _raft_stream_batches(self) -> int:
        servicer = self._peer_servicer
        return servicer.stream_batches if servicer is not None else 0

    def families(self) -> list[Family]:
        """Counters and gauges of the internals, and the per-peer round trips."""
        out: list[Family] = []
        if self._raft_system is not None:
            resent, copies_answered, copies_dropped = self._raft_system.raft.forwards
            out += [
                Family(
                    "tadpole_raft_proposals_pending",
                    "Writes proposed through this node, not yet committed or failed",
                    "gauge", samples=(((), self._raft_system.proposals_pending),),
                ),
                Family(
                    "tadpole_raft_leader_changes_total",
                    "Times this node saw a new Raft leader (one per election when healthy)",
                    "counter", samples=(((), self._raft_system.raft.leader_changes),),
                ),
                Family(
                    "tadpole_raft_quiet",
                    "Whether this node's Raft group is at rest and keeps quiet heartbeats "
                    "(as its leader, or following a quiet leader): 1 or 0",
                    "gauge", samples=(((), float(self._raft_system.raft.quiet)),),
                ),
                Family(
                    "tadpole_raft_quiet_entered_total",
                    "Times this node, as leader, put its Raft group at rest",
                    "counter", samples=(((), self._raft_system.raft.quiet_entered),),
                ),
                Family(
                    "tadpole_raft_late_answers_total",
                    "Writes this follower forwarded whose leader's answer arrived after the "
                    "entry was applied here, answered from that entry (not 'outcome unknown')",
                    "counter", samples=(((), self._raft_system.raft.late_answers),),
                ),
                Family(
                    "tadpole_raft_forwards_resent_total",
                    "Writes this follower forwarded and sent to the leader again, its answer "
                    "not in within 0.5 s (a frame lost when a peer call failed)",
                    "counter", samples=(((), resent),),
                ),
                Family(
                    "tadpole_raft_forward_copies_total",
                    "Copies of forwarded writes this leader took: answered as their first "
                    "send was, or dropped (still queued, or not vouched for); never appended",
                    "counter", labels=("outcome",), samples=(
                        (("answered",), copies_answered),
                        (("dropped",), copies_dropped),
                    ),
                ),
                Family(
                    "tadpole_raft_pre_votes_started_total",
                    "Pre-vote rounds this node started, its election timer run out: each "
                    "asks the others before any term moves (a partitioned node's repeat here)",
                    "counter", samples=(((), self._raft_system.raft.pre_votes[0]),),
                ),
                Family(
                    "tadpole_raft_pre_votes_won_total",
                    "Pre-vote rounds a majority granted this node, each followed by an election",
                    "counter", samples=(((), self._raft_system.raft.pre_votes[1]),),
                ),
                Family(
                    "tadpole_raft_tick_stalls_total",
                    "Raft ticks that finished more than the election timeout after they were "
                    "due (GC, slow fsync, CPU starvation): a leader's followers may campaign",
                    "counter", samples=(((), self._raft_system.raft.tick_stalls.stalls),),
                ),
                Family(
                    "tadpole_raft_next_index_rollbacks_prevented_total",
                    "Stale append-entries successes that would have moved a follower's "
                    "nextIndex back (re-sending entries it holds), kept where it was",
                    "counter", samples=(((), self._raft_system.raft.rollbacks_prevented),),
                ),
                Family(
                    "tadpole_raft_stream_batches_total",
                    "Raft batches this node received on its peers' RaftStreams (each one "
                    "exchange, as a Peer/Raft call is)",
                    "counter", samples=(((), self._raft_stream_batches()),),
                ),
                Family(
                    "tadpole_raft_proposals_failed_total",
                    "Writes proposed here that ended without a result (timeout, no leader, "
                    "leadership lost, journal failure)",
                    "counter", samples=(((), self._raft_system.proposals_failed),),
                ),
            ]  # fmt: skip
        peer_labels = ("peer", "channel")
        out += [
            Family(
                "tadpole_gc_pause_seconds",
                "Duration of each garbage collection, per generation (the whole process "
                "stops meanwhile)",
                "histogram", ("generation",),
                tuple(((str(g),), h) for g, h in sorted(PAUSES.seconds.items())),
            ),
            Family(
                "tadpole_gc_threshold",
                "The collector's thresholds: allocations before a young collection "
                "(generation 0), collections of the generation below before the next",
                "gauge", ("generation",),
                tuple(((str(g),), float(t)) for g, t in enumerate(gc.get_threshold())),
            ),
            Family(
                "tadpole_gc_frozen_objects",
                "Objects kept out of every full collection (settled once the node caught up)",
                "gauge", samples=(((), float(gc.get_freeze_count())),),
            ),
            Family(
                "tadpole_peer_sent_bytes_total",
                "Payload bytes sent to each peer, per channel (raft, replica, gossip)",
                "counter", peer_labels,
                tuple((key, n) for key, n in sorted(self.traffic.bytes_sent().items())),
            ),
            Family(
                "tadpole_peer_received_bytes_total",
                "Payload bytes received from each peer, per channel",
                "counter", peer_labels,
                tuple((key, n) for key, n in sorted(self.traffic.bytes_received().items())),
            ),
            Family(
                "tadpole_peer_rtt_seconds",
                "SWIM probe round trip to each peer (ping to ack, direct probes)",
                "histogram", ("peer",),
                tuple(((peer,), h) for peer, h in sorted(self.traffic.round_trips().items())),
            ),
        ]  # fmt: skip
        operations: list[tuple[tuple[str, ...], float | Histogram]] = [
            (("system", op), h) for op, h in sorted(self.system.seconds.items())
        ]
        if self.replication is not None:
            operations += [(key, h) for key, h in sorted(self.replication.op_seconds.items())]
        out.append(
            Family(
                "tadpole_operation_duration_seconds",
                "Client operations on each tier served by this node (read, write, txn), "
                "whichever face (gRPC, HTTP) they came through",
                "histogram",
                ("tier", "op"),
                tuple(operations),
            )
        )
        if self.replication is not None:
            forwarded = self.replication.forwarded_updates
            out.append(
                Family(
                    "tadpole_tier_forwarded_updates_total",
                    "CRDT updates this node received for keys another member coordinates "
                    "and forwarded (or tried to forward) to it; a client routing by a "
                    "current placement view sends none",
                    "counter",
                    ("tier",),
                    tuple(((t,), float(forwarded[t])) for t in TIERS),
                )
            )
        out.append(
            Family(
                "tadpole_storage_bytes",
                "Bytes of each file in the data directory (a directory: all it holds)",
                "gauge",
                ("file",),
                tuple(((name,), size) for name, size in _data_files(self.config.data_path)),
            )
        )
        if self.store is not None:
            out.append(
                Family(
                    "tadpole_store_request_ids",
                    "Request ids the tier store holds to recognise a resend (each kept at "
                    "least an hour, less than two): grows with the rate of updates by id",
                    "gauge",
                    samples=(((), float(self.store.request_ids)),),
                )
            )
        if self.scrubber is not None:
            sc = self.scrubber
            r0 = self.replication
            found = r0.corrupt_found if r0 is not None else 0
            repaired = r0.corrupt_repaired if r0 is not None else 0
            out += [
                Family(
                    "tadpole_corruption_detected_total",
                    "Damage found, by the scrubber or by a read or write that met it: "
                    "journal records, snapshots, CRDT values whose bytes no longer match "
                    "their checksum or digest",
                    "counter", ("file",),
                    tuple(((f,), n + (found if f == "tiers" else 0))
                          for f, n in sorted(sc.detected.items())),
                ),
                Family(
                    "tadpole_corruption_repaired_total",
                    "Corrupt CRDT values replaced with the other owners' copies",
                    "counter", samples=(((), sc.repaired + repaired),),
                ),
                Family(
                    "tadpole_scrub_bytes_total", "Bytes the scrubber re-read",
                    "counter", samples=(((), sc.bytes_read),),
                ),
                Family(
                    "tadpole_scrub_last_pass_timestamp_seconds",
                    "Unix time the last full scrub pass ended (0: none yet)",
                    "gauge", samples=(((), sc.last_pass_ns / 1e9),),
                ),
            ]  # fmt: skip
        ex = self.exporter.status()
        out += [
            Family(
                "tadpole_ledger_exporting", "1 on the node exporting the outbox to the ledger",
                "gauge", samples=(((), float(ex.running)),),
            ),
            Family(
                "tadpole_ledger_lag_seconds",
                "Age of the oldest lifecycle event not yet in the ledger database (exporter)",
                "gauge", samples=(((), ex.lag_s),),
            ),
            Family(
                "tadpole_ledger_exported_total", "Outbox events this node applied to the ledger",
                "counter", samples=(((), float(ex.exported)),),
            ),
            Family(
                "tadpole_ledger_expired_total", "Workers and tadpoles this node's sweeper expired",
                "counter", samples=(((), float(ex.expired)),),
            ),
            Family(
                "tadpole_ledger_export_failing", "1 while the last export round failed",
                "gauge", samples=(((), float(bool(ex.last_error))),),
            ),
            Family(
                "tadpole_ledger_conflicts_total",
                "Lifecycle transactions redone because a record they read changed meanwhile",
                "counter", samples=(((), float(self.lifecycle.conflicts)),),
            ),
        ]  # fmt: skip
        if self.rate_limits is not None:
            out.append(
                Family(
                    "tadpole_rate_limited_total",
                    "Client requests refused for going over client_rate_limit (both ports)",
                    "counter",
                    samples=(((), float(sum(self.rate_limits.refused.values()))),),
                )
            )
        if self.audit is not None:
            out += [
                Family(
                    "tadpole_audit_records_total",
                    "Audit records written, by result (ok, denied, a gRPC status, dropped)",
                    "counter", ("result",),
                    tuple(((r,), float(n)) for r, n in sorted(self.audit.written.items())),
                ),
                Family(
                    "tadpole_audit_dropped_total",
                    "Refused-call audit records not written because a flood filled the queue",
                    "counter", samples=(((), float(self.audit.dropped)),),
                ),
            ]  # fmt: skip
        if self.audit_export is not None:
            out += [
                Family(
                    "tadpole_audit_exported_total",
                    "Audit records copied into the event log (/tadpole/audit/<node>)",
                    "counter", samples=(((), float(self.audit_export.exported)),),
                ),
                Family(
                    "tadpole_audit_export_skipped_total",
                    "Audit records left out of the event log by a flood (the file has them)",
                    "counter", samples=(((), float(self.audit_export.skipped)),),
                ),
            ]  # fmt: skip
        if self.atrest is not None:
            at = self.atrest
            out += [
                Family(
                    "tadpole_encryption_at_rest_enabled",
                    "1 when this node encrypts its journal, snapshots and tier values",
                    "gauge", samples=(((), float(at.keyring is not None)),),
                ),
                Family(
                    "tadpole_encryption_reseal_running",
                    "1 while values under an older key (or plaintext) are being re-sealed",
                    "gauge", samples=(((), float(at.resealing)),),
                ),
                Family(
                    "tadpole_encryption_resealed_total",
                    "Tier values and hints re-sealed under the primary key since start",
                    "counter", samples=(((), float(at.resealed)),),
                ),
            ]  # fmt: skip
        if self.backups is not None:
            b = self.backups
            out += [
                Family(
                    "tadpole_backup_last_success_timestamp_seconds",
                    "Unix time of the last successful scheduled backup (0: none yet), as the "
                    "system tier records it",
                    "gauge", samples=(((), b.state.last_success_ns / 1e9),),
                ),
                Family(
                    "tadpole_backup_runs_total",
                    "Scheduled backups this node ran, by result (ok, failed)",
                    "counter", ("result",), tuple(((r,), n) for r, n in sorted(b.runs.items())),
                ),
                Family(
                    "tadpole_backup_last_duration_seconds",
                    "How long the last scheduled backup this node ran took",
                    "gauge", samples=(((), b.last_seconds),),
                ),
            ]  # fmt: skip
        if self.wal is not None:
            w = self.wal
            out += [
                Family(
                    "tadpole_wal_archived_revision",
                    "The highest system-tier revision archived for point-in-time recovery, "
                    "as this node last knew it (its archiver acts while it leads)",
                    "gauge", samples=(((), w.archived),),
                ),
                Family(
                    "tadpole_wal_segments_sealed_total",
                    "Archive segments this node sealed into the repository",
                    "counter", samples=(((), w.sealed),),
                ),
                Family(
                    "tadpole_wal_gaps_total",
                    "Runs of revisions compacted away before they could be archived",
                    "counter", samples=(((), w.gaps),),
                ),
            ]  # fmt: skip
        gossip = self.gossip.counts()
        for name, key, doc in (
            ("tadpole_gossip_suspicions_total", "suspicions_raised",
             "Probes of this node that ended in suspecting a member"),
            ("tadpole_gossip_refutations_total", "refutations",
             "Times this node refuted a suspicion or death notice about itself"),
            ("tadpole_gossip_deaths_declared_total", "deaths_declared",
             "Suspicions this node confirmed as deaths"),
        ):  # fmt: skip
            out.append(Family(name, doc, "counter", samples=(((), gossip.get(key, 0)),)))
        r = self.replication
        if r is not None:
            for name, value, doc in (
                ("tadpole_antientropy_rounds_total", r.rounds, "Anti-entropy rounds run"),
                ("tadpole_antientropy_keys_repaired_total", r.synced_keys,
                 "Values anti-entropy sessions started here sent or joined"),
                ("tadpole_antientropy_tiers_skipped_total", r.rounds_skipped,
                 "Tiers an anti-entropy round skipped as settled (nothing changed)"),
                ("tadpole_antientropy_sessions_left_to_peers_total", r.sessions_left_to_peers,
                 "Pair sessions a round left out because the peer had just run one "
                 "with this node (a session merges both ways)"),
                ("tadpole_strays_handed_off_total", r.strays_handed_off,
                 "Copies of keys this node does not own, handed to their owners and dropped"),
                ("tadpole_hints_delivered_total", r.handed_off,
                 "Hinted writes delivered to their owners"),
                ("tadpole_hints_refused_total", r.hints_refused,
                 "Hinted writes a hand-off sent that the owner did not make durable "
                 "(unreachable, or refused), once per round each; kept for the next"),
                ("tadpole_read_repairs_total", r.repaired, "Copies fixed by read repair"),
                ("tadpole_divergent_keys_detected_total", r.divergence.detected,
                 "Keys found differing from an owner after anti-entropy joined them "
                 "(the invariant check; should stay 0)"),
            ):  # fmt: skip
                out.append(Family(name, doc, "counter", samples=(((), value),)))
        return out

    def histograms(self) -> list[tuple[str, str, Histogram]]:
        """The histograms /metrics exports besides the per-call and per-operation ones
        (Raft, durability, anti-entropy rounds): (metric name, help, histogram)."""
        out: list[tuple[str, str, Histogram]] = []
        if self._raft_system is not None:
            out.append(
                (
                    "tadpole_raft_commit_seconds",
                    "Proposal to committed and applied, for writes proposed here",
                    self._raft_system.commit_seconds,
                )
            )
        if self._raft is not None:
            out.append(
                (
                    "tadpole_raft_apply_seconds",
                    "Applying one committed entry to the state machine",
                    self._raft.apply_seconds,
                )
            )
            out.append(
                (
                    "tadpole_raft_tick_stall_seconds",
                    "From when each Raft tick was due (its timer, or its wake-up) to when it "
                    "finished: how long the node could not act on Raft",
                    self._raft.tick_stalls.seconds,
                )
            )
            out.append(
                (
                    "tadpole_raft_snapshot_seconds",
                    "Writing one snapshot (log compaction), fsync included",
                    self._raft.snapshot_seconds,
                )
            )
        if self._raft is not None and self._raft.journal_fsync_seconds is not None:
            out.append(
                (
                    "tadpole_raft_journal_fsync_seconds",
                    "Duration of each Raft journal fsync",
                    self._raft.journal_fsync_seconds,
                )
            )
        if self.replication is not None:
            out.append(
                (
                    "tadpole_antientropy_round_seconds",
                    "Duration of each anti-entropy round (every tier, sessions and hand-offs)",
                    self.replication.round_seconds,
                )
            )
        if self.store is not None:
            out.append(
                (
                    "tadpole_store_commit_seconds",
                    "Duration of each tier-store group commit (its fsync)",
                    self.store.commit_seconds,
                )
            )
            out.append(
                (
                    "tadpole_store_commit_items",
                    "Writes carried by each tier-store group commit",
                    self.store.commit_items,
                )
            )
        return out

    async def cluster_members(self) -> list[dict[str, Any]]:
        """What ``tadpole members`` shows, as JSON-ready dicts (``/api/v1/members``)."""
        if self._cluster is None:
            return []
        response = await self._cluster.members()
        return [
            json_format.MessageToDict(
                m, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
            )
            for m in response.members
        ]

    async def _put_system(self, key: str, value: bytes) -> None:
        """The node's own write of a system-tier key (past the client API's checks)."""
        txn = Txn(success=(PutOp(key, value),))
        await self.system.inner.txn(txn, self.config.request_timeout_s)

    def _send_raft(self, peer_id: str, frames: list[bytes]) -> None:
        # Tick thread -> the peer's link thread (never through the event loop).
        link = self._links.get(peer_id)
        if link is not None:
            link.submit(frames)

    async def start(self) -> None:
        cfg = self.config
        self._loop = asyncio.get_running_loop()
        token = cfg.peer_token()
        self.audit = AuditLog(os.path.join(cfg.data_path, AUDIT_LOG), cfg.node_id)
        if cfg.audit_to_event_log:
            batch_bytes = min(256 << 10, cfg.max_value_bytes // 2)
            self.audit_export = AuditExport(self.audit, self._put_system, batch_bytes=batch_bytes)
        max_msg = max(4 << 20, 2 * cfg.max_value_bytes + (1 << 20))
        server = grpc.aio.server(
            interceptors=[
                PeerAuthInterceptor(token, cfg.operator_token(), audit=self.audit),
                *(
                    [RateLimit(self.rate_limits, frozenset(cfg.peers))]
                    if self.rate_limits is not None
                    else []
                ),
                DecodeGuard(),  # outside Authorize: it reads the decoded request
                Authorize(self.policy, self.identify, self.audit),
                WriteFence(),  # inside Authorize: reads the caller's metadata
                LatencyInterceptor(self.latency),
            ],
            options=[
                ("grpc.max_receive_message_length", 64 << 20),
                ("grpc.max_send_message_length", max_msg),
                ("grpc.so_reuseport", 0),
                # Peers keepalive-ping every second (node/peer/links.py); allow it.
                ("grpc.keepalive_permit_without_calls", 1),
                ("grpc.http2.min_recv_ping_interval_without_data_ms", 500),
                ("grpc.http2.max_ping_strikes", 0),
            ],
        )
        self._server = server
        self._cluster = ClusterServicer(
            cfg,
            self.system,
            self.started_at,
            self.gossip,
            tier_health=lambda: tier_health(self.replication) if self.replication else [],
            load=self.load,
        )
        pb_grpc.add_KVServicer_to_server(KVServicer(cfg, self.system, self.metrics), server)
        pb_grpc.add_ClusterServicer_to_server(self._cluster, server)
        os.makedirs(cfg.data_path, exist_ok=True)
        self.store = TierStore(os.path.join(cfg.data_path, TIERS_DB), keyring=self._keyring)
        self.atrest = AtRest(cfg, self._keyring, self.store, self._raft)
        archive_dir = os.path.join(cfg.data_path, ARCHIVE_DIR)
        self.replication = Replication(
            node_id=cfg.node_id,
            store=self.store,
            gossip=self.gossip,
            token=token,
            archive_dir=archive_dir,
            compaction_interval_s=cfg.retention_interval_s,
            cluster_size=len(cfg.peers) + 1,
            transport=GrpcTransport(
                cfg.node_id,
                token,
                traffic=self.traffic,
                connect=lambda address, peer: aio_channel(
                    address,
                    cfg.tls(),
                    list(CHANNEL_OPTIONS),
                    server_name=server_name_for(peer),
                ),
                renewal=Renewal(cfg.tls()),
            ),
        )
        if cfg.scrub_interval_s > 0:
            self.scrubber = Scrubber(
                cfg.data_path,
                self.store,
                self.replication,
                interval_s=cfg.scrub_interval_s,
                bytes_per_s=cfg.scrub_bytes_per_s,
                raft_files=self._raft is not None,
            )
        pb_grpc.add_TiersServicer_to_server(TiersServicer(self.replication, self.metrics), server)
        pb_grpc.add_DocumentsServicer_to_server(DocumentsServicer(self.replication), server)
        pb_grpc.add_BackupServicer_to_server(
            BackupServicer(cfg.node_id, self.system, self.store, archive_dir), server
        )
        pb_grpc.add_KeysServicer_to_server(KeysServicer(self.atrest), server)
        pb_grpc.add_AuditServicer_to_server(AuditServicer(self.audit), server)
        self.login = Login(self.policy, cfg.tokens(), cfg.tls() is not None, self.audit)
        pb_grpc.add_AuthServicer_to_server(AuthServicer(self.login), server)
        pb_grpc.add_LedgerServicer_to_server(LedgerServicer(cfg, self.system, self.ledger), server)
        self._peer_servicer = PeerServicer(
            self._raft,
            set(cfg.peers),
            self.gossip,
            self.replication,
            send_raft=self._send_raft,
            traffic=self.traffic,
            tls=cfg.tls() is not None,
            audit=self.audit,
        )
        pb_grpc.add_PeerServicer_to_server(self._peer_servicer, server)
        health_servicer = health.aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
        reflection.enable_server_reflection(
            (*SERVICE_NAMES, health.SERVICE_NAME, reflection.SERVICE_NAME), server
        )
        tls = cfg.tls()
        if tls is None:
            server.add_insecure_port(cfg.listen)
        else:
            server.add_secure_port(cfg.listen, tls.server_credentials())
        await self.system.start()
        if self._raft is not None:
            for peer_id, address in cfg.peers.items():
                link = RaftLink(
                    cfg.node_id,
                    peer_id,
                    address,
                    token,
                    self._raft,
                    traffic=self.traffic,
                    tls=cfg.tls(),
                    stream=cfg.raft.stream_links,
                )
                self._links[peer_id] = link
                link.start()
        await server.start()
        await self.gossip.start()
        assert self.replication is not None
        self.replication.start()
        self.metrics.start()
        if self.backups is not None:
            self.backups.start()
        if self.wal is not None:
            self.wal.start()
        if self.scrubber is not None:
            self.scrubber.start()
        self.atrest.start()
        self.policy.start()
        if self.audit_export is not None:
            self.audit_export.start()
        self.exporter.start()
        if self.http is not None:
            await self.http.start()
        for name in ("", *SERVICE_NAMES):
            await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
        self._health_servicer = health_servicer
        log.info(
            "node %s serving on %s (data %s, peers %s)",
            cfg.node_id,
            cfg.listen,
            os.path.abspath(cfg.data_path),
            ",".join(f"{k}={v}" for k, v in sorted(cfg.peers.items())) or "none",
        )

    async def stop(self) -> None:
        log.info("node %s stopping", self.config.node_id)
        if self._health_servicer is not None:
            await self._health_servicer.enter_graceful_shutdown()
        if self.http is not None:
            await self.http.stop()
        await self.metrics.stop()
        if self.backups is not None:
            await self.backups.stop()
        if self.wal is not None:
            await self.wal.stop()
        if self.scrubber is not None:
            await self.scrubber.stop()
        if self.atrest is not None:
            await self.atrest.close()
        await self.policy.close()
        if self.audit_export is not None:
            await self.audit_export.close()
        await self.exporter.close()
        await self.gossip.stop()
        if self._server is not None:
            await self._server.stop(grace=1.0)
        if self.replication is not None:
            await self.replication.stop()
        if self.store is not None:
            await self.store.aclose()
        for link in self._links.values():
            await link.close()
        if self._cluster is not None:
            await self._cluster.close()
        await self.system.stop()
        if self.audit is not None:
            await asyncio.to_thread(self.audit.close)

    async def serve_forever(self) -> None:
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        if self.http is not None:  # gRPC picks up new TLS files at every handshake
            loop.add_signal_handler(signal.SIGHUP, self.http.reload_tls)
        # What the process holds before anything runs (its modules, its config) goes
        # out of later collections now, while no Raft timer can miss a beat: the
        # collection after catch-up then walks only what start() and the catch-up made.
        early = settle()
        log.info(
            "node %s: %d objects out of later full collections before start (%.0f ms)",
            self.config.node_id,
            early.frozen,
            early.seconds * 1e3,
        )
        await self.start()
        settling = asyncio.create_task(self._settle_when_caught_up())
        await stop.wait()
        settling.cancel()
        await self.stop()

    async def _settle_when_caught_up(self, timeout_s: float = 120.0) -> None:
        """Once the system tier has applied all it knows to be committed (a restored
        snapshot and journal, or what the leader sent since), take everything the node
        holds so far out of later full garbage collections (``gcpause.settle``): its
        modules and servers, and the state it restored, which it keeps for good."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while loop.time() < deadline:
            info = self.system.info()
            if info.has_quorum and info.applied_index >= info.commit_index:
                break
            await asyncio.sleep(0.5)
        took = settle()
        log.info(
            "node %s: %d objects out of later full collections (%.0f ms)",
            self.config.node_id,
            took.frozen,
            took.seconds * 1e3,
        )


def run_node(config: NodeConfig) -> None:
    # Two busy threads (the event loop and the Raft tick) share the GIL; the
    # default 5 ms switch interval would add up to 5 ms per hand-off to every
    # commit. 0.5 ms keeps hand-offs short at a small throughput cost.
    sys.setswitchinterval(config.gil_switch_interval_s)
    if config.gc_young_threshold:
        gc.set_threshold(config.gc_young_threshold, *gc.get_threshold()[1:])
    PAUSES.install()
    asyncio.run(NodeServer(config).serve_forever())


_PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")


def _resident_bytes() -> int:
    """This process's resident set (Linux ``/proc/self/statm``); 0 where there is none."""
    try:
        with open("/proc/self/statm", "rb") as f:
            return int(f.read().split()[1]) * _PAGE_SIZE
    except (OSError, ValueError, IndexError):
        return 0


def _data_files(path: str) -> list[tuple[str, int]]:
    """``(name, bytes)`` of each entry of the data directory, sorted; a directory's size
    is what its files hold. Entries that vanish meanwhile are skipped."""
    out: list[tuple[str, int]] = []
    try:
        entries = sorted(os.scandir(path), key=lambda e: e.name)
    except OSError:
        return out
    for entry in entries:
        try:
            if entry.is_dir(follow_symlinks=False):
                size = sum(
                    os.path.getsize(os.path.join(root, f))
                    for root, _dirs, files in os.walk(entry.path)
                    for f in files
                )
            else:
                size = entry.stat(follow_symlinks=False).st_size
        except OSError:
            continue
        out.append((entry.name, size))
    return out
