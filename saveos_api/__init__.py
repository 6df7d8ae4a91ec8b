"""SaveOS control plane: the HTTP API every agent reports to and `saveos status` reads."""
