"""The payout wallet: WIF → key and P2WPKH address on the configured network, and the startup check."""

from __future__ import annotations

from dataclasses import dataclass

from embit import ec
from embit.networks import NETWORKS
from embit.script import p2wpkh

from icy_backend.settings import Settings

EMBIT_NETWORK = {"mainnet": "main", "testnet": "test", "signet": "signet", "regtest": "regtest"}


class WalletConfigError(ValueError):
    """The payout key or treasury address setting is unusable (the message names variables, never values)."""


@dataclass(frozen=True)
class PayoutWallet:
    """The payout key and its P2WPKH address (coins are selected from, and change goes back to, it)."""

    key: ec.PrivateKey
    address: str
    script_pubkey: bytes
    network: str

    def __repr__(self) -> str:  # never show the key
        return f"PayoutWallet(network={self.network})"


def wallet_from_wif(wif: str, network: str) -> PayoutWallet:
    """Decode ``wif`` and derive its compressed P2WPKH address on ``network``; raise WalletConfigError."""
    try:
        key = ec.PrivateKey.from_wif(wif.strip())
    except Exception:
        raise WalletConfigError("BTC_WALLET_WIF: not a valid WIF private key") from None
    if not key.compressed:
        raise WalletConfigError("BTC_WALLET_WIF: must be a compressed key (P2WPKH needs one)")
    wif_mainnet = bytes(key.network["wif"]) == bytes(NETWORKS["main"]["wif"]) if key.network else None
    if wif_mainnet is not None and wif_mainnet != (network == "mainnet"):
        raise WalletConfigError("BTC_WALLET_WIF: key is for another network than BTC_NETWORK")
    net = NETWORKS[EMBIT_NETWORK[network]]
    script = p2wpkh(key.get_public_key())
    return PayoutWallet(key, str(script.address(net)), bytes(script.data), network)


def payout_wallet(settings: Settings) -> PayoutWallet | None:
    """The configured payout wallet, or None when ``BTC_WALLET_WIF`` is unset."""
    if settings.BTC_WALLET_WIF is None or not settings.BTC_WALLET_WIF.get_secret_value():
        return None
    return wallet_from_wif(settings.BTC_WALLET_WIF.get_secret_value(), settings.btc_network)


def check_wallet_matches_treasury(settings: Settings) -> None:
    """Startup check: the WIF's P2WPKH address must equal ``BLOCKCHAIN_BTC_TREASURY_ADDRESS`` (when both set).

    Raises WalletConfigError with a message naming the variables (never the key or the addresses).
    """
    wallet = payout_wallet(settings)
    treasury = (settings.BLOCKCHAIN_BTC_TREASURY_ADDRESS or "").strip()
    if wallet is None or not treasury:
        return
    if wallet.address.lower() != treasury.lower():
        raise WalletConfigError(
            "BLOCKCHAIN_BTC_TREASURY_ADDRESS does not equal the P2WPKH address of BTC_WALLET_WIF "
            f"on BTC_NETWORK={settings.btc_network}"
        )
