"""The one error type for a refused setting.

Raised where the value is checked (the config checks, a data module, a network, a method's module) and
shown by ``dlab`` as one line, ``dlab: error: <message>``, with exit code 2. The message names the key as
the user writes it (``method.alpha``, ``data.batch_size``) and what is allowed.
"""


class ConfigError(ValueError):
    """A configuration value the user must change; its message is one line."""
