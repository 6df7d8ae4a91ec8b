#!/bin/sh
# Runs on a lab host: start a backup, kill -9 its `borg create` while it holds the repository's
# exclusive lock ($1 seconds after the lock appears), then back up again.
# Usage: kill_create.sh DELAY BIGFILE REPO. Prints killed=0|1, killed_rc=N, then the retry's JSON.
agent=/usr/local/bin/saveos-agent
touch "$2"  # new ctime: borg re-reads the big file, so create runs long enough to be caught
$agent --json backup >/dev/null 2>&1 &
apid=$!
pid=
for _ in $(seq 1 1200); do
  pid=$(pgrep -f '/usr/bin/borg create ' | head -n 1)
  [ -n "$pid" ] && [ -e "$3/lock.exclusive" ] && break
  sleep 0.02
done
sleep "$1"
if [ -n "$pid" ] && [ -e "$3/lock.exclusive" ] && kill -9 "$pid" 2>/dev/null; then
  echo killed=1
else
  echo killed=0
fi
wait "$apid"
echo "killed_rc=$?"
$agent --json backup
