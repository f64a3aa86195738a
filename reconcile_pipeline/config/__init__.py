"""The project file (`reconcile.yaml`): what is synced, declared once (DESIGN §3.10)."""
