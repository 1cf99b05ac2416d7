"""The arena: blind battles between two models on one prompt, people's votes, and Bradley–Terry ratings."""
