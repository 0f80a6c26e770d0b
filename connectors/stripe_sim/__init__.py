"""A stateful Stripe API simulator, for tests and the demo (no internet needed).

    from connectors.stripe_sim import SimConfig, serve_in_thread
    with serve_in_thread(SimConfig(webhook_url=..., webhook_secret="whsec_...")) as url:
        client = stripe.StripeClient("sk_test_x", base_addresses={"api": url})

or `python -m connectors.stripe_sim --port 12111`. Admin endpoints live under /_sim.
"""

from connectors.stripe_sim.app import build_app
from connectors.stripe_sim.config import ACACIA, BASIL, SimConfig
from connectors.stripe_sim.faults import FaultConfig
from connectors.stripe_sim.runner import serve, serve_in_thread
from connectors.stripe_sim.webhooks import signature_header

__all__ = [
    "ACACIA",
    "BASIL",
    "FaultConfig",
    "SimConfig",
    "build_app",
    "serve",
    "serve_in_thread",
    "signature_header",
]
