"""Hydra configs, shipped inside the package so an installed ``dlab`` finds them."""
