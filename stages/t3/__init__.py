"""T3 stage: text -> 25 Hz speech tokens (Chatterbox Llama-520M with CFG)."""
