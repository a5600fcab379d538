"""Importing this module registers every method (one import per method module)."""

from obliviate.methods import ga, idk, npo, rmu, simnpo  # noqa: F401
