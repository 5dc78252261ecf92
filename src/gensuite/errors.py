"""Errors a user can fix by changing a setting.

The entry points print these as a short message (no traceback) and exit with status 2. A part or a family
raises `ConfigError` naming its own arguments in ``keys``; the code that instantiated it from the Hydra config
(`gensuite.cli.config.instantiate_checked`) maps those names to the full config keys, following interpolations,
so the user reads ``model.decoder.depth`` and ``data.image_size`` rather than ``depth`` and ``image_size``.
"""

from __future__ import annotations


class GensuiteError(Exception):
    """Base class of the errors that are printed as a message rather than a traceback."""

    exit_code = 2

    def __init__(self, message: str, fix: str | None = None):
        super().__init__(message)
        self.message = message
        self.fix = fix

    def render(self) -> str:
        text = f"{type(self).__name__}: {self.message}"
        if self.fix:
            text += f"\n  fix: {self.fix}"
        return text

    def __str__(self) -> str:  # pragma: no cover - trivial
        return self.render()


class ConfigError(GensuiteError):
    """A setting (or a combination of settings) that cannot work.

    ``keys`` are the names of the offending arguments of the object that raised it; they are rewritten into
    full config keys by `gensuite.cli.config.instantiate_checked`.
    """

    def __init__(self, message: str, keys: tuple[str, ...] = (), fix: str | None = None):
        super().__init__(message, fix)
        self.keys = tuple(keys)
        self.where: str | None = None  # filled in by instantiate_checked: "model.decoder"
        self.key_notes: list[str] = []

    def render(self) -> str:
        head = f"ConfigError in {self.where}: " if self.where else "ConfigError: "
        text = head + self.message
        if self.key_notes:
            text += "\n  settings involved: " + ", ".join(self.key_notes)
        if self.fix:
            text += f"\n  fix: {self.fix}"
        return text


class DataError(GensuiteError):
    """Data that cannot be loaded: missing folder, offline download, corrupt or empty file."""


class CheckpointError(GensuiteError):
    """A checkpoint that is missing, corrupt, not ours, or of the wrong family or shape."""


def require_positive(**values: int | float | None) -> None:
    """Raise `ConfigError` for any value that is not > 0 (``None`` is allowed: it means 'auto')."""
    for name, value in values.items():
        if value is not None and not value > 0:
            raise ConfigError(f"{name} must be > 0, got {value!r}", keys=(name,), fix=f"set {name} to a positive value")
