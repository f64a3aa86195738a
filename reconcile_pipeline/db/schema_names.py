"""Names shared by the migrations and the engine."""

# The reconciler's own objects live here, apart from the portal's tables.
RECONCILE_SCHEMA = "reconcile"
# The session setting that tags a transaction as the reconciler's own (DESIGN §3.2): the capture
# trigger ignores writes made while it is 'reconciler'. Always set with SET LOCAL / set_config(...,
# true) so it ends with the transaction.
ORIGIN_SETTING = "reconcile.origin"
ORIGIN_RECONCILER = "reconciler"
