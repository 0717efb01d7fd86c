"""The shared parts, one of each: atomic file writes (io), the EMA, the checkpoint folder, process groups
(distributed) and rotation conversions. Nothing here imports the rest of the package."""
