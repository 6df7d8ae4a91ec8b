"""Write the tiny playbook's inventory: two local hosts and one that nothing answers for."""

from __future__ import annotations

import json
import sys
from pathlib import Path


def inventory(down_ip: str, down_port: int, python: str = sys.executable) -> dict:
    local = {"ansible_connection": "local", "ansible_python_interpreter": python}
    return {
        "all": {
            "hosts": {
                "local1": dict(local),
                "local2": dict(local),
                "down1": {
                    "ansible_host": down_ip,
                    "ansible_port": down_port,
                    "ansible_user": "root",
                    "ansible_ssh_common_args": "-o ConnectTimeout=3 -o BatchMode=yes"
                    " -o UserKnownHostsFile=/dev/null -o StrictHostKeyChecking=no",
                },
            }
        }
    }


def write_inventory(path: Path, down_ip: str, down_port: int) -> Path:
    path.write_text(json.dumps(inventory(down_ip, down_port), indent=2))
    return path
