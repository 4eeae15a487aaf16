"""The shared base every layer may import: errors, figures, typed contracts (no other project imports)."""
