"""Reproductions of published studies and the demo; each runs from one command on CPU.

The publications are listed in ``docs/conventions.md``, References.
"""
