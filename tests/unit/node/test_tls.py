"""TLS files: the certificates ``node/certs.py`` makes, and the server contexts built
from them (``node/tls.py``)."""

from __future__ import annotations

import asyncio
import datetime
import json
import os
import pathlib
import ssl
import time

import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from node.certs import CertError, create_ca, issue
from node.tls import TlsFiles


@pytest.fixture
def ca(tmp_path: pathlib.Path) -> str:
    directory = str(tmp_path / "ca")
    create_ca(directory)
    return directory


def load(path: str) -> x509.Certificate:
    with open(path, "rb") as f:
        return x509.load_pem_x509_certificate(f.read())


def test_node_and_client_certificates_name_who_they_speak_for(
    ca: str, tmp_path: pathlib.Path
) -> None:
    node = issue(ca, str(tmp_path), "n1", node_id="n1", hosts=("10.0.0.1", "n1.example"))
    client = issue(ca, str(tmp_path), "ops", client="ops")
    n1, ops = load(node.cert), load(client.cert)
    assert n1.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "node/n1"
    assert ops.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "client/ops"
    sans = n1.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert [str(v) for v in sans] == [
        "<DNSName(value='n1.node.tadpole')>",  # the name peers check, whatever the address
        "<IPAddress(value=10.0.0.1)>",
        "<DNSName(value='n1.example')>",
    ]
    usage = ops.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(usage) == [ExtendedKeyUsageOID.CLIENT_AUTH]  # a client cannot serve
    for path in (node.key, client.key, os.path.join(ca, "ca.key")):
        assert os.stat(path).st_mode & 0o777 == 0o600
    ca_cert = load(os.path.join(ca, "ca.pem"))
    n1.verify_directly_issued_by(ca_cert)
    # a host whose clock is hours behind the issuer's still finds them valid
    hours_ago = datetime.datetime.now(datetime.UTC) - datetime.timedelta(hours=12)
    for cert in (n1, ops, ca_cert):
        assert cert.not_valid_before_utc < hours_ago


def test_bad_requests_are_refused_and_keys_never_overwritten(
    ca: str, tmp_path: pathlib.Path
) -> None:
    with pytest.raises(CertError, match="one of the two"):
        issue(ca, str(tmp_path), "x", node_id="n1", client="c")
    with pytest.raises(CertError, match="use 1-64"):
        issue(ca, str(tmp_path), "x", node_id="n/1")
    issue(ca, str(tmp_path), "n1", node_id="n1")
    with pytest.raises(CertError, match="not overwriting"):
        issue(ca, str(tmp_path), "n1", node_id="n1")
    with pytest.raises(CertError, match="cannot read the CA"):
        issue(str(tmp_path / "nowhere"), str(tmp_path), "n2", node_id="n2")


def test_the_https_context_is_tls_1_2_or_newer_and_reloads_changed_files(
    ca: str, tmp_path: pathlib.Path
) -> None:
    made = issue(ca, str(tmp_path), "n1", node_id="n1")
    files = TlsFiles(os.path.join(ca, "ca.pem"), made.cert, made.key)
    server = files.server_context(require_client_auth=True)
    assert server.context.minimum_version == ssl.TLSVersion.TLSv1_2
    assert server.context.verify_mode == ssl.CERT_REQUIRED
    assert server.maybe_reload() is False  # nothing changed
    time.sleep(0.01)
    issue(ca, str(tmp_path), "n1", node_id="n1", overwrite=True)
    assert server.maybe_reload() is True
    pathlib.Path(made.cert).write_text("not a certificate")  # half-written: keep the old one
    assert server.maybe_reload() is False


def test_the_cli_uses_the_dev_clusters_certificates_only_for_that_cluster(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from node.tls import dev_cluster_tls

    monkeypatch.chdir(tmp_path)
    assert dev_cluster_tls(["127.0.0.1:7101"]) is None  # no dev cluster here
    (tmp_path / ".cluster").mkdir()
    doc = {"nodes": {"n1": "127.0.0.1:7101", "n2": "127.0.0.1:7102"}, "tls": True}
    (tmp_path / ".cluster" / "cluster.json").write_text(json.dumps(doc))
    found = dev_cluster_tls(["127.0.0.1:7101", "127.0.0.1:7102"])
    assert found is not None and found.cert == os.path.join(".cluster", "tls", "cli.pem")
    assert dev_cluster_tls(["127.0.0.1:9999"]) is None  # another cluster: plaintext
    doc["tls"] = False
    (tmp_path / ".cluster" / "cluster.json").write_text(json.dumps(doc))
    assert dev_cluster_tls(["127.0.0.1:7101"]) is None


def test_renewal_says_once_per_change_and_looks_at_most_every_interval(
    ca: str, tmp_path: pathlib.Path
) -> None:
    from node.tls import Renewal

    made = issue(ca, str(tmp_path), "n1", node_id="n1")
    now = [0.0]
    renewal = Renewal(
        TlsFiles(os.path.join(ca, "ca.pem"), made.cert, made.key), clock=lambda: now[0]
    )
    assert renewal.due() is False
    time.sleep(0.01)
    issue(ca, str(tmp_path), "n1", node_id="n1", overwrite=True)
    assert renewal.due() is False  # not looked at again within the interval
    now[0] += 1.0
    assert renewal.due() is True
    now[0] += 1.0
    assert renewal.due() is False  # once per change
    assert Renewal(None).due() is False


async def test_the_replica_transport_reopens_its_channels_after_a_rotation(
    ca: str, tmp_path: pathlib.Path
) -> None:
    from node.replication.grpc_transport import GrpcTransport
    from node.tls import Renewal

    made = issue(ca, str(tmp_path), "n1", node_id="n1")
    files = TlsFiles(os.path.join(ca, "ca.pem"), made.cert, made.key)
    opened: list[object] = []

    class FakeChannel:
        closed = False

        def unary_unary(self, *args: object, **kwargs: object) -> object:
            return None  # a stub method that is never called here

        def stream_stream(self, *args: object, **kwargs: object) -> object:
            return None  # PeerStub's RaftStream, never called here

        async def close(self, grace: float | None = None) -> None:
            self.closed = True

    def connect(address: str, peer: str) -> object:
        opened.append(FakeChannel())
        return opened[-1]

    renewal = Renewal(files, every_s=0.0)
    transport = GrpcTransport("n1", "token", connect=connect, renewal=renewal)  # type: ignore[arg-type]
    first = transport._channel("n2", "127.0.0.1:1")[0]
    assert transport._channel("n2", "127.0.0.1:1")[0] is first  # reused
    time.sleep(0.01)
    issue(ca, str(tmp_path), "n1", node_id="n1", overwrite=True)
    second = transport._channel("n2", "127.0.0.1:1")[0]
    assert second is not first and len(opened) == 2
    await asyncio.sleep(0)
    assert first.closed  # type: ignore[attr-defined]
