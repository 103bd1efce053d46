"""A tiny P2WPKH wallet for tests and demo data: derive keys/addresses and sign spends with embit."""

from __future__ import annotations

import hashlib
from typing import Any

from embit import ec
from embit.networks import NETWORKS
from embit.script import Script, Witness, address_to_scriptpubkey, p2pkh, p2wpkh
from embit.transaction import SIGHASH, Transaction, TransactionInput, TransactionOutput


class P2wpkhKey:
    """A P2WPKH key: ``address``, ``wif`` and ``sign_spend`` for building signed raw transactions."""

    def __init__(self, secret: bytes, network: str = "test") -> None:
        self.network = NETWORKS[network]
        self.key: Any = ec.PrivateKey(secret)
        self.wif: str = str(self.key.wif(self.network))
        self.address: str = str(p2wpkh(self.key.get_public_key()).address(self.network))

    @classmethod
    def from_seed(cls, seed: bytes, network: str = "test") -> P2wpkhKey:
        return cls(hashlib.sha256(seed).digest(), network)

    def sign_spend(
        self,
        utxos: list[tuple[str, int, int]],
        outputs: list[tuple[str, int]],
        *,
        sequence: int = 0xFFFFFFFF,
        locktime: int = 0,
    ) -> str:
        """Raw hex spending ``utxos`` [(txid, vout, value)] of this key to ``outputs`` [(address, sats)].

        ``sequence`` applies to every input (``0xFFFFFFFD`` signals BIP 125 replaceability).
        """
        tx = Transaction(
            version=2,
            locktime=locktime,
            vin=[TransactionInput(bytes.fromhex(txid), vout, sequence=sequence) for txid, vout, _ in utxos],
            vout=[TransactionOutput(value, address_to_scriptpubkey(addr)) for addr, value in outputs],
        )
        pub = self.key.get_public_key()
        script_code: Script = p2pkh(pub)
        for n, (_, _, value) in enumerate(utxos):
            sig = self.key.sign(tx.sighash_segwit(n, script_code, value))
            tx.vin[n].witness = Witness([sig.serialize() + bytes([SIGHASH.ALL]), pub.sec()])
        return str(tx.serialize().hex())
