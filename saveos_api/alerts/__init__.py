"""Alerts: status changes recorded as flips, notified through Apprise, delivered via an outbox.

evaluator.py finds flips (and repeats, digests) and queues notices in the same transaction;
outbox.py sends them with retries; service.py runs both inside each API worker, with the
dead-man ping; channels.py checks, seals and routes channel URLs; messages.py writes the text.
Kept import-light: the CLI reads levels.py.
"""
