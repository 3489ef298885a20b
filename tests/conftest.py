import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))  # tests/support helpers

from support import peer_venvs
from support.repository import write_test_repository
from support.serve import ServerProcess


def pytest_collection_modifyitems(session, config, items):
    peer_venvs.note_collected({Path(str(item.fspath)).name for item in items})


@pytest.fixture(scope="session")
def test_repository(tmp_path_factory) -> Path:
    return write_test_repository(tmp_path_factory.mktemp("repository"))


@pytest.fixture(scope="session")
def server(test_repository):
    """One shared server (the default stack) on the test repository."""
    with ServerProcess(test_repository) as process:
        yield process
