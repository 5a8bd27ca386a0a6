"""Reproductions of the seeds' studies and the demo; each runs from one command on CPU."""
