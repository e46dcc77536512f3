"""Frozen networks held beside the trained one (a distillation teacher, an RL or DPO reference).

A LightningModule that mixes in :class:`FrozenModels` and names its frozen attributes in ``frozen_names``:

* keeps them in eval mode whatever mode the module is switched to (no dropout in a target);
* leaves their weights out of its checkpoints: they come from the run's stages (the teacher cache, the
  initial policy), so a checkpoint holds only what training changed;
* loads such a checkpoint strictly for the trained network while keeping the frozen weights it was built
  with.

An attribute that is None (a run without a reference) is simply absent.
"""

from __future__ import annotations

from typing import Any

from torch import nn


class FrozenModels:
    """Mixin (before the LightningModule base) for the frozen attributes listed in ``frozen_names``."""

    frozen_names: tuple[str, ...] = ()

    def frozen_models(self) -> dict[str, nn.Module]:
        """The frozen networks by attribute name (those set and not None)."""
        present = {name: getattr(self, name, None) for name in self.frozen_names}
        return {name: net for name, net in present.items() if net is not None}

    def train(self, mode: bool = True) -> Any:
        """Switch the trained network's mode; the frozen ones stay in eval mode."""
        super().train(mode)  # type: ignore[misc]
        for net in self.frozen_models().values():
            net.eval()
        return self

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Drop the frozen networks' weights from the checkpoint's state dict."""
        prefixes = tuple(f"{name}." for name in self.frozen_models())
        state = checkpoint["state_dict"]
        for key in [key for key in state if prefixes and key.startswith(prefixes)]:
            del state[key]

    def load_state_dict(self, state_dict: dict[str, Any], strict: bool = True, assign: bool = False) -> Any:
        """Load a checkpoint of the trained network (strictly), keeping the frozen networks' weights."""
        kept = {
            f"{name}.{key}": value
            for name, net in self.frozen_models().items()
            for key, value in net.state_dict().items()
        }
        return super().load_state_dict({**kept, **state_dict}, strict=strict, assign=assign)  # type: ignore[misc]
