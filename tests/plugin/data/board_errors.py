"""A user's tests that break: the board must still be powered off at the end of the session."""

import pytest


@pytest.fixture
def broken_setup(cma_target):
    raise RuntimeError("the user's fixture broke while the board was up")


def test_a_test_that_raises(cma_target):
    assert cma_target.shell("true").status == 0
    raise RuntimeError("the user's test broke while the board was up")


def test_a_fixture_that_raises(broken_setup):
    pass
