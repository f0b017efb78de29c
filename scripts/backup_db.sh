#!/bin/sh
# Back up the configured database (DATABASE_URL) with `chatlens backup`, for cron or the
# compose stack's backup job. BACKUP_DIR (default: backups) and BACKUP_KEEP (default: 7)
# choose where and how many; BACKUP_INTERVAL_SECONDS, when set, repeats forever.
#
#   crontab:  15 3 * * *  cd /srv/chatlens && DATABASE_URL=... scripts/backup_db.sh
set -eu

dir="${BACKUP_DIR:-backups}"
keep="${BACKUP_KEEP:-7}"
chatlens="${CHATLENS_BIN:-chatlens}"

while :; do
  "$chatlens" backup --dir "$dir" --keep "$keep"
  [ -n "${BACKUP_INTERVAL_SECONDS:-}" ] || exit 0
  sleep "$BACKUP_INTERVAL_SECONDS"
done
