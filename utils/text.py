"""Counts in messages: ``counted(1, "region")`` is "1 region", ``counted(3, "region")``
"3 regions"."""


def counted(n: int, noun: str) -> str:
    return f"{n} {noun if n == 1 else noun + 's'}"
