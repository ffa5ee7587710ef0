"""``tadpole certs``: a CA and certificates for a cluster's TLS (docs/security.md#tls)."""

from __future__ import annotations

import click

from node.certs import CertError, create_ca, issue
from node.cli.app import EXIT_USAGE, _fail

__all__ = ["certs"]


@click.group()
def certs() -> None:
    """Make the cluster CA and node and client certificates (ECDSA P-256)."""


@certs.command(name="create-ca")
@click.option("--dir", "directory", required=True, help="Where to write ca.pem and ca.key.")
@click.option("--days", type=click.IntRange(min=1), default=3650, show_default=True)
def create_ca_command(directory: str, days: int) -> None:
    """Create a CA (ca.pem; ca.key mode 0600: keep it off the nodes)."""
    try:
        made = create_ca(directory, days=days)
    except (CertError, OSError) as exc:
        _fail(str(exc), EXIT_USAGE)
    click.echo(f"wrote {made.cert} and {made.key}")


@certs.command(name="issue")
@click.option("--ca-dir", required=True, help="The directory holding ca.pem and ca.key.")
@click.option("--out", "out_dir", required=True, help="Where to write NAME.pem and NAME.key.")
@click.option("--node", "node_id", default="", help="Issue the certificate of this node id.")
@click.option("--client", default="", help="Issue a client certificate with this name.")
@click.option("--host", "hosts", multiple=True,
              help="An address the node is reached at (IP or DNS; repeatable).")  # fmt: skip
@click.option("--days", type=click.IntRange(min=1), default=825, show_default=True)
@click.option("--force", is_flag=True, help="Replace existing files (certificate rotation).")
def issue_command(
    ca_dir: str,
    out_dir: str,
    node_id: str,
    client: str,
    hosts: tuple[str, ...],
    days: int,
    force: bool,
) -> None:
    """Issue a node certificate (node/<id>; server and client use) or a client one."""
    try:
        made = issue(
            ca_dir, out_dir, node_id or client, node_id=node_id, client=client,
            hosts=hosts, days=days, overwrite=force,
        )  # fmt: skip
    except (CertError, OSError) as exc:
        _fail(str(exc), EXIT_USAGE)
    click.echo(f"wrote {made.cert} and {made.key}")
