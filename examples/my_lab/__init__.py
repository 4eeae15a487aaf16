"""A researcher's own network, datamodule and task, run by visionlab's run.py without changing it:
`python run.py 'hydra.searchpath=[file://examples/conf]' task=focal` (README: Your own network, data and
task). Nothing of visionlab imports this package; it imports visionlab's base classes."""
