"""One-step class-conditional image generation with the drifting field (``drifting_policy.field``).

Uses only ``drifting_policy.field`` and the shared parts in ``drifting_policy.utils`` (checkpoint folders, EMA,
atomic writes, process groups) from the rest of the package: no robot-stack imports.
"""
