"""External checks: cheap probes of each upstream, sent outside the production breakers (SPEC §5, §7).

Breaker handling (a decision): the breaker state is always reported in ``metadata.circuit_breaker_state``.
While it is ``open`` the live call is skipped and the check is ``unhealthy`` with error ``circuit_open``:
production calls to that upstream are being rejected, so from the service's point of view the dependency is
down, and probing a provider the breaker has given up on would only add load. Once the breaker's TTL passes it
reads ``half_open``; then the probe runs and a good answer gives ``degraded`` (the upstream answers,
production traffic has not closed the breaker yet). ``closed`` and a good answer give ``healthy``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, Protocol

from checks.model import HEALTHY, Check, Metadata, Outcome

log = logging.getLogger("checks")


class Probe(Protocol):
    """What a client offers a health check: one cheap read, raising the typed errors of clients.errors."""

    async def probe(self) -> Any: ...


BreakerStateFn = Callable[[], str]
Validate = Callable[[Any, Metadata], Outcome]


def _closed() -> str:
    return "closed"


def external_check(
    name: str,
    probe: Probe | None,
    *,
    breaker_state: BreakerStateFn = _closed,
    critical: bool,
    timeout: float,
    validate: Validate | None = None,
) -> Check:
    """A check around ``probe.probe()``; ``validate`` turns the probe's value into an outcome and metadata."""

    async def body(metadata: Metadata) -> Outcome:
        state = breaker_state()
        metadata["circuit_breaker_state"] = state
        if probe is None:
            return Outcome("unhealthy", "not_configured")
        if state == "open":
            return Outcome("unhealthy", "circuit_open")
        value = await probe.probe()
        outcome = validate(value, metadata) if validate is not None else HEALTHY
        if outcome.status == "healthy" and state != "closed":
            return Outcome("degraded")
        return outcome

    return Check(name, body, critical=critical, timeout=timeout)


def _is_height(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def validate_tip_height(value: Any, metadata: Metadata) -> Outcome:
    """Esplora ``/blocks/tip/height``: a non-negative integer."""
    if not _is_height(value):
        return Outcome("unhealthy", "invalid_response")
    metadata["block_height"] = value
    return HEALTHY


def chain_validator(expected_chain_id: int) -> Validate:
    """``(eth_chainId, eth_blockNumber)``: the chain id must be ``BLOCKCHAIN_CHAIN_ID``."""

    def validate(value: Any, metadata: Metadata) -> Outcome:
        if not (isinstance(value, tuple | list) and len(value) == 2 and all(_is_height(v) for v in value)):
            return Outcome("unhealthy", "invalid_response")
        chain_id, block_number = value
        metadata["chain_id"] = chain_id
        metadata["block_number"] = block_number
        if chain_id != expected_chain_id:
            log.warning("health check base_rpc: node serves chain %s, expected %s", chain_id, expected_chain_id)
            return Outcome("unhealthy", "chain_id_mismatch")
        return HEALTHY

    return validate
