"""The scorecard: one row per model × quantization × engine on this machine (quality, arena, speed, memory, time to
ready) and a recommendation by a rule a person can change. card.py holds the types and the rule; build.py reads the
stores."""
