"""rampwatch settings: the only reader of the environment."""

from config.settings import (
    AlixPaySettings,
    ChangellySettings,
    ConfigError,
    FuspaySettings,
    Named,
    PollPolicy,
    Settings,
    load_settings,
    parse_duration,
)

__all__ = [
    "AlixPaySettings",
    "ChangellySettings",
    "ConfigError",
    "FuspaySettings",
    "Named",
    "PollPolicy",
    "Settings",
    "load_settings",
    "parse_duration",
]
