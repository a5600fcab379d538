"""Importing this module registers every method (one import per method module)."""

from obliviate.methods import ga, icu, idk, npo, rkld, rmu, simnpo  # noqa: F401
