"""One LightningModule per method. Each module exposes ``build(cfg, datamodule) -> LightningModule``,
named by ``method.builder`` in its config, so the training entry point never branches on the method."""
