"""Unlearning methods: one module each, registered by name in METHODS (see base.py)."""

from __future__ import annotations

from obliviate.methods.base import METHODS, register_method

__all__ = ["METHODS", "register_method"]
