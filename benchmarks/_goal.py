"""The common ending of the benchmark scripts."""


def finish(ok: bool, quick: bool) -> int:
    """Exit status: 0 when the goal is met; --quick runs (CI) only check that the script runs."""
    if quick:
        print("(--quick: goal not checked)")
        return 0
    return 0 if ok else 1
