"""Bitcoin address validation for one network, and the address type that decides the dust limit.

Parsing uses embit's base58check and bech32/bech32m decoders, but checks the network explicitly: embit's own
``address_to_scriptpubkey`` accepts an address of any network, which is exactly the mistake we must refuse
(a testnet address on mainnet would burn the payout).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from embit import base58, bech32
from embit.script import Script

from icy_backend.domain.fees import DUST

AddressType = Literal["p2pkh", "p2sh", "p2wpkh", "p2wsh", "p2tr"]

# Base58 version bytes and bech32 human-readable parts per network (testnet and signet share them).
_BASE58: dict[str, tuple[int, int]] = {
    "mainnet": (0x00, 0x05),
    "testnet": (0x6F, 0xC4),
    "signet": (0x6F, 0xC4),
    "regtest": (0x6F, 0xC4),
}
_HRP: dict[str, str] = {"mainnet": "bc", "testnet": "tb", "signet": "tb", "regtest": "bcrt"}

# Dust limits of SPEC §9 from the shared fee module, plus P2WSH (Bitcoin Core's 330 for a 43-byte output, as P2TR).
DUST_LIMITS: dict[str, int] = {**DUST, "p2wsh": 330}


class InvalidAddress(ValueError):
    """The text is not a valid address of the configured network. ``reason`` is a short class."""

    def __init__(self, reason: Literal["malformed", "wrong_network", "unsupported"]) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class BtcAddress:
    """A parsed address: its text, type and output script."""

    text: str
    type: AddressType
    script_pubkey: bytes

    @property
    def dust_limit(self) -> int:
        return DUST_LIMITS[self.type]

    def script(self) -> Script:
        return Script(self.script_pubkey)


def parse_address(text: str, network: str) -> BtcAddress:
    """Parse ``text`` as an address of ``network`` (mainnet/testnet/signet/regtest); raise InvalidAddress."""
    if network not in _HRP:
        raise ValueError(f"unknown network {network!r}")
    text = text.strip() if isinstance(text, str) else ""
    if not text or len(text) > 100 or not text.isascii():
        raise InvalidAddress("malformed")
    if "1" in text and text.lower().startswith(("bc1", "tb1", "bcrt1")):
        return _parse_segwit(text, network)
    return _parse_base58(text, network)


def is_valid_address(text: str, network: str) -> bool:
    try:
        parse_address(text, network)
    except InvalidAddress:
        return False
    return True


def dust_limit(text: str, network: str) -> int:
    """The dust limit in sats for an output paying ``text`` (raises InvalidAddress)."""
    return parse_address(text, network).dust_limit


def _parse_segwit(text: str, network: str) -> BtcAddress:
    if text != text.lower() and text != text.upper():
        raise InvalidAddress("malformed")
    hrp = text.lower().rsplit("1", 1)[0]
    if hrp not in _HRP.values():
        raise InvalidAddress("malformed")
    if hrp != _HRP[network]:
        raise InvalidAddress("wrong_network")
    try:
        version, program = bech32.decode(hrp, text.lower())
    except Exception:
        raise InvalidAddress("malformed") from None
    if version is None or program is None:
        raise InvalidAddress("malformed")
    data = bytes(program)
    if version == 0 and len(data) == 20:
        kind: AddressType = "p2wpkh"
    elif version == 0 and len(data) == 32:
        kind = "p2wsh"
    elif version == 1 and len(data) == 32:
        kind = "p2tr"
    else:
        # Future witness versions are valid addresses but we do not pay to them.
        raise InvalidAddress("unsupported")
    opcode = 0 if version == 0 else 0x50 + version
    return BtcAddress(text, kind, bytes([opcode, len(data)]) + data)


def _parse_base58(text: str, network: str) -> BtcAddress:
    try:
        raw = bytes(base58.decode_check(text))
    except Exception:
        raise InvalidAddress("malformed") from None
    if len(raw) != 21:
        raise InvalidAddress("malformed")
    version, payload = raw[0], raw[1:]
    p2pkh_v, p2sh_v = _BASE58[network]
    if version == p2pkh_v:
        return BtcAddress(text, "p2pkh", b"\x76\xa9\x14" + payload + b"\x88\xac")
    if version == p2sh_v:
        return BtcAddress(text, "p2sh", b"\xa9\x14" + payload + b"\x87")
    known = {v for pair in _BASE58.values() for v in pair}
    raise InvalidAddress("wrong_network" if version in known else "malformed")
