"""The side-by-side benchmark above training: the runner (trains with the command a user types), Diffusion
Policy's reporting protocol (max and last-k over seeds), the report, latency, and the recipe study."""
