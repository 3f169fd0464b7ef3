"""cifarbench: a config-driven CIFAR-10 experiment runner."""
from cifarbench.run.naming import register_resolvers
from cifarbench.search import make_plugin_findable

__version__ = "0.1.0"

register_resolvers()  # before Hydra composes: conf/config.yaml names run folders with them
# Before Hydra looks for plugins (hydra/sweeper=optuna, successive_halving). Here, not in the CLI's entry point:
# Hydra's compose API (tests, notebooks, a `from hydra import compose` in a user's script) looks for plugins
# without passing through the CLI, and in an editable install would not see the sweepers; it is cheap (it
# finds the plugin's file without importing it, nor Optuna, nor torch).
make_plugin_findable()
