"""The referral runtime: every change to a referral goes through :func:`fire` and its
siblings, each one database transaction."""
