"""`dbportal`: the portal's command line. It talks only to the REST API (/api/v1/)."""
