"""Logs each reason for refusing input once while it persists, not once per message."""
from __future__ import annotations

from typing import Any


class RefusalLog:
    def __init__(self, logger: Any) -> None:
        self._logger = logger
        self.active: dict[str, str] = {}
        self.counts: dict[str, int] = {}

    def refuse(self, cause: str, message: str) -> None:
        self.counts[cause] = self.counts.get(cause, 0) + 1
        if cause not in self.active:
            self._logger.warning(message)
        self.active[cause] = message

    def clear(self, cause: str) -> None:
        if self.active.pop(cause, None) is not None:
            self._logger.info(f"resumed: '{cause}' no longer applies")
