"""Problems found in user data, reported as ``PATH:LINE: reason`` (docs/data.md "Preparing a data
set").

Readers never raise on a bad row: they record a :class:`Problem` in a :class:`ProblemLog` and move
on, so one pass reports every problem at once. The caller then decides: with
``on_error="fail"`` any problem ends the run with :class:`DataError` (first 20 problems, then a
count); with ``on_error="skip"`` the bad rows are dropped, counted and listed.
"""

from __future__ import annotations

import dataclasses
import json

from ropo_jax.errors import UserError

MAX_REPORTED = 20
ON_ERROR_CHOICES = ("fail", "skip")


@dataclasses.dataclass(frozen=True)
class Problem:
    path: str
    line: int  # 1-based line (JSONL, JSON array element start) or row (Parquet); 0 = whole file
    reason: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.reason}"


class DataError(UserError):
    """A user-fixable problem with input data or files; its message is the whole report."""


def format_problems(problems: list[Problem], *, limit: int = MAX_REPORTED) -> str:
    lines = [str(p) for p in problems[:limit]]
    if len(problems) > limit:
        lines.append(f"... and {len(problems) - limit} more problems ({len(problems)} in total)")
    return "\n".join(lines)


class ProblemLog:
    """Collects problems; ``fatal`` problems (an unreadable file) are never skippable."""

    def __init__(self, on_error: str = "fail"):
        if on_error not in ON_ERROR_CHOICES:
            raise DataError(f"on_error={on_error!r}: expected one of {ON_ERROR_CHOICES}")
        self.on_error = on_error
        self.problems: list[Problem] = []
        self.fatal: list[Problem] = []

    def add(self, path: str, line: int, reason: str, *, fatal: bool = False) -> None:
        problem = Problem(str(path), int(line), reason)
        self.problems.append(problem)
        if fatal:
            self.fatal.append(problem)

    def __len__(self) -> int:
        return len(self.problems)

    def raise_if_failed(
        self, hint: str = "fix these rows, or pass --on_error=skip to leave them out"
    ) -> None:
        """Raises :class:`DataError` when the run cannot go on under the chosen policy."""
        if self.fatal or (self.problems and self.on_error == "fail"):
            shown = self.problems if self.on_error == "fail" else self.fatal
            message = format_problems(shown)
            if hint and self.on_error == "fail" and not self.fatal:
                message += "\n" + hint
            raise DataError(message)

    def write(self, path: str) -> None:
        """One JSON object per skipped row: ``{"path", "line", "reason"}``."""
        from etils import epath  # any epath location, as the prepared set beside it

        target = epath.Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(
            "".join(
                json.dumps(dataclasses.asdict(p), ensure_ascii=False) + "\n" for p in self.problems
            )
        )
