"""``tadpole keys``: encryption at rest (docs/security.md) -- make a key, see what every
node's files are under, rotate to a new key.

``status`` and ``rotate`` ask every member and need the operator token
(``--token-file``). Keys are shown by name and fingerprint, never their bytes.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from typing import Any

import click
import grpc
from google.protobuf.json_format import MessageToDict

from consensus.atrest import Keyring, KeyringError, generate_line
from consensus.durable import fsync_dir
from node.cli.app import EXIT_FAILURE, EXIT_USAGE, _fail, write_new_private_file
from node.cli.members import ask_every_member
from node.pb import tadpole_pb2 as pb
from node.pb import tadpole_pb2_grpc as pb_grpc

__all__ = ["keys"]


@click.group()
def keys() -> None:
    """Encryption at rest: generate keys, show what data is under which, rotate."""


@keys.command(name="generate")
@click.option("--name", default="", help="The key's name (default: k<unix time>).")
@click.option("--out", type=click.Path(dir_okay=False), default=None,
              help="Write a new keyring file holding just this key (mode 0600).")  # fmt: skip
@click.option("--add-to", "add_to", type=click.Path(dir_okay=False, exists=True), default=None,
              help="Put the key first in this keyring file: new writes go under it after"
              " `tadpole keys rotate`; the old keys stay to read older data.")  # fmt: skip
def generate_command(name: str, out: str | None, add_to: str | None) -> None:
    """Make a new AES-256 key; print its keyring line, or write it to a file."""
    try:
        line = generate_line(name or f"k{int(time.time())}")
    except KeyringError as exc:
        _fail(str(exc), EXIT_USAGE)
    if out and add_to:
        _fail("give --out or --add-to, not both", EXIT_USAGE)
    if out:
        write_new_private_file(out, line + "\n", "a keyring")
        click.echo(f"wrote {out} (key {line.split(':', 1)[0]})")
    elif add_to:
        _prepend(add_to, line)
        click.echo(f"{add_to}: key {line.split(':', 1)[0]} is now first; run `tadpole keys rotate`")
    else:
        click.echo(line)


def _prepend(path: str, line: str) -> None:
    """Put ``line`` first in the keyring file at ``path``, replaced atomically with the
    same mode and owner; refused (nothing changed) if the result would not be a valid
    keyring (a name already in it, a malformed file)."""
    try:
        st = os.stat(path)
        with open(path, encoding="utf-8") as f:
            old = f.read()
    except (OSError, UnicodeDecodeError) as exc:
        _fail(f"{path}: {getattr(exc, 'strerror', None) or exc}", EXIT_FAILURE)
    text = line + "\n" + old
    try:
        Keyring.parse(text, path)
    except KeyringError as exc:
        _fail(f"not changed: {exc}", EXIT_USAGE)
    tmp = path + ".tmp"
    try:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)  # left by an earlier run that failed
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, st.st_mode & 0o777)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chown(tmp, st.st_uid, st.st_gid)
        os.replace(tmp, path)
        fsync_dir(os.path.dirname(os.path.abspath(path)))
    except OSError as exc:
        _fail(f"{path}: {exc.strerror or exc}", EXIT_FAILURE)


_JSON = click.option("--json", "as_json", is_flag=True, help="Print JSON.")


@keys.command(name="status")
@_JSON
@click.pass_obj
def status_command(settings: Any, as_json: bool) -> None:
    """What every node's journal, snapshot and tier store are encrypted under."""
    replies = _ask(settings, "Status")
    _show(replies, as_json)
    if any(isinstance(r, str) for r in replies.values()):
        raise SystemExit(EXIT_FAILURE)


@keys.command(name="rotate")
@click.option("--no-wait", is_flag=True, help="Return once every node has started.")
@click.option("--wait-timeout", default=600.0, show_default=True, metavar="SECONDS",
              help="How long to wait for the re-seal to finish.")  # fmt: skip
@_JSON
@click.pass_obj
def rotate_command(settings: Any, no_wait: bool, wait_timeout: float, as_json: bool) -> None:
    """Every node reads its keyring file again, writes under its first key from now on
    and re-seals older data in the background; then wait until all of it is under
    that key. Put the new key first in every node's keyring file before (`tadpole keys
    generate --add-to FILE`); remove the old one only after."""
    replies = _ask(settings, "Rotate")
    failed = {n: r for n, r in replies.items() if isinstance(r, str) or r.last_error}
    deadline = time.monotonic() + wait_timeout
    while not no_wait and not failed and not _finished(replies):
        if time.monotonic() > deadline:
            _show(replies, as_json)
            _fail(f"re-seal not finished after {wait_timeout:.0f} s; see `tadpole keys status`")
        time.sleep(0.5)
        replies = _ask(settings, "Status")
        failed = {n: r for n, r in replies.items() if isinstance(r, str) or r.last_error}
    _show(replies, as_json)
    if failed:
        raise SystemExit(EXIT_FAILURE)


def _finished(replies: dict[str, pb.KeysStatusResponse | str]) -> bool:
    for reply in replies.values():
        if isinstance(reply, str):
            return False
        if reply.resealing or reply.last_error:
            return False
        if any(c.key != reply.primary and c.values for c in reply.store):
            return False
        if reply.journal not in ("-", reply.primary) or reply.snapshot not in ("-", reply.primary):
            return False
    return True


def _ask(settings: Any, method: str) -> dict[str, pb.KeysStatusResponse | str]:
    request = pb.KeysRotateRequest() if method == "Rotate" else pb.KeysStatusRequest()

    async def call(channel: grpc.aio.Channel, metadata: Any, timeout_s: float) -> Any:
        stub = pb_grpc.KeysStub(channel)
        return await getattr(stub, method)(request, timeout=timeout_s, metadata=metadata)

    return ask_every_member(settings, f"keys {method.lower()}", call)


def _show(replies: dict[str, pb.KeysStatusResponse | str], as_json: bool) -> None:
    if as_json:
        out = {
            node: r
            if isinstance(r, str)
            else MessageToDict(r, always_print_fields_with_no_presence=True)
            for node, r in sorted(replies.items())
        }
        click.echo(json.dumps(out, indent=1))
        return
    for node, r in sorted(replies.items()):
        if isinstance(r, str):
            click.echo(f"{node}: {r}")
            continue
        if not r.enabled:
            click.echo(f"{node}: encryption at rest is off")
            continue
        state = "re-sealing" if r.resealing else "done"
        if r.last_error:
            state = f"FAILED: {r.last_error}"
        click.echo(f"{node}: writes under {r.primary}; {state}")
        click.echo(f"  journal   {r.journal or 'plaintext'}")
        click.echo(f"  snapshot  {r.snapshot or 'plaintext'}")
        for count in r.store:
            click.echo(f"  store     {count.key or 'plaintext'}: {count.values} values")
