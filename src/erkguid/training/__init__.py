"""Training of the small shipped models (needs the ``train`` extra for the digits data)."""
