"""The JSON form of a CRDT-tier update (HTTP) decodes to the same Op as the gRPC form."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from node.errors import InvalidArgument
from node.pb import tadpole_pb2 as pb
from node.tiers.ops import op_from_json, op_from_request

SAME = [
    ({"op": "counter_add", "amount": -3},
     pb.TierUpdateRequest(counter_add=pb.CounterAdd(amount=-3))),
    ({"op": "set_add", "elements": ["a", "b"]},
     pb.TierUpdateRequest(set_add=pb.SetElements(elements=["a", "b"]))),
    ({"op": "set_remove", "elements": ["a"]},
     pb.TierUpdateRequest(set_remove=pb.SetElements(elements=["a"]))),
    ({"op": "register_set", "value": {"x": [1]}},
     pb.TierUpdateRequest(register_set=pb.RegisterSet(value_json=json.dumps({"x": [1]})))),
    ({"op": "log_append", "payload": {"e": 1}, "entry_id": "id1"},
     pb.TierUpdateRequest(log_append=pb.LogAppend(payload_json='{"e": 1}', entry_id="id1"))),
    ({"op": "map_set", "field": "f", "value": 2},
     pb.TierUpdateRequest(map_set=pb.MapSet(field="f", value_json="2"))),
    ({"op": "map_set", "field": "f", "remove": True},
     pb.TierUpdateRequest(map_set=pb.MapSet(field="f", remove=True))),
]  # fmt: skip


@pytest.mark.parametrize(("body", "request_pb"), SAME)
def test_json_and_grpc_forms_decode_to_the_same_update(body: Any, request_pb: Any) -> None:
    assert op_from_json(body) == op_from_request(request_pb)


@pytest.mark.parametrize(
    ("body", "names"),
    [
        ([], "JSON object"),
        ({"op": "nope"}, "op must be one of"),
        ({"op": "counter_add", "amount": 0}, "must not be 0"),
        ({"op": "counter_add", "amount": True}, "integer"),
        ({"op": "counter_add", "amount": 2**63}, "64-bit"),
        ({"op": "counter_add", "amount": 1, "typo": 1}, "unknown field(s): typo"),
        ({"op": "set_add", "elements": "a"}, "list of strings"),
        ({"op": "set_add", "elements": []}, "at least one"),
        ({"op": "set_add", "elements": [""]}, "non-empty"),
        ({"op": "register_set"}, "needs a value"),
        ({"op": "log_append"}, "needs a payload"),
        ({"op": "log_append", "payload": 1, "entry_id": 5}, "entry_id must be a string"),
        ({"op": "map_set", "field": "", "value": 1}, "field is empty"),
        ({"op": "map_set", "field": "f"}, "needs a value"),
        ({"op": "map_set", "field": "f", "remove": "yes"}, "true or false"),
    ],
)
def test_bad_updates_name_the_problem(body: Any, names: str) -> None:
    with pytest.raises(InvalidArgument, match=re.escape(names)):
        op_from_json(body)
