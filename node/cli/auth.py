"""``tadpole auth``: roles and who holds them (docs/security.md#roles).

Every command here but ``login`` and ``whoami`` is root's: it needs the operator token
(``--token-file``), which is never checked against the roles, so no policy can lock it
out. The policy is one key of the system tier, changed by compare-and-swap: two
operators editing at once cannot lose each other's change (the second is told to
retry).
"""

from __future__ import annotations

import dataclasses
import os
import re
import sys
import time
from collections.abc import Callable
from typing import Any

import click

from node.authn import hash_password, looks_like_token
from node.cli.app import EXIT_FAILURE, EXIT_USAGE, _fail, _handle_errors
from node.rbac import PERMS, POLICY_KEY, TIERS, Grant, Policy, PolicyError

_USER = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")

__all__ = ["auth"]


@click.group()
def auth() -> None:
    """Roles: enable, disable, show; grant roles to users (certificate names, or
    passwords for a login token)."""


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
@_handle_errors
def show_command(settings: Any) -> None:
    """The policy: whether it is enabled, the roles and their holders."""
    policy, _ = _read(settings)
    click.echo(f"roles are {'ENABLED' if policy.enabled else 'disabled'}")
    for name, grants in sorted((policy.roles or {}).items()):
        click.echo(f"role {name}: " + ("; ".join(str(g) for g in grants) or "(no grants)"))
    passwords = policy.passwords or {}
    for name in sorted(set(policy.users or {}) | set(passwords)):
        roles = (policy.users or {}).get(name, ())
        login = " (may log in with a password)" if name in passwords else ""
        click.echo(f"user {name}: {', '.join(roles) or '(no roles)'}{login}")


@auth.command(name="enable")
@click.pass_obj
@_handle_errors
def enable_command(settings: Any) -> None:
    """Enforce the roles: from now on a client may do only what its roles grant (the
    operator token stays root)."""
    _change(settings, lambda p: dataclasses.replace(p, enabled=True))
    click.echo("roles are ENABLED (every node within a second)")


@auth.command(name="disable")
@click.pass_obj
@_handle_errors
def disable_command(settings: Any) -> None:
    """Stop enforcing the roles (they are kept)."""
    _change(settings, lambda p: dataclasses.replace(p, enabled=False))
    click.echo("roles are disabled")


@auth.command(name="role")
@click.argument("name")
@click.option("--grant", "grants", multiple=True, metavar="PERM:TIER:PREFIX",
              help=f"perm {'|'.join(PERMS)}, tier {'|'.join(TIERS)}, key prefix "
              "(may be empty); repeatable. None: the role is removed.")  # fmt: skip
@click.pass_obj
@_handle_errors
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
        return dataclasses.replace(p, roles=roles)

    _change(settings, edit)
    click.echo(f"role {name}: " + ("; ".join(str(g) for g in parsed) or "removed"))


@auth.command(name="user")
@click.argument("name")
@click.option("--role", "roles", multiple=True, help="A role to hold; repeatable. None: removed.")
@click.pass_obj
@_handle_errors
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
        return dataclasses.replace(p, users=users)

    _change(settings, edit)
    click.echo(f"user {name}: {', '.join(roles) or 'removed'}")


def _password(from_stdin: bool, confirm: bool) -> str:
    if from_stdin:
        line = str(sys.stdin.readline()).rstrip("\r\n")
        if not line:
            _fail("--password-stdin: no password on standard input", EXIT_USAGE)
        return line
    return str(click.prompt("password", hide_input=True, confirmation_prompt=confirm))


@auth.command(name="password")
@click.argument("name")
@click.option("--password-stdin", is_flag=True, help="Read it from standard input's first line.")
@click.option("--remove", is_flag=True, help="Take NAME's password away (no more logins).")
@click.pass_obj
@_handle_errors
def password_command(settings: Any, name: str, password_stdin: bool, remove: bool) -> None:
    """Let NAME log in with a password (tadpole auth login) for a token, without a
    certificate of its own. Only its scrypt hash is stored, where only root may read."""
    if not _USER.match(name):
        _fail(f"{name!r}: a user is 1-64 of [A-Za-z0-9_.-]", EXIT_USAGE)
    stored = None
    if not remove:
        try:
            stored = hash_password(_password(password_stdin, confirm=True))
        except ValueError as exc:
            _fail(f"not changed: {exc}", EXIT_USAGE)

    def edit(p: Policy) -> Policy:
        passwords = dict(p.passwords or {})
        if stored is None:
            passwords.pop(name, None)
        else:
            passwords[name] = stored
        return dataclasses.replace(p, passwords=passwords)

    _change(settings, edit)
    click.echo(f"user {name}: " + ("password removed" if remove else "may log in with a password"))


@auth.command(name="login")
@click.argument("name")
@click.option("--password-stdin", is_flag=True, help="Read it from standard input's first line.")
@click.option("--out", type=click.Path(dir_okay=False), default=None,
              help="Write the token to this file (0600); else print it.")  # fmt: skip
@click.pass_obj
@_handle_errors
def login_command(settings: Any, name: str, password_stdin: bool, out: str | None) -> None:
    """Log in as NAME with its password: a short-lived token that names NAME to the
    roles (pass it as --token-file, or as `Authorization: Bearer` over HTTP)."""
    secret = _password(password_stdin, confirm=False)
    token, expires = settings.client().authenticate(name, secret)
    until = time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime(expires))
    if out is None:
        click.echo(token)
        click.echo(f"token for {name} until {until}", err=True)
        return
    fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(token + "\n")
    click.echo(f"token for {name} until {until} in {out} (tadpole --token-file {out})")


@auth.command(name="whoami")
@click.pass_obj
@_handle_errors
def whoami_command(settings: Any) -> None:
    """Who this CLI is to the cluster, and what that may do."""
    cert = settings.tls.cert if settings.tls is not None else ""
    if settings.token and looks_like_token(settings.token):
        import jwt

        claims = jwt.decode(settings.token, options={"verify_signature": False})
        until = time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime(claims.get("exp", 0)))
        click.echo(f"{claims.get('sub')} (a login token, until {until}; the cluster checks it)")
        return
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
