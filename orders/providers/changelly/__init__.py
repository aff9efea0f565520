"""Changelly Fiat API: status map now; signing, client and sandbox arrive with their issue."""
