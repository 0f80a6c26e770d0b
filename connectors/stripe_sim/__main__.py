"""`python -m connectors.stripe_sim --port 12111 --webhook-url URL --webhook-secret whsec_x`"""

from __future__ import annotations

import argparse
import json

from connectors.stripe_sim.config import BASIL, SimConfig
from connectors.stripe_sim.faults import FaultConfig
from connectors.stripe_sim.runner import serve


def parse_args(argv: list[str] | None = None) -> SimConfig:
    parser = argparse.ArgumentParser(
        prog="python -m connectors.stripe_sim",
        description="A stateful Stripe API simulator for tests and demos.",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=12111)
    parser.add_argument("--webhook-url", help="where signed events are POSTed")
    parser.add_argument("--webhook-secret", help="signing secret, whsec_...")
    parser.add_argument("--webhook-api-version", default=BASIL, help="shape of event objects")
    parser.add_argument(
        "--api-version", default=BASIL, help="shape of responses without a Stripe-Version header"
    )
    parser.add_argument(
        "--faults",
        default="{}",
        help='JSON, e.g. {"rate_429": 0.2, "rate_500": 0.1, "latency_ms": 50, "seed": 1}',
    )
    args = parser.parse_args(argv)
    try:
        faults = FaultConfig().merged(json.loads(args.faults))
        return SimConfig(
            host=args.host,
            port=args.port,
            webhook_url=args.webhook_url,
            webhook_secret=args.webhook_secret,
            webhook_api_version=args.webhook_api_version,
            default_api_version=args.api_version,
            faults=faults,
        )
    except ValueError as error:
        parser.error(str(error))


def main(argv: list[str] | None = None) -> None:
    serve(parse_args(argv))


if __name__ == "__main__":
    main()
