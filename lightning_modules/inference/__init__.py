"""Using a trained network outside training: input listing, inference modes, writers, export, runtimes."""
