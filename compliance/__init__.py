"""Per-region policy (deploy/regions/), retention and the purge job, the consent ledger,
data-subject requests (export and erasure) and the audit trail of admin actions.
"""
