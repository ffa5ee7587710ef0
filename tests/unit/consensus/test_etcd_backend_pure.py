"""The etcd backend's pure parts: key ranges, endpoint parsing, config rules."""

from __future__ import annotations

import pytest

from consensus.etcd.backend import EtcdSystem, parse_endpoint, prefix_end
from node.config import ConfigError, NodeConfig, load_config


@pytest.mark.parametrize(
    ("prefix", "end"),
    [
        (b"/t/kv/", b"/t/kv0"),
        (b"a", b"b"),
        (b"a\xff", b"b"),
        (b"\xff\xff", b"\0"),
        (b"", b"\0"),
    ],
)
def test_prefix_end_bounds_exactly_the_prefix(prefix: bytes, end: bytes) -> None:
    assert prefix_end(prefix) == end


def test_prefix_end_against_byte_order_oracle() -> None:
    keys = [bytes([a, b]) for a in (0x41, 0x42, 0xFE, 0xFF) for b in (0x00, 0x7F, 0xFF)]
    for prefix in {k[:1] for k in keys} | set(keys):
        end = prefix_end(prefix)
        inside = {k for k in keys if k.startswith(prefix)}
        in_range = {k for k in keys if prefix <= k and (end == b"\0" or k < end)}
        assert inside == in_range, prefix


def test_endpoint_parsing() -> None:
    assert parse_endpoint("127.0.0.1:2379") == ("127.0.0.1", 2379)
    assert parse_endpoint("etcd.local:1") == ("etcd.local", 1)
    for bad in ("2379", "host:", ":2379", "host:port"):
        with pytest.raises(ValueError):
            parse_endpoint(bad)
    with pytest.raises(ValueError):
        EtcdSystem([])


def test_etcd_backend_needs_endpoints() -> None:
    with pytest.raises(ConfigError, match="needs etcd_endpoints"):
        NodeConfig(system_backend="etcd")
    with pytest.raises(ConfigError, match="supported: raft, etcd"):
        NodeConfig(system_backend="zookeeper")
    with pytest.raises(ConfigError, match="etcd_prefix"):
        NodeConfig(system_backend="etcd", etcd_endpoints=("h:1",), etcd_prefix="nope")
    with pytest.raises(ConfigError, match="etcd_endpoints"):
        NodeConfig(system_backend="etcd", etcd_endpoints=("no-port",))


def test_endpoints_from_flag_env_and_toml(tmp_path: object) -> None:
    flag = load_config(env={}, overrides={"system_backend": "etcd", "etcd_endpoints": "a:1, b:2,"})
    assert flag.etcd_endpoints == ("a:1", "b:2")
    env = load_config(env={"TADPOLE_SYSTEM_BACKEND": "etcd", "TADPOLE_ETCD_ENDPOINTS": "c:3"})
    assert env.system_backend == "etcd" and env.etcd_endpoints == ("c:3",)
    path = f"{tmp_path}/node.toml"
    with open(path, "w") as f:
        f.write('system_backend = "etcd"\netcd_endpoints = ["d:4", "e:5"]\netcd_prefix = "/x/"\n')
    toml = load_config(toml_path=path, env={})
    assert toml.etcd_endpoints == ("d:4", "e:5") and toml.etcd_prefix == "/x/"
