"""Unlearning methods: one module each, registered by name."""

from __future__ import annotations

from obliviate.registry import Registry

METHODS: Registry = Registry("method")
