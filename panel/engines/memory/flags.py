"""Option values as the engines will take them: the last of a flag in an extra-args argv, numbers given as text."""

from __future__ import annotations

from typing import Any


def flag_value(args: list[str], *names: str) -> str | None:
    """The value of the last of these flags in an argv, given as '--flag value' or '--flag=value'."""
    found = None
    for i, arg in enumerate(args):
        name, eq, value = arg.partition("=")
        if name not in names:
            continue
        if eq:
            found = value
        elif i + 1 < len(args) and not is_flag(args[i + 1]):
            found = args[i + 1]
        else:
            found = ""  # given without a value (-fa alone)
    return found


def is_flag(arg: str) -> bool:
    return arg.startswith("-") and not arg.lstrip("-").replace(".", "", 1).isdigit()


def is_on(value: str) -> bool:
    """A flag value that turns a feature on; llama.cpp's "auto" turns flash attention on where the backend has it."""
    return value.lower() in {"", "on", "auto", "1", "true"}


def last_of(args: list[str], on: tuple[str, ...], off: tuple[str, ...]) -> bool | None:
    state = None
    for arg in args:
        if arg in on:
            state = True
        elif arg in off:
            state = False
    return state


def as_int(value: Any, default: int) -> int:
    if value is None or isinstance(value, bool):
        return default
    try:
        return int(float(value))
    except (TypeError, ValueError):
        return default


def as_float(value: Any, default: float) -> float:
    if value is None or isinstance(value, bool):
        return default
    try:
        return float(value)
    except (TypeError, ValueError):
        return default
