"""Layer 1: accounts and contracts (ledger), transactions, blocks, fork choice, mempool,
SQLite persistence (all sans-IO) and the node service that runs them (service.py)."""
