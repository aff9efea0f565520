"""rampwatch settings: the only reader of the environment."""

from config.settings import (
    ConfigError,
    Named,
    PollPolicy,
    ProviderSettings,
    Settings,
    load_settings,
    parse_duration,
    poll_setting,
    setting,
)

__all__ = [
    "ConfigError",
    "Named",
    "PollPolicy",
    "ProviderSettings",
    "Settings",
    "load_settings",
    "parse_duration",
    "poll_setting",
    "setting",
]
