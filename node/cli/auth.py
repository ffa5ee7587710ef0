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
from collections.abc import Callable, Sequence
from typing import Any

import click

from node.authn import hash_password, looks_like_token
from node.cli.app import EXIT_FAILURE, EXIT_USAGE, _fail, _handle_errors
from node.rbac import PERMS, POLICY_KEY, TIERS, Grant, Policy, PolicyError

_USER = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")

__all__ = ["auth"]


@click.group()
def auth() -> None:
    """Roles and who holds them: role add|grant|revoke|remove, user add|grant-role|
    revoke-role|remove, password, enable, disable, show; login and whoami."""


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


def _grants(texts: tuple[str, ...]) -> tuple[Grant, ...]:
    parsed = []
    for text in texts:
        perm, sep, rest = text.partition(":")
        tier, sep2, prefix = rest.partition(":")
        if not sep or not sep2:
            _fail(f"{text!r}: a grant is PERM:TIER:PREFIX", EXIT_USAGE)
        try:
            parsed.append(Grant(perm, tier, prefix))
        except PolicyError as exc:
            _fail(f"{text!r}: {exc}", EXIT_USAGE)
    return tuple(parsed)


def _name(name: str) -> str:
    if not _USER.match(name):
        _fail(f"{name!r}: a name is 1-64 of [A-Za-z0-9_.-]", EXIT_USAGE)
    return name


def _grants_of(p: Policy, role: str) -> tuple[Grant, ...]:
    if role not in (p.roles or {}):
        raise PolicyError(f"no role {role!r} (tadpole auth role add {role})")
    return (p.roles or {})[role]


def _adjusted(
    held: tuple[Any, ...], items: Sequence[Any], add: bool, lacks: str
) -> tuple[Any, ...]:
    """``held`` with ``items`` added (once each), or taken away (each must be there:
    else PolicyError ``lacks`` naming the first that is not)."""
    if add:
        return held + tuple(i for i in dict.fromkeys(items) if i not in held)
    absent = [i for i in items if i not in held]
    if absent:
        raise PolicyError(lacks.format(absent[0]))
    return tuple(i for i in held if i not in items)


def _set_role(p: Policy, role: str, grants: tuple[Grant, ...] | None) -> Policy:
    roles = dict(p.roles or {})
    if grants is None:
        roles.pop(role, None)
    else:
        roles[role] = grants
    return dataclasses.replace(p, roles=roles)


def _show_role(p: Policy, role: str) -> None:
    grants = (p.roles or {}).get(role)
    shown = "removed" if grants is None else "; ".join(map(str, grants)) or "(no grants)"
    click.echo(f"role {role}: {shown}")


_GRANT_HELP = (
    f"A grant is PERM:TIER:PREFIX: perm {'|'.join(PERMS)}, tier {'|'.join(TIERS)}, "
    "a key prefix (may be empty)."
)


@auth.group(name="role")
def role_group() -> None:
    """Roles: what they grant (PERM:TIER:PREFIX)."""


@role_group.command(name="add", epilog=_GRANT_HELP)
@click.argument("name")
@click.argument("grants", nargs=-1, metavar="[GRANT]...")
@click.pass_obj
@_handle_errors
def role_add_command(settings: Any, name: str, grants: tuple[str, ...]) -> None:
    """Make role NAME, granting GRANTs (or nothing yet)."""
    parsed = _grants(grants)

    def edit(p: Policy) -> Policy:
        if _name(name) in (p.roles or {}):
            raise PolicyError(f"role {name!r} exists (tadpole auth role grant {name} ...)")
        return _set_role(p, name, parsed)

    _show_role(_change(settings, edit), name)


@role_group.command(name="grant", epilog=_GRANT_HELP)
@click.argument("name")
@click.argument("grants", nargs=-1, required=True, metavar="GRANT...")
@click.pass_obj
@_handle_errors
def role_grant_command(settings: Any, name: str, grants: tuple[str, ...]) -> None:
    """Add GRANTs to role NAME."""
    parsed = _grants(grants)

    def edit(p: Policy) -> Policy:
        return _set_role(p, name, _adjusted(_grants_of(p, name), parsed, True, ""))

    _show_role(_change(settings, edit), name)


