"""The shared kit of the provider sandboxes (see ``devkit.kit.sandbox``)."""

from devkit.kit.sandbox import *  # noqa: F403
