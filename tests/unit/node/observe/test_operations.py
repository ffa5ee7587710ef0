"""How the system tier's calls are classed for tadpole_operation_duration_seconds."""

from __future__ import annotations

from consensus.statemachine import Compare, CompareOp, CompareTarget, DeleteOp, PutOp, Txn
from node.observe.operations import op_kind


def test_a_plain_put_or_delete_is_a_write_and_anything_conditional_a_txn() -> None:
    assert op_kind(Txn(success=(PutOp("k", b"v"),))) == "write"
    assert op_kind(Txn(success=(DeleteOp("k"),), request_id="r1")) == "write"
    assert op_kind(Txn(success=(PutOp("a", b"1"), PutOp("b", b"2")))) == "txn"
    compare = Compare("k", CompareTarget.MOD, CompareOp.EQUAL, 3)
    guarded = Txn(compares=(compare,), success=(PutOp("k", b"v"),))
    assert op_kind(guarded) == "txn"
    assert op_kind(Txn(success=(PutOp("k", b"v"),), failure=(PutOp("k", b"w"),))) == "txn"
