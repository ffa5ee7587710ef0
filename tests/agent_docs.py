"""A valid agent document (spec ``agent_data_model``), shared by the tests that need one."""

from __future__ import annotations

from typing import Any


def agent_doc(agent_id: str) -> dict[str, Any]:
    return {
        "identity": {
            "agent_id": agent_id,
            "public_key": "ab" * 32,
            "generation": 1,
            "creation_timestamp": 1_700_000_000_123_456_789,
        },
        "performance_state": {"current_metrics": {}, "rubric_scores": [0.5]},
        "knowledge_state": {"capability_vector": [0.0] * 256},
        "relationship_state": {"mesh_memberships": [], "trust_scores": {}},
    }
