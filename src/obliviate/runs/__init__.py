"""The application layer: what a user asks for, end to end (unlearn, forget by name, evaluate, attack, bench,
build), and everything around a run that no method or metric should know about: loading, validation, resume,
the manifest, the deletion ledger and atomic output. `obliviate.api` exposes these functions; the CLI calls the
API. Lower layers (methods, edit, eval, models, data) never import from here."""
