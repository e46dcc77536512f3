"""divergence_lab: which divergence to minimise, in distillation, pruning and category discovery."""

__version__ = "0.1.0"
