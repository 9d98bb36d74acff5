"""Webhooks: signed POSTs to key holders' endpoints when their video jobs finish.

The sending half: `signing` (secrets and Standard Webhooks signatures), `targets` (which URLs
the relay may post to, and the checked address it connects to), `sender` (one delivery attempt),
`schedule` (when a failed delivery is tried again), `dispatcher` (the background loop that claims
due deliveries, sends them, and records each attempt). `endpoints` serves the webhook-endpoint API.
"""
