"""The three model stages (T3, CFM, HiFiGAN): pure model code, streaming logic and process entries."""
