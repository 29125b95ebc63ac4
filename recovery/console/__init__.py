"""The operator console: the admin service's pages under /console/ (see recovery/console/app.py)."""
