"""Importing this module registers every method (one import per method module)."""

from obliviate.methods import ga, icu, idk, npo, reveal_release, rkld, rmu, simnpo, unierase  # noqa: F401
