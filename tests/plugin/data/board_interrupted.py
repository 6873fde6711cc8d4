"""Ctrl-C in the middle of a session (the board is idle at its prompt)."""


def test_interrupted(cma_target):
    assert cma_target.shell("true").status == 0
    raise KeyboardInterrupt


def test_never_runs(cma_target):
    raise AssertionError("the session was interrupted before this test")
