from obliviate.cli import run

run()
