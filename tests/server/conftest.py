import pytest

from server_process import ServerProcess


@pytest.fixture(scope="session")
def server():
    """The toy model behind the default limits (queue of 64 for the concurrency test)."""
    s = ServerProcess("--queue-size", "64").wait_ready()
    yield s
    assert s.terminate() == 0
