"""Chain adapters: what each chain's clients need to run, rendered purely from a NodeSpec."""
