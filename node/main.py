"""``tadpole node``: run one node process.

Settings come from defaults < ``--config`` TOML file < ``TADPOLE_*``
environment < flags; ``docs/configuration.md`` lists every one.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import Any

import click

from node.config import ConfigError, load_config


@click.command("node")
@click.option("--config", "config_file", type=click.Path(dir_okay=False), help="TOML config file.")
@click.option("--id", "node_id", help="Node id (default n1).")
@click.option("--listen", help="host:port to serve gRPC on (default 127.0.0.1:7101).")
@click.option("--advertise", help="host:port others use to reach this node (default: --listen).")
@click.option("--peers", help="Other members: id=host:port,... (default: none).")
@click.option("--data-dir", help="Data directory (default ./data/<id>).")
@click.option("--cluster-secret-file", help="File with the shared cluster secret.")
@click.option("--encryption-key-file", help="Keyring: AES-256-GCM encryption at rest (off).")
@click.option("--max-value-bytes", type=int, help="Largest accepted value (default 1048576).")
@click.option("--request-timeout", "request_timeout_s", type=float, help="Commit wait, s (10).")
@click.option("--system-backend", help="raft (default) or etcd.")
@click.option("--etcd-endpoints", help="etcd endpoints for --system-backend etcd: HOST:PORT,...")
@click.option("--http-listen", help="host:port for the HTTP API, /metrics and /healthz (off).")
@click.option("--log-level", help="DEBUG, INFO, WARNING... (default INFO).")
@click.option("--pid-file", type=click.Path(dir_okay=False), help="Write the process id here.")
@click.option(
    "--set",
    "settings",
    multiple=True,
    metavar="NAME=VALUE",
    help="Any other setting, e.g. --set raft.election_timeout_min_s=0.2 (repeatable).",
)
def node_command(
    config_file: str | None, pid_file: str | None, settings: tuple[str, ...], **flags: Any
) -> None:
    """Run one Tadpole State node in the foreground."""
    overrides: dict[str, Any] = dict(flags)
    for item in settings:
        name, sep, value = item.partition("=")
        if not sep:
            raise click.BadParameter(f"{item!r} is not NAME=VALUE", param_hint="--set")
        overrides[name.strip()] = value
    try:
        config = load_config(toml_path=config_file, overrides=overrides)
    except ConfigError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(2)
    logging.basicConfig(
        level=config.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    # Everything the node creates (journal, snapshots, tiers.db and its WAL, audit log,
    # archives) is its own: 0600 files, 0700 directories.
    os.umask(0o077)
    _warn_if_shared(config.data_path)
    if pid_file:
        with open(pid_file, "w") as f:
            f.write(f"{os.getpid()}\n")
    from consensus.errors import JournalError, SnapshotError
    from node.replication.store import StoreOpenError
    from node.server import run_node

    try:
        run_node(config)
    except (JournalError, SnapshotError, StoreOpenError) as exc:
        # The data directory cannot be used as it is (damaged, or encrypted under a key
        # this node lacks): say so, without a traceback, and change nothing.
        logging.getLogger("node").error("node %s cannot start: %s", config.node_id, exc)
        click.echo(f"error: {exc}", err=True)
        sys.exit(1)
    finally:
        if pid_file and os.path.exists(pid_file):
            os.unlink(pid_file)


def _warn_if_shared(data_dir: str) -> None:
    try:
        mode = os.stat(data_dir).st_mode
    except FileNotFoundError:
        return
    if mode & 0o077:
        logging.getLogger("node").warning(
            "data directory %s is mode %04o: other users may read what it holds (chmod 700 %s)",
            data_dir,
            mode & 0o777,
            data_dir,
        )


if __name__ == "__main__":
    node_command()
