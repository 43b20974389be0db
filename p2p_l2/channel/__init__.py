"""Payment channels: the signed state (commitment.py), the two-party state machine, routing,
onions and invoices (all sans-IO), the L1 contract (chain/contracts/channel.py) and the
node service that runs them."""
