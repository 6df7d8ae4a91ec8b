"""HTTP routers: admin (admin token), agent (agent tokens), open (health, metrics)."""
