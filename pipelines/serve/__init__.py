"""The served deployment: `transferlab up`/`serve`, the Prefect deployments people start from
the UI, and the credentials that guard them off loopback."""
