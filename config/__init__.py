"""rampwatch settings: the only reader of the environment."""

from config.settings import (
    AlixPaySettings,
    ConfigError,
    Named,
    PollPolicy,
    Settings,
    load_settings,
    parse_duration,
)

__all__ = [
    "AlixPaySettings",
    "ConfigError",
    "Named",
    "PollPolicy",
    "Settings",
    "load_settings",
    "parse_duration",
]
