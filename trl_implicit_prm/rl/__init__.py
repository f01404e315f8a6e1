"""Reinforcement learning with implicit process rewards: PRIME and PURE's min-form credit assignment on TRL's
`GRPOTrainer` (see docs/rl.md)."""
