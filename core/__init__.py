"""Shared types of the product: imported by workflows, activities, workers and starters alike.

Nothing in this package imports a client library (boto3, kubernetes, hvac, slack_sdk, ...) or does I/O at
import time, so workflow code can import it through the sandbox.
"""
