"""visionlab's SLURM launcher for Hydra (Hydra takes launchers only from the `hydra_plugins` package)."""
