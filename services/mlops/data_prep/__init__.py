"""Data prep: load daily bars, check them, compute features, publish a versioned dataset."""
