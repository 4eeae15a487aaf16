"""The application: what run.py does before and around training (argv, checks, console, the error
boundary) and the modes that use a trained model (predict, export, serve, visualise, compress)."""
