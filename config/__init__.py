"""rampwatch settings: the only reader of the environment."""

from config.settings import (
    ConfigError,
    IPNetwork,
    Named,
    PollPolicy,
    ProviderSettings,
    Settings,
    load_settings,
    parse_duration,
    poll_setting,
    setting,
    stuck_times,
)

__all__ = [
    "ConfigError",
    "IPNetwork",
    "Named",
    "PollPolicy",
    "ProviderSettings",
    "Settings",
    "load_settings",
    "parse_duration",
    "poll_setting",
    "setting",
    "stuck_times",
]
