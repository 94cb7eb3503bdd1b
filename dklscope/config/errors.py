"""`ConfigError`, and what every section's dataclass uses to check its own values."""

from __future__ import annotations

import re


class ConfigError(ValueError):
    """A bad configuration value; ``path`` is the dotted key path (empty for the whole file)."""

    def __init__(self, path: str, message: str) -> None:
        super().__init__(f"{path}: {message}" if path else message)
        self.path, self.message = path, message


ADDRESS = re.compile(r"tcp://[^\s:]+:\d{1,5}|ipc://\S+")  # a ZeroMQ endpoint
CALLABLE = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*")  # "package.module:name"


def check(condition: bool, key: str, message: str) -> None:
    if not condition:
        raise ConfigError(key, message)
