"""Outbound clients of the wallet: APNs, the Google Wallet REST API, and the identity and
profile services."""
