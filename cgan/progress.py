"""The progress rule every long step logs by: about every tenth of the work, and at the end."""


def is_tenth(done: int, total: int) -> bool:
    """True when `done` of `total` items is worth a progress line (`grids 400/1000`)."""
    return done == total or done % max(1, total // 10) == 0
