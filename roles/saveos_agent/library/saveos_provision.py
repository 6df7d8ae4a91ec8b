#!/usr/bin/python
"""Provision the agents of a whole play batch with one call to the API (from the controller)."""

from __future__ import annotations

# Ansible modules keep their documentation strings above the imports.
# ruff: noqa: E402

DOCUMENTATION = r"""
---
module: saveos_provision
short_description: Provision many SaveOS agents with one call to the API
description:
  - Runs on the controller (C(delegate_to=localhost), C(run_once=true)) and sends the batch to
    C(POST /api/v1/agents/provision-batch), which is idempotent by name: new agents are created
    with a token, existing ones get the declared labels and schedule, and a token only when
    O(rotate) names them (or when they come back from decommissioning). The API stores tokens
    as keyed hashes only.
  - Returns the new tokens in C(tokens); register the result in a C(no_log) task and hand each
    host its own. A refused call is reported in C(status) and C(error), not as a failure: only
    the hosts that need a token fail on it (a settled host needs no admin token).
  - In check mode it calls nothing.
version_added: "0.1.0"
author: SaveOS
options:
  api_url:
    description: The API URL as the controller reaches it.
    type: str
    required: true
  admin_token:
    description: An admin token; empty skips the call (C(status) 0).
    type: str
    required: true
  agents:
    description: The provision bodies (C(name), C(labels), intervals), one per host.
    type: list
    elements: dict
    required: true
  rotate:
    description: Names of agents whose tokens are revoked and replaced.
    type: list
    elements: str
    default: []
  validate_certs:
    description: Verify the API's TLS certificate.
    type: bool
    default: true
  ca_path:
    description: The fleet's CA on the controller; the API's certificate must chain to it (only).
    type: path
  follow_redirects:
    description: Never follow a redirect (it would resend the admin token elsewhere).
    type: str
    default: none
    choices: [none]
"""

EXAMPLES = r"""
- name: Provision the play's agents in one call
  saveos_provision:
    api_url: https://saveos.example.com
    admin_token: "{{ saveos_agent_admin_token }}"
    agents: [{name: web1}, {name: web2}]
  delegate_to: localhost
  run_once: true
  no_log: true
  register: _saveos_agent_provision
"""

RETURN = r"""
agents:
  description: Per name, C(id) and C(created).
  type: dict
  returned: always
tokens:
  description: Per name, the new token (only agents that got one).
  type: dict
  returned: always
status:
  description: The API's HTTP status (0 when not called).
  type: int
  returned: always
error:
  description: Why the API refused, when it did.
  type: str
  returned: always
"""

import json

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.urls import fetch_url

BATCH_MAX = 1000  # the API's bound per call


def post(module: AnsibleModule, bodies: list) -> tuple[int, dict | None, str]:
    p = module.params
    response, info = fetch_url(
        module,
        p["api_url"].rstrip("/") + "/api/v1/agents/provision-batch",
        data=json.dumps({"agents": bodies}),
        headers={
            "Authorization": f"Bearer {p['admin_token']}",
            "Content-Type": "application/json",
        },
        method="POST",
        timeout=60,
        ca_path=p["ca_path"],
    )
    status = info.get("status") or -1
    raw = response.read() if response is not None else info.get("body", b"")
    try:
        answer = json.loads(raw or b"{}")
    except ValueError:
        answer = {}
    if status != 200:
        detail = answer.get("detail") if isinstance(answer, dict) else None
        if not isinstance(detail, str):
            detail = json.dumps(detail)[:300] if detail else info.get("msg", "")
        return status, None, detail
    return status, answer, ""


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "api_url": {"type": "str", "required": True},
            "admin_token": {"type": "str", "required": True, "no_log": True},
            "agents": {"type": "list", "elements": "dict", "required": True},
            "rotate": {"type": "list", "elements": "str", "default": []},
            "validate_certs": {"type": "bool", "default": True},
            "ca_path": {"type": "path"},
            "follow_redirects": {"type": "str", "default": "none", "choices": ["none"]},
        },
        supports_check_mode=True,
    )
    p = module.params
    result = {"changed": False, "agents": {}, "tokens": {}, "status": 0, "error": ""}
    if module.check_mode or not p["admin_token"] or not p["agents"]:
        module.exit_json(**result)
    rotate = set(p["rotate"])
    bodies = [dict(b, rotate=b["name"] in rotate) for b in p["agents"]]
    for start in range(0, len(bodies), BATCH_MAX):
        status, answer, error = post(module, bodies[start : start + BATCH_MAX])
        result["status"] = status
        if answer is None:
            result["error"] = error
            break
        for agent in answer["agents"]:
            result["agents"][agent["name"]] = {"id": agent["id"], "created": agent["created"]}
            if agent["token"]:
                result["tokens"][agent["name"]] = agent["token"]
    result["changed"] = bool(result["tokens"]) or any(
        a["created"] for a in result["agents"].values()
    )
    module.exit_json(**result)


if __name__ == "__main__":
    main()
