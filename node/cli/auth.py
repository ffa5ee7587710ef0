"""``tadpole auth``: roles and who holds them (docs/security.md#roles).

Every command here is root's: it needs the operator token (``--token-file``), which is
never checked against the roles, so no policy can lock it out. The policy is one key of
the system tier, changed by compare-and-swap: two operators editing at once cannot
lose each other's change (the second is told to retry).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click

from node.cli.app import EXIT_FAILURE, EXIT_USAGE, _fail
from node.rbac import PERMS, POLICY_KEY, TIERS, Grant, Policy, PolicyError

__all__ = ["auth"]


@click.group()
def auth() -> None:
    """Roles: enable, disable, show; grant roles to certificate names."""


def _read(settings: Any) -> tuple[Policy, int]:
    if not settings.token:
        _fail("auth commands are root's: --token-file FILE (the operator token)", EXIT_USAGE)
    kv = settings.client().get(POLICY_KEY)
    if kv is None:
        return Policy(), 0
    try:
        return Policy.parse(kv.value), kv.mod_revision
    except PolicyError as exc:
        _fail(f"{POLICY_KEY}: {exc}")


def _change(settings: Any, edit: Callable[[Policy], Policy]) -> Policy:
    policy, revision = _read(settings)
    try:
        new = edit(policy)
        Policy.parse(new.to_json())  # what is stored must read back
    except PolicyError as exc:
        _fail(f"not changed: {exc}", EXIT_USAGE)
    if not settings.client().cas(
        POLICY_KEY, new_value=new.to_json(), expected_mod_revision=revision
    ):
        _fail("not changed: the policy changed meanwhile; run the command again")
    return new


@auth.command(name="show")
@click.pass_obj
def show_command(settings: Any) -> None:
    """The policy: whether it is enabled, the roles and their holders."""
    policy, _ = _read(settings)
    click.echo(f"roles are {'ENABLED' if policy.enabled else 'disabled'}")
    for name, grants in sorted((policy.roles or {}).items()):
        click.echo(f"role {name}: " + ("; ".join(str(g) for g in grants) or "(no grants)"))
    for name, roles in sorted((policy.users or {}).items()):
        click.echo(f"user {name}: {', '.join(roles) or '(no roles)'}")


@auth.command(name="enable")
@click.pass_obj
def enable_command(settings: Any) -> None:
    """Enforce the roles: from now on a client may do only what its roles grant (the
    operator token stays root)."""
    _change(settings, lambda p: Policy(True, p.roles, p.users))
    click.echo("roles are ENABLED (every node within a second)")


@auth.command(name="disable")
@click.pass_obj
def disable_command(settings: Any) -> None:
    """Stop enforcing the roles (they are kept)."""
    _change(settings, lambda p: Policy(False, p.roles, p.users))
    click.echo("roles are disabled")


@auth.command(name="role")
@click.argument("name")
@click.option("--grant", "grants", multiple=True, metavar="PERM:TIER:PREFIX",
              help=f"perm {'|'.join(PERMS)}, tier {'|'.join(TIERS)}, key prefix "
              "(may be empty); repeatable. None: the role is removed.")  # fmt: skip
@click.pass_obj
def role_command(settings: Any, name: str, grants: tuple[str, ...]) -> None:
    """Set role NAME's grants (replacing them), or remove it."""
    parsed = []
    for text in grants:
        perm, sep, rest = text.partition(":")
        tier, sep2, prefix = rest.partition(":")
        if not sep or not sep2:
            _fail(f"--grant {text!r}: use PERM:TIER:PREFIX", EXIT_USAGE)
        try:
            parsed.append(Grant(perm, tier, prefix))
        except PolicyError as exc:
            _fail(f"--grant {text!r}: {exc}", EXIT_USAGE)

    def edit(p: Policy) -> Policy:
        roles = dict(p.roles or {})
        if parsed:
            roles[name] = tuple(parsed)
        else:
            if any(name in held for held in (p.users or {}).values()):
                raise PolicyError(f"role {name!r} is still held; take it from its users first")
            roles.pop(name, None)
        return Policy(p.enabled, roles, p.users)

    _change(settings, edit)
    click.echo(f"role {name}: " + ("; ".join(str(g) for g in parsed) or "removed"))


@auth.command(name="user")
@click.argument("name")
@click.option("--role", "roles", multiple=True, help="A role to hold; repeatable. None: removed.")
@click.pass_obj
def user_command(settings: Any, name: str, roles: tuple[str, ...]) -> None:
    """Set the roles of NAME (a client certificate's name, client/NAME), replacing them."""

    def edit(p: Policy) -> Policy:
        users = dict(p.users or {})
        if roles:
            unknown = [r for r in roles if r not in (p.roles or {})]
            if unknown:
                raise PolicyError(f"no role {unknown[0]!r}")
            users[name] = tuple(roles)
        else:
            users.pop(name, None)
        return Policy(p.enabled, p.roles, users)

    _change(settings, edit)
    click.echo(f"user {name}: {', '.join(roles) or 'removed'}")


@auth.command(name="whoami")
@click.pass_obj
def whoami_command(settings: Any) -> None:
    """Who this CLI is to the cluster, and what that may do."""
    cert = settings.tls.cert if settings.tls is not None else ""
    if settings.token:
        click.echo("root (the operator token)")
        return
    if not cert:
        click.echo("an unidentified client (no certificate, no operator token)")
        raise SystemExit(EXIT_FAILURE)
    from cryptography import x509
    from cryptography.x509.oid import NameOID

    with open(cert, "rb") as f:
        subject = x509.load_pem_x509_certificate(f.read()).subject
    name = str(subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value)
    click.echo(name)
