"""Fault suite (issue 17): real processes under kill -9, full disk, slow clients, stopped services."""
