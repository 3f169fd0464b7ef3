"""cifarbench: a config-driven CIFAR-10 experiment runner."""
from cifarbench.run.naming import register_resolvers

__version__ = "0.1.0"

register_resolvers()  # before Hydra composes: conf/config.yaml names run folders with them
