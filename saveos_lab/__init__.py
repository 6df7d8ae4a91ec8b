"""The lab: real SSH hosts on loopback for the tests, the benchmarks and the demo.

Test and demo infrastructure, not the product: no module of saveos_cli, saveos_api or the agent
imports it. The wheel ships it so that `saveos lab` (registered through the `saveos.commands`
entry point, see saveos_lab.cli) runs the README's demo; `lab` holds the hosts' life,
`repo_servers` and `systemd` the two other kinds of lab host.

Nothing is imported here: `saveos` loads saveos_lab.cli on every start, the rest only when a lab
command runs.
"""
