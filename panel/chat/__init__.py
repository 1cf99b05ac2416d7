"""A chat turn: one message to a resident model (through the gateway, under the per-user generation limit) or to a
remote OpenAI-compatible endpoint, streamed with live figures. The Chat and Arena tabs and the arena's API use it."""
