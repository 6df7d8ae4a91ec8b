"""Lab fixtures for any test that needs real SSH hosts (loaded by conftest via pytest_plugins).

    @pytest.mark.lab
    def test_something(lab3):
        inventory = lab3.inventory_path            # YAML inventory, group `lab`, hosts lab1..lab3
        result = lab3.ssh("lab1", "hostname")       # real SSH as root, CompletedProcess
        hosts = lab3.hosts()                        # LabHost(name, address, port, pids)

`lab3` is module scoped: the hosts' files persist between the tests of one module, so write to
paths your test owns. Addresses come from SAVEOS_TEST_LAB_NET (conftest.lab_net()); only one lab per
net and port runs at a time, so a test that needs a second lab passes another `port`.
Run ansible with cwd=REPO_ROOT so ansible.cfg (pipelining, host key checking) applies.
"""

from __future__ import annotations

import pytest
from conftest import lab_net, require_root

from saveos_lab.lab import Lab


@pytest.fixture(scope="module")
def lab3(tmp_path_factory):
    """Three running lab hosts (lab1..lab3) for the whole module; stopped and removed after."""
    require_root()
    lab = Lab(tmp_path_factory.mktemp("lab3"), net=lab_net())
    lab.up(3)
    yield lab
    lab.down()
