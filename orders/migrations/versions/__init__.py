"""Alembic revision scripts, one file each.

A package so that every revision script ships in the wheel, including ones added
later; Alembic itself skips ``__init__.py`` when it reads this folder.
"""
