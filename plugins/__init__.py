"""Lightning plugins: how checkpoints reach the disk."""
