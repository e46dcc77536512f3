"""divergence_lab: which divergence to minimise, in distillation, pruning and category discovery."""

from divergence_lab.config.resolvers import register_resolvers

__version__ = "0.1.0"

register_resolvers()  # before any config is composed, whichever entry point composes it
