"""Reveal-and-Release's parts (the method itself is `obliviate.methods.reveal_release`): the instruction bandits
(`bandit`), revealing and scoring what the model knows (`reveal`), and the O-LoRA release step (`release`)."""
