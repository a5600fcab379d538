"""Unlearning methods: one module each, found by the registry on first use and registered by name in METHODS
(the protocol and the discovery are in base.py)."""

from __future__ import annotations

from obliviate.methods.base import (METHODS, ApplyContext, GradientMethod, Method, MethodInfo, ProceduralMethod,
                                    Progress, ProgressEvent, register_method)

__all__ = ["METHODS", "ApplyContext", "GradientMethod", "Method", "MethodInfo", "ProceduralMethod", "Progress",
           "ProgressEvent", "register_method"]
