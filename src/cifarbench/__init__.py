"""cifarbench: a config-driven CIFAR-10 experiment runner."""
from cifarbench.run.naming import register_resolvers
from cifarbench.search import make_plugin_findable

__version__ = "0.1.0"

register_resolvers()  # before Hydra composes: conf/config.yaml names run folders with them
make_plugin_findable()  # before Hydra looks for plugins: hydra/sweeper=optuna, successive_halving
