"""What security costs: system-tier put and get with mutual TLS and roles off and on,
in the same run.

    .venv/bin/python bench/security_bench.py [--rounds 3] [--seconds 5] [--clients 1,64]

Fresh three-node clusters, alternately plaintext without roles ("off") and mutual TLS
with roles enabled ("on": the load generator presents the certificate of a user whose
one role grants write on the keys it touches, so every call is checked against the
policy), ``--rounds`` of each, so drift of a shared, noisy machine hits both alike. In
every cluster: puts (256-byte values) then linearizable gets at each ``--clients``
level for ``--seconds`` (``bench/system_quick.py``'s load generator, against the
leader). Reports the median ops/s and p50 per mode and the on/off ratio.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from system_quick import Tls, find_leader, measure, off_on_summary, print_off_on

from node.certs import issue
from node.dev.cluster import LocalCluster, exit_on_sigterm, free_base_port

OPS = ("put", "get")


def _enable_roles(cluster: LocalCluster) -> Tls:
    """Make the user ``bench`` (write on system keys under ``bench/``), enable roles and
    return the files its load generator presents."""
    issue(cluster.tls_dir, cluster.tls_dir, "bench", client="bench")
    cli = cluster.client_tls()
    assert cli is not None
    base = [sys.executable, "-m", "node.cli", "--endpoints", cluster.endpoints,
            "--ca-file", cli.ca, "--cert-file", cli.cert, "--key-file", cli.key,
            "--token-file", cluster.token_file, "auth"]  # fmt: skip
    for args in (
        ("role", "add", "bench", "write:system:bench/"),
        ("user", "add", "bench", "bench"),
        ("enable",),
    ):
        subprocess.run([*base, *args], check=True, capture_output=True)
    time.sleep(1.5)  # every node reads the policy within a second
    d = cluster.tls_dir
    return (f"{d}/ca.pem", f"{d}/bench.pem", f"{d}/bench.key")


def one_cluster(work: str, secure: bool, args: argparse.Namespace) -> list[dict[str, Any]]:
    root = tempfile.mkdtemp(prefix="on-" if secure else "off-", dir=work)
    cluster = LocalCluster(root, ["n1", "n2", "n3"], free_base_port(3), tls=secure)
    cluster.start()
    try:
        cluster.wait_leader(30, all_up=True)
        tls = _enable_roles(cluster) if secure else None
        leader = find_leader(cluster.endpoints.split(","), tls)
        rows = [
            measure(leader, int(c), args.seconds, op, args.procs, tls)
            for op in OPS
            for c in args.clients.split(",")
        ]
    finally:
        cluster.stop()
        shutil.rmtree(root, ignore_errors=True)
    for row in rows:
        row["secure"] = secure
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--clients", default="1,64")
    parser.add_argument("--procs", type=int, default=2, help="load generator processes")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    exit_on_sigterm()  # the finally blocks stop the nodes
    work = tempfile.mkdtemp(prefix="tadpole-security-bench-")
    rows: list[dict[str, Any]] = []
    try:
        for n in range(args.rounds):
            for secure in (False, True):
                print(f"round {n + 1}/{args.rounds}: TLS and roles {'on' if secure else 'off'}",
                      file=sys.stderr)  # fmt: skip
                rows.extend(one_cluster(work, secure, args))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    summary = off_on_summary(rows, "secure")
    if args.json:
        json.dump({"rows": rows, "summary": summary}, sys.stdout, indent=1)
        print()
        return
    print(f"medians of {args.rounds} fresh clusters per mode, {args.seconds:.0f} s per row;"
          " off = plaintext, no roles; on = mutual TLS, roles enabled")  # fmt: skip
    print_off_on(summary)


if __name__ == "__main__":
    main()
