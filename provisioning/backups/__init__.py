"""Backups and restore drills of managed instances (issue #20): the parts that touch clusters and files.

- storage.py: where backups live (a small interface; the local folder driver).
- physical.py: `local` instances: WAL archiving (archive_command into the backup root) and
  pg_basebackup with its manifest, verified by pg_verifybackup.
- logical.py: `external` instances: pg_dump -Fc per database and pg_dumpall --globals-only
  --no-role-passwords, with a manifest of SHA-256 sums, verified by re-hashing and pg_restore --list.
- drill.py: a backup restored into a scratch local cluster on a free port (unix socket only),
  checked, timed (RTO, RPO) and removed.

Nothing here writes to the portal's database: portal/services/backups.py keeps the catalog.
"""
