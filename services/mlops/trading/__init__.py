"""Trading: the threshold strategy on the built-in paper broker or Alpaca paper trading."""
