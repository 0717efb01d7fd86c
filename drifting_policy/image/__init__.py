"""One-step class-conditional image generation with the drifting field (``drifting_policy.field``).

Uses only ``drifting_policy.field`` from the rest of the package: no robot-stack imports.
"""
