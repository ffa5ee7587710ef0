"""Node configuration: precedence, rejection of unknown or bad settings, secrets.

Every test passes ``env=`` explicitly so the developer's own environment
cannot leak in.
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import os
import re
import stat
from pathlib import Path

import pytest

from consensus.atrest import generate_line
from consensus.raft.backend import RaftConfig
from node.config import ConfigError, NodeConfig, load_config, parse_peers, secret_file_problem

SECRET = "0123456789abcdef-cluster"  # 24 bytes


def write(tmp_path: Path, text: str, name: str = "node.toml", mode: int = 0o600) -> str:
    """A file of this user's, private unless ``mode`` says otherwise (a file holding a
    secret must be: see the permission tests below)."""
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    path.chmod(mode)
    return str(path)


# --- precedence -------------------------------------------------------------------


def test_defaults_alone() -> None:
    config = load_config(env={})
    assert config == NodeConfig()
    assert config.raft == RaftConfig()
    assert (config.node_id, config.listen, config.max_value_bytes) == (
        "n1",
        "127.0.0.1:7101",
        1 << 20,
    )


def test_toml_overrides_defaults(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
node_id = "n2"
listen = "127.0.0.1:7102"
max_value_bytes = 2048
request_timeout_s = 5
[raft]
heartbeat_interval_s = 0.02
snapshot_min_entries = 50
""",
    )
    config = load_config(toml_path=path, env={})
    assert (config.node_id, config.listen, config.max_value_bytes) == ("n2", "127.0.0.1:7102", 2048)
    assert config.request_timeout_s == 5.0 and isinstance(config.request_timeout_s, float)
    assert config.raft.heartbeat_interval_s == 0.02
    assert config.raft.snapshot_min_entries == 50
    assert config.raft.election_timeout_min_s == RaftConfig().election_timeout_min_s
    assert config.log_level == "INFO"  # untouched fields keep their defaults


