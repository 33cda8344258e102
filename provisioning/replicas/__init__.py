"""Read replicas: the driver interface (base), the local pg_basebackup driver, the request runner."""
