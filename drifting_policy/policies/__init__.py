"""Policy registry: ``policy.name`` in the config -> class."""

from drifting_policy.policies.base import Policy
from drifting_policy.policies.bc import BCPolicy
from drifting_policy.policies.diffusion import DiffusionPolicy
from drifting_policy.policies.drifting import DriftingPolicy

POLICIES: dict[str, type[Policy]] = {"drifting": DriftingPolicy, "diffusion": DiffusionPolicy, "bc": BCPolicy}


def policy_class(name: str) -> type[Policy]:
    if name not in POLICIES:
        raise KeyError(f"unknown policy '{name}'; known: {sorted(POLICIES)}")
    return POLICIES[name]
