"""Hydra configs of cifarbench, shipped inside the package as `cifarbench.conf`."""
