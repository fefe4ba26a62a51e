"""Numbers in words for the user: durations and counts with their nouns."""

from __future__ import annotations


def duration(seconds: float | None) -> str:
    """90 -> "1m30s", 4000 -> "1h06m", None -> "?"."""
    if seconds is None:
        return "?"
    seconds = max(0, round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def count(n: int, noun: str, plural: str | None = None) -> str:
    """count(1, "seed") -> "1 seed", count(2, "seed") -> "2 seeds"."""
    return f"{n} {noun if n == 1 else plural or noun + 's'}"
