"""What every command gets: the output, and the settings read exactly as the function reads them."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from shared.cli.output import CliError, Exit, Output

if TYPE_CHECKING:
    from shared.settings import Settings


@dataclass
class Context:
    out: Output
    settings_file: Path | None = None
    environ: Mapping[str, str] | None = None
    """None: the real environment (and ./local.settings.json when no --settings is given)."""
    _cache: dict[bool, Settings] = field(default_factory=dict)

    def settings(self, *, require_storage: bool = True) -> Settings:
        """Load and validate settings; any problem stops the command with exit code 2, naming the settings."""
        cached = self._cache.get(require_storage)
        if cached is not None:
            return cached
        from shared.settings import SettingsError, load_settings

        if self.settings_file is not None and not self.settings_file.is_file():
            raise CliError(f"settings file not found: {self.settings_file}", Exit.USAGE)
        try:
            settings = load_settings(self.environ, self.settings_file, require_storage=require_storage)
        except SettingsError as exc:
            raise CliError(
                f"{exc.detail} (settings come from the environment, then --settings FILE, then ./local.settings.json)",
                Exit.USAGE,
                details={"settings": exc.problems},
            ) from None
        except (OSError, ValueError) as exc:
            where = self.settings_file or "local.settings.json"
            raise CliError(f"cannot read settings from {where}: {exc}", Exit.USAGE) from None
        self._cache[require_storage] = settings
        return settings

    @contextlib.contextmanager
    def platform_environment(self) -> Iterator[None]:
        """For the command's duration, put the settings file's values into ``os.environ`` where unset.

        ``func start`` does exactly this with local.settings.json, and the Azure SDKs read some of those
        values only from the environment (IDENTITY_ENDPOINT / IDENTITY_HEADER for the managed identity,
        AZURE_CLIENT_ID). Restored afterwards, so in-process callers (tests) are left as they were.
        """
        if self.environ is not None:
            yield
            return
        from shared.settings import read_settings_file

        path = self.settings_file
        if path is None and Path("local.settings.json").is_file():
            path = Path("local.settings.json")
        added: list[str] = []
        try:
            if path is not None and path.is_file():
                try:
                    values = read_settings_file(path)
                except (OSError, ValueError):
                    values = {}  # reported properly when the settings are loaded
                for key, value in values.items():
                    if key not in os.environ:
                        os.environ[key] = value
                        added.append(key)
            yield
        finally:
            for key in added:
                os.environ.pop(key, None)