def test_env_overrides_toml_and_overrides_win_over_env(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
node_id = "from-toml"
max_value_bytes = 100
log_level = "WARNING"
[raft]
snapshot_min_entries = 10
watch_history_events = 7
""",
    )
    env = {
        "TADPOLE_NODE_ID": "from-env",
        "TADPOLE_MAX_VALUE_BYTES": "200",
        "TADPOLE_RAFT_SNAPSHOT_MIN_ENTRIES": "20",
        "TADPOLE_RAFT_HEARTBEAT_INTERVAL_S": "0.03",
        "UNRELATED": "ignored",
    }
    config = load_config(toml_path=path, env=env)
    assert (config.node_id, config.max_value_bytes, config.log_level) == (
        "from-env",
        200,
        "WARNING",
    )
    assert (config.raft.snapshot_min_entries, config.raft.heartbeat_interval_s) == (20, 0.03)
    assert config.raft.watch_history_events == 7

    config = load_config(
        toml_path=path,
        env=env,
        overrides={
            "node_id": "from-flag",
            "max_value_bytes": 300,
            "raft.snapshot_min_entries": 30,
            "log_level": None,  # a flag that was not given
        },
    )
    assert (config.node_id, config.max_value_bytes, config.log_level) == (
        "from-flag",
        300,
        "WARNING",
    )
    assert (config.raft.snapshot_min_entries, config.raft.heartbeat_interval_s) == (30, 0.03)


def test_env_values_are_converted_to_the_field_type() -> None:
    config = load_config(
        env={
            "TADPOLE_MAX_VALUE_BYTES": "4096",
            "TADPOLE_REQUEST_TIMEOUT_S": "2.5",
            "TADPOLE_RAFT_ELECTION_TIMEOUT_MAX_S": "0.5",
        }
    )
    assert config.max_value_bytes == 4096 and type(config.max_value_bytes) is int
    assert config.request_timeout_s == 2.5
    assert config.raft.election_timeout_max_s == 0.5


def test_peers_from_toml_table_env_string_and_flag(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        f"""
cluster_secret = "{SECRET}"
[peers]
n2 = "127.0.0.1:7102"
""",
    )
    assert load_config(toml_path=path, env={}).peers == {"n2": "127.0.0.1:7102"}
    env = {"TADPOLE_PEERS": "n2=10.0.0.2:7101, n3=10.0.0.3:7101"}
    assert load_config(toml_path=path, env=env).peers == {
        "n2": "10.0.0.2:7101",
        "n3": "10.0.0.3:7101",
    }
    flagged = load_config(toml_path=path, env=env, overrides={"peers": "n4=h:1"})
    assert flagged.peers == {"n4": "h:1"}


def test_secret_from_env() -> None:
    config = load_config(env={"TADPOLE_PEERS": "n2=h:1", "TADPOLE_CLUSTER_SECRET": SECRET})
    assert config.secret() == SECRET.encode()


# --- unknown and malformed settings -------------------------------------------------


@pytest.mark.parametrize(
    ("text", "named"),
    [
        ("nodeid = 'n1'\n", "nodeid"),
        ("[raft]\nheartbeat_ms = 5\n", "raft.heartbeat_ms"),
        ("raft = 5\n", "[raft] must be a table"),
        ("max_value_bytes = 'lots'\n", "max_value_bytes"),
        ("node_id = \n", "node.toml"),  # TOML syntax error names the file
    ],
)
def test_toml_mistakes_are_rejected_by_name(tmp_path: Path, text: str, named: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError, match=re.escape(named)):
        load_config(toml_path=path, env={})


def test_missing_toml_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"nope\.toml"):
        load_config(toml_path=str(tmp_path / "nope.toml"), env={})


@pytest.mark.parametrize(
    ("overrides", "named"),
    [
        ({"no_such_flag": 1}, "no_such_flag"),
        ({"raft.no_such": 1}, "raft.no_such"),
        ({"raft.heartbeat_interval_s": "fast"}, "heartbeat_interval_s"),
    ],
)
def test_unknown_or_malformed_overrides_are_rejected_by_name(
    overrides: dict[str, object], named: str
) -> None:
    with pytest.raises(ConfigError, match=named):
        load_config(env={}, overrides=overrides)


def test_malformed_env_value_names_the_setting() -> None:
    with pytest.raises(ConfigError, match="max_value_bytes"):
        load_config(env={"TADPOLE_MAX_VALUE_BYTES": "1MiB"})


@pytest.mark.parametrize("seconds", [0, -1, 3601])
def test_a_stream_write_timeout_outside_an_hour_is_refused(seconds: float) -> None:
    with pytest.raises(ConfigError, match="http_stream_write_timeout_s"):
        load_config(env={}, overrides={"http_stream_write_timeout_s": seconds})
    loaded = load_config(env={"TADPOLE_HTTP_STREAM_WRITE_TIMEOUT_S": "120"})
    assert loaded.http_stream_write_timeout_s == 120.0


BAD_ADDRESSES = ["localhost", ":7101", "host:", "host:0", "host:65536", "host:port", "host:-1"]


@pytest.mark.parametrize(
    ("field", "address"),
    [("listen", a) for a in [*BAD_ADDRESSES, ""]]  # advertise "" means "same as listen"
    + [("advertise", a) for a in BAD_ADDRESSES],
)
def test_bad_addresses_are_rejected(field: str, address: str) -> None:
    with pytest.raises(ConfigError, match=field) as info:
        NodeConfig(**{field: address})  # type: ignore[arg-type]
    assert repr(address) in str(info.value)


def test_bad_peer_address_names_the_peer() -> None:
    with pytest.raises(ConfigError, match=r"peers\.n2"):
        NodeConfig(peers={"n2": "nowhere"}, cluster_secret=SECRET)


@pytest.mark.parametrize("address", ["127.0.0.1:1", "h:65535", "[::1]:7101", "node-1.example:80"])
def test_good_addresses(address: str) -> None:
    assert NodeConfig(listen=address).address == address


@pytest.mark.parametrize(
    "port",
    ["\u00b2", "\u0667\u0661\u0660\u0661"],  # superscript two; Arabic-Indic digits 7101
)
def test_non_ascii_digits_are_not_a_port(port: str) -> None:
    with pytest.raises(ConfigError, match="listen"):
        NodeConfig(listen=f"127.0.0.1:{port}")


@pytest.mark.parametrize("node_id", ["", "a" * 65, "n 1", "n/1", "n:1", "n1\n", "n@1"])
def test_bad_node_ids_are_rejected(node_id: str) -> None:
    with pytest.raises(ConfigError, match="node_id"):
        NodeConfig(node_id=node_id)


@pytest.mark.parametrize("node_id", ["a", "a" * 64, "node-1_b.c", "N9"])
def test_good_node_ids(node_id: str) -> None:
    assert NodeConfig(node_id=node_id).node_id == node_id


def test_non_ascii_node_id_is_rejected() -> None:
    with pytest.raises(ConfigError, match="node_id"):
        NodeConfig(node_id="nœud")


def test_own_id_among_peers_is_rejected() -> None:
    with pytest.raises(ConfigError, match="own id"):
        NodeConfig(node_id="n1", peers={"n1": "h:1"}, cluster_secret=SECRET)


@pytest.mark.parametrize(
    ("kwargs", "named"),
    [
        ({"max_value_bytes": 0}, "max_value_bytes"),
        ({"max_value_bytes": (64 << 20) + 1}, "max_value_bytes"),
        ({"request_timeout_s": 0.0}, "request_timeout_s"),
        ({"request_timeout_s": -1.0}, "request_timeout_s"),
        ({"gc_young_threshold": -1}, "gc_young_threshold"),
        ({"gc_young_threshold": 10_000_001}, "gc_young_threshold"),
        ({"system_backend": "etcd"}, "system_backend"),
    ],
)
def test_out_of_range_values_are_rejected(kwargs: dict[str, object], named: str) -> None:
    with pytest.raises(ConfigError, match=named):
        NodeConfig(**kwargs)  # type: ignore[arg-type]


def test_limits_at_the_edges_are_accepted() -> None:
    assert NodeConfig(max_value_bytes=1).max_value_bytes == 1
    assert NodeConfig(max_value_bytes=64 << 20).max_value_bytes == 64 << 20
    assert NodeConfig(gc_young_threshold=0).gc_young_threshold == 0  # Python's default


# --- parse_peers ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", {}),
        ("n2=127.0.0.1:7102", {"n2": "127.0.0.1:7102"}),
        ("n2=a:1,n3=b:2", {"n2": "a:1", "n3": "b:2"}),
        (" n2=a:1 , n3=b:2 ,", {"n2": "a:1", "n3": "b:2"}),
    ],
)
def test_parse_peers(text: str, expected: dict[str, str]) -> None:
    assert parse_peers(text) == expected


@pytest.mark.parametrize("item", ["n2", "=a:1", "n2=", "n2:a:1"])
def test_parse_peers_rejects_items_without_id_and_address(item: str) -> None:
    with pytest.raises(ConfigError, match="id=host:port") as info:
        parse_peers(f"n3=b:2,{item}")
    assert repr(item) in str(info.value)


# --- the cluster secret ----------------------------------------------------------------


def test_peers_without_a_secret_are_rejected() -> None:
    with pytest.raises(ConfigError, match="no cluster secret"):
        NodeConfig(peers={"n2": "h:1"})
    with pytest.raises(ConfigError, match="no cluster secret"):
        load_config(env={"TADPOLE_PEERS": "n2=h:1"})


def test_secret_file(tmp_path: Path) -> None:
    path = write(tmp_path, f"  {SECRET}\n", "secret")
    config = NodeConfig(peers={"n2": "h:1"}, cluster_secret_file=path)
    assert config.secret() == SECRET.encode()  # surrounding whitespace is not secret


@pytest.mark.parametrize("content", ["", "short", "0123456789abcde", "   0123456789abcde   \n"])
def test_secret_file_shorter_than_16_bytes_is_rejected(tmp_path: Path, content: str) -> None:
    path = write(tmp_path, content, "secret")
    with pytest.raises(ConfigError, match="at least 16 bytes"):
        NodeConfig(peers={"n2": "h:1"}, cluster_secret_file=path)


def test_exactly_16_bytes_is_enough(tmp_path: Path) -> None:
    path = write(tmp_path, "0123456789abcdef", "secret")
    assert NodeConfig(peers={"n2": "h:1"}, cluster_secret_file=path).secret() == b"0123456789abcdef"


def test_missing_secret_file_names_the_setting(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cluster_secret_file"):
        NodeConfig(peers={"n2": "h:1"}, cluster_secret_file=str(tmp_path / "absent"))


def test_short_secret_from_env_is_rejected() -> None:
    with pytest.raises(ConfigError, match="at least 16 bytes"):
        load_config(env={"TADPOLE_PEERS": "n2=h:1", "TADPOLE_CLUSTER_SECRET": "x"})


def test_peer_token_is_an_hmac_not_the_secret() -> None:
    config = NodeConfig(peers={"n2": "h:1"}, cluster_secret=SECRET)
    token = config.peer_token()
    assert SECRET not in token and SECRET.encode().hex() not in token
    assert len(token) == 64 and int(token, 16) >= 0  # hex SHA-256
    assert token == hmac.new(SECRET.encode(), b"tadpole-peer-v1", hashlib.sha256).hexdigest()
    assert token == NodeConfig(peers={"n3": "x:2"}, cluster_secret=SECRET).peer_token()
    other = NodeConfig(peers={"n2": "h:1"}, cluster_secret=SECRET + "!").peer_token()
    assert other != token


def test_no_secret_no_token() -> None:
    assert NodeConfig().peer_token() == ""


def test_the_secret_stays_out_of_repr() -> None:
    config = NodeConfig(peers={"n2": "h:1"}, cluster_secret=SECRET)
    assert SECRET not in repr(config)


# --- RaftConfig cross-field rules --------------------------------------------------------


@pytest.mark.parametrize(
    ("raft", "named"),
    [
        # 3 x 50 ms is exactly 150 ms: not more, so refused
        (
            {"election_timeout_min_s": 0.15, "heartbeat_interval_s": 0.05},
            "must exceed 3 x heartbeat_interval_s",
        ),
        # the same boundary in exact binary fractions: 3 x 1/16 == 3/16
        (
            {"election_timeout_min_s": 0.1875, "heartbeat_interval_s": 0.0625},
            "must exceed 3 x heartbeat_interval_s",
        ),
        ({"heartbeat_interval_s": 0.1}, "must exceed 3 x heartbeat_interval_s"),
        ({"election_timeout_min_s": 0.3, "election_timeout_max_s": 0.3}, "election_timeout_max_s"),
        ({"election_timeout_min_s": 0.0}, "election_timeout_min_s"),
        ({"leader_fallback_s": 0.045}, "leader_fallback_s"),
    ],
)
def test_raft_cross_field_rules(raft: dict[str, float], named: str) -> None:
    overrides = {f"raft.{k}": v for k, v in raft.items()}
    with pytest.raises(ConfigError, match=named) as info:
        load_config(env={}, overrides=overrides)
    assert str(info.value).startswith("raft:")
    env = {f"TADPOLE_RAFT_{k.upper()}": str(v) for k, v in raft.items()}
    with pytest.raises(ConfigError, match=named):
        load_config(env=env)


def test_raft_rules_see_the_merged_settings(tmp_path: Path) -> None:
    """A rule spanning two fields is checked after every layer is merged."""
    path = write(tmp_path, "[raft]\nheartbeat_interval_s = 0.06\n")
    with pytest.raises(ConfigError, match="heartbeat"):
        load_config(toml_path=path, env={})  # 0.15 <= 3 x 0.06
    config = load_config(
        toml_path=path, env={"TADPOLE_RAFT_ELECTION_TIMEOUT_MIN_S": "0.2"}
    )  # 0.2 > 0.18
    assert (config.raft.election_timeout_min_s, config.raft.heartbeat_interval_s) == (0.2, 0.06)


def test_default_raft_timing_holds_the_spec_election_range() -> None:
    raft = RaftConfig()
    assert (raft.election_timeout_min_s, raft.election_timeout_max_s) == (0.15, 0.30)
    assert raft.election_timeout_min_s > 3 * raft.heartbeat_interval_s


def test_config_is_frozen() -> None:
    config = NodeConfig()
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.node_id = "n9"  # type: ignore[misc]


# --- files holding a secret must be private ------------------------------------------


@pytest.mark.parametrize(
    ("mode", "owner", "me", "allowed"),
    [
        (0o600, 1000, 1000, True),
        (0o400, 1000, 1000, True),
        (0o640, 1000, 1000, False),  # group may read
        (0o604, 1000, 1000, False),  # anybody may read
        (0o440, 0, 10001, True),  # a Kubernetes secret volume: root, group = fsGroup
        (0o640, 0, 10001, True),
        (0o660, 0, 10001, False),  # group may write
        (0o644, 0, 10001, False),
        (0o600, 0, 0, True),  # root's own file, for a node run as root
        (0o640, 0, 0, False),
        (0o600, 4242, 1000, False),  # somebody else's file
    ],
)
def test_which_secret_files_are_private_enough(
    mode: int, owner: int, me: int, allowed: bool
) -> None:
    assert (secret_file_problem(stat.S_IFREG | mode, owner, me) == "") is allowed


def test_a_secret_file_others_can_read_stops_the_node_and_names_the_fix(tmp_path: Path) -> None:
    path = write(tmp_path, SECRET, "secret", mode=0o644)
    with pytest.raises(ConfigError) as refused:
        NodeConfig(peers={"n2": "h:1"}, cluster_secret_file=path)
    message = str(refused.value)
    assert "mode 0644" in message and f"chmod 600 {path}" in message
    assert SECRET not in message
    os.chmod(path, 0o600)
    assert NodeConfig(peers={"n2": "h:1"}, cluster_secret_file=path).secret() == SECRET.encode()


@pytest.mark.skipif(os.geteuid() != 0, reason="giving a file away needs root")
def test_a_secret_file_of_another_user_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path, SECRET, "secret")
    os.chown(path, 4242, -1)
    with pytest.raises(ConfigError, match="owned by uid 4242"):
        NodeConfig(peers={"n2": "h:1"}, cluster_secret_file=path)


def test_a_config_file_with_the_secret_in_it_must_be_private_too(tmp_path: Path) -> None:
    shared = write(tmp_path, f'cluster_secret = "{SECRET}"\n', mode=0o644)
    with pytest.raises(ConfigError, match=r"config file .*mode 0644"):
        load_config(toml_path=shared, env={})
    # without a secret in it, a config file may be world-readable
    plain = write(tmp_path, 'node_id = "n1"\n', "plain.toml", mode=0o644)
    assert load_config(toml_path=plain, env={}).node_id == "n1"


# -- encryption at rest ----------------------------------------------------------------


def test_encryption_is_off_by_default_and_one_setting_turns_it_on(tmp_path: Path) -> None:
    assert NodeConfig().keyring() is None
    line = generate_line("k1")
    path = write(tmp_path, f"# the cluster's keys\n{line}\n", "keys")
    keyring = NodeConfig(encryption_key_file=path).keyring()
    assert keyring is not None and keyring.primary.name == "k1"
    from_env = load_config(env={"TADPOLE_ENCRYPTION_KEYS": line}).keyring()
    assert from_env is not None and from_env.primary.secret == keyring.primary.secret
    assert line.split(":", 1)[1] not in repr(load_config(env={"TADPOLE_ENCRYPTION_KEYS": line}))


def test_a_keyring_others_can_read_stops_the_node(tmp_path: Path) -> None:
    path = write(tmp_path, generate_line("k1") + "\n", "keys")
    os.chmod(path, 0o644)
    with pytest.raises(ConfigError, match=r"encryption_key_file .*mode 0644.*chmod 600"):
        NodeConfig(encryption_key_file=path)


def test_a_bad_keyring_stops_the_node_naming_the_file_not_the_key(tmp_path: Path) -> None:
    path = write(tmp_path, "k1:c2hvcnQ=\n", "keys")
    with pytest.raises(ConfigError, match=f"encryption at rest: {re.escape(path)}: key 'k1' is 5"):
        NodeConfig(encryption_key_file=path)
    with pytest.raises(ConfigError, match="encryption_key_file"):
        NodeConfig(encryption_key_file=str(tmp_path / "absent"))


def test_keys_generate_add_to_refuses_a_keyring_it_would_break(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from node.cli import cli

    path = write(tmp_path, generate_line("k1") + "\n", "keys")
    before = Path(path).read_text()
    runner = CliRunner()
    same_name = runner.invoke(cli, ["keys", "generate", "--name", "k1", "--add-to", path])
    assert same_name.exit_code == 2 and "not changed" in same_name.output
    assert "appears twice" in same_name.output and Path(path).read_text() == before
    added = runner.invoke(cli, ["keys", "generate", "--name", "k2", "--add-to", path])
    assert added.exit_code == 0, added.output
    keyring = NodeConfig(encryption_key_file=path).keyring()
    assert keyring is not None and [k.name for k in keyring.keys] == ["k2", "k1"]
    assert os.stat(path).st_mode & 0o777 == 0o600


def _documented(section: str) -> set[str]:
    """The settings ``docs/configuration.md`` has a row for under ``section``."""
    doc = (Path(__file__).resolve().parents[3] / "docs" / "configuration.md").read_text()
    part = doc.split(f"## {section}", 1)[1].split("\n## ", 1)[0]
    return set(re.findall(r"^\| `([a-z0-9_]+)` \|", part, re.M))


def test_the_configuration_reference_has_a_row_for_every_setting_and_no_other() -> None:
    node = {f.name for f in dataclasses.fields(NodeConfig) if f.name != "raft"}
    raft = {f.name for f in dataclasses.fields(RaftConfig)}
    assert _documented("Node settings") == node
    assert _documented("Raft settings") == raft
