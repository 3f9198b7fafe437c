"""Signed webhooks: endpoint URL rules, signatures, the retry schedule and the dispatcher.

The endpoints, the outbox (`enqueue_webhook_deliveries`) and the reads live in
services/webhooks.py; this package holds what sends: docs/webhooks.md describes the whole.
"""
