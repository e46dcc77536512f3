"""OmegaConf resolvers the configs use; registered when ``divergence_lab`` is imported.

``${dlab.user_cache:teachers}`` is the per-user cache folder ``<cache home>/divergence_lab/teachers``,
where ``<cache home>`` is ``$XDG_CACHE_HOME`` when it is set to an absolute path (the XDG base-directory
rule: a relative one is ignored), else ``~/.cache``. Being a resolver, the resolved ``config.yaml`` of a
run shows the real path. Imported by the package itself, so it holds under the ``dlab`` CLI, Hydra's
compose API and launcher workers alike. Imports no deep-learning framework (kept cheap for the CLI).
"""

from __future__ import annotations

from omegaconf import OmegaConf

from divergence_lab.ground.paths import user_cache


def register_resolvers() -> None:
    """Register (or re-register) ``dlab.user_cache``; uncached, so a changed environment is seen."""
    OmegaConf.register_new_resolver("dlab.user_cache", user_cache, replace=True)
