"""Trading: the rules (threshold, rotation) on the paper broker or Alpaca paper trading."""
