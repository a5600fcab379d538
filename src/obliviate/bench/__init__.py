"""`obliviate bench`: every method on one scenario, evaluated the same way, into one report."""