@role_group.command(name="revoke", epilog=_GRANT_HELP)
@click.argument("name")
@click.argument("grants", nargs=-1, required=True, metavar="GRANT...")
@click.pass_obj
@_handle_errors
def role_revoke_command(settings: Any, name: str, grants: tuple[str, ...]) -> None:
    """Take GRANTs away from role NAME (each must be one it has)."""
    parsed = _grants(grants)

    def edit(p: Policy) -> Policy:
        lacks = f"role {name!r} does not grant {{}}"
        return _set_role(p, name, _adjusted(_grants_of(p, name), parsed, False, lacks))

    _show_role(_change(settings, edit), name)


@role_group.command(name="remove")
@click.argument("name")
@click.pass_obj
@_handle_errors
def role_remove_command(settings: Any, name: str) -> None:
    """Remove role NAME (no user may hold it)."""

    def edit(p: Policy) -> Policy:
        _grants_of(p, name)
        holders = sorted(u for u, held in (p.users or {}).items() if name in held)
        if holders:
            raise PolicyError(
                f"role {name!r} is held by {', '.join(holders)}; "
                f"tadpole auth user revoke-role {holders[0]} {name} first"
            )
        return _set_role(p, name, None)

    _show_role(_change(settings, edit), name)


def _set_user(p: Policy, user: str, roles: tuple[str, ...] | None) -> Policy:
    users = dict(p.users or {})
    if roles is None:
        users.pop(user, None)
    else:
        users[user] = roles
    return dataclasses.replace(p, users=users)


def _show_user(p: Policy, user: str) -> None:
    roles = (p.users or {}).get(user)
    shown = "removed" if roles is None else ", ".join(roles) or "(no roles)"
    click.echo(f"user {user}: {shown}")


@auth.group(name="user")
def user_group() -> None:
    """Users: a client certificate's name (client/NAME), or a name that logs in with a
    password (tadpole auth password), and the roles it holds."""


@user_group.command(name="add")
@click.argument("name")
@click.argument("roles", nargs=-1, metavar="[ROLE]...")
@click.pass_obj
@_handle_errors
def user_add_command(settings: Any, name: str, roles: tuple[str, ...]) -> None:
    """Name user NAME, holding ROLEs (or none yet)."""

    def edit(p: Policy) -> Policy:
        if _name(name) in (p.users or {}):
            raise PolicyError(f"user {name!r} exists (tadpole auth user grant-role {name} ...)")
        for role in roles:
            _grants_of(p, role)
        return _set_user(p, name, tuple(dict.fromkeys(roles)))

    _show_user(_change(settings, edit), name)


@user_group.command(name="grant-role")
@click.argument("name")
@click.argument("roles", nargs=-1, required=True, metavar="ROLE...")
@click.pass_obj
@_handle_errors
def user_grant_role_command(settings: Any, name: str, roles: tuple[str, ...]) -> None:
    """Let user NAME hold ROLEs too (a user named here for the first time is added:
    a certificate's name needs no add)."""

    def edit(p: Policy) -> Policy:
        for role in roles:
            _grants_of(p, role)
        held = (p.users or {}).get(_name(name), ())
        return _set_user(p, name, _adjusted(held, roles, True, ""))

    _show_user(_change(settings, edit), name)


@user_group.command(name="revoke-role")
@click.argument("name")
@click.argument("roles", nargs=-1, required=True, metavar="ROLE...")
@click.pass_obj
@_handle_errors
def user_revoke_role_command(settings: Any, name: str, roles: tuple[str, ...]) -> None:
    """Take ROLEs away from user NAME (each must be one it holds)."""

    def edit(p: Policy) -> Policy:
        held = (p.users or {}).get(name)
        if held is None:
            raise PolicyError(f"no user {name!r}")
        lacks = f"user {name!r} does not hold role {{!r}}"
        return _set_user(p, name, _adjusted(held, roles, False, lacks))

    _show_user(_change(settings, edit), name)


@user_group.command(name="remove")
@click.argument("name")
@click.pass_obj
@_handle_errors
def user_remove_command(settings: Any, name: str) -> None:
    """Remove user NAME: its roles, and its password (no more logins; a token it holds
    names nobody with roles from its next call)."""

    def edit(p: Policy) -> Policy:
        if name not in (p.users or {}) and name not in (p.passwords or {}):
            raise PolicyError(f"no user {name!r}")
        passwords = {u: h for u, h in (p.passwords or {}).items() if u != name}
        return dataclasses.replace(_set_user(p, name, None), passwords=passwords)

    _show_user(_change(settings, edit), name)


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
    _name(name)
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
