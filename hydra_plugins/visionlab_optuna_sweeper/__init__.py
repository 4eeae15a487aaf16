"""A Hydra sweeper on Optuna's ask-and-tell interface (`hydra/sweeper=optuna`), for current Optuna.

It lives in Hydra's `hydra_plugins` namespace package, where Hydra looks for plugins; `hydra_plugins/`
itself has no `__init__.py`, so that the plugins installed in site-packages (the submitit launcher)
stay visible beside this one.
"""
