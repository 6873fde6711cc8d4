"""SIGTERM (a CI job's timeout) while a command runs on the board: the board is killed, not waited for."""

import os
import signal
import threading


def test_terminated_mid_command(cma_target):
    threading.Timer(1.0, os.kill, (os.getpid(), signal.SIGTERM)).start()
    cma_target.shell("sleep 20")
