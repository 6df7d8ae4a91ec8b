"""saveos-offsite: replicate the (already encrypted) borg repository to S3, and fetch it back.

Runs on the host in its own virtualenv with boto3 (`python -m saveos_offsite sync --config
/etc/saveos/offsite.json`); the agent core stays standard library only and calls this program as a
subprocess, reading the one JSON object it prints.
"""

__version__ = "0.1.0"
