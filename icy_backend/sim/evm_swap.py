"""``eth_sendRawTransaction`` for the simulator, mainly the signed EIP-1559 ``swap(...)`` call.

Swap function: ``swap(uint256 icyAmount, string btcAddress, uint256 btcAmount, uint256 nonce,
uint256 deadline, bytes signature)``, selector ``0xade44138`` (as in the old service's ABI). The simulated
contract checks the EIP-712 authorisation (domain ``{"ICY BTC SWAP", "1", chainId, swap contract}``, type
``Swap(uint256 icyAmount,string btcAddress,uint256 btcAmount,uint256 nonce,uint256 deadline)``) against the
configured signer, the deadline, digest reuse and the sender's ICY balance; then moves the ICY from the sender
to the swap contract and emits ``Transfer`` and ``Swap``. A failed check still mines the transaction, with a
receipt of status 0x0 (revert) and no logs. Other transactions are accepted as plain calls (ICY ``transfer``
is applied).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import rlp  # type: ignore[import-untyped]
from eth_abi.abi import decode
from eth_account import Account
from eth_account.messages import encode_typed_data
from eth_utils.address import to_checksum_address
from eth_utils.crypto import keccak

from icy_backend.sim import abi
from icy_backend.sim.evm_chain import EvmTx, Log, RpcError, norm

if TYPE_CHECKING:
    from icy_backend.sim.evm_chain import EvmChain

SWAP_TYPES = {
    "Swap": [
        {"name": "icyAmount", "type": "uint256"},
        {"name": "btcAddress", "type": "string"},
        {"name": "btcAmount", "type": "uint256"},
        {"name": "nonce", "type": "uint256"},
        {"name": "deadline", "type": "uint256"},
    ]
}


def _int(value: bytes) -> int:
    return int.from_bytes(value, "big")


def apply_raw_transaction(chain: EvmChain, raw_hex: str) -> str:
    """Decode, check and apply a signed raw transaction (pending until the next block); returns its hash."""
    try:
        raw = bytes.fromhex(raw_hex.removeprefix("0x"))
    except ValueError as exc:
        raise RpcError(-32602, "invalid raw transaction hex") from exc
    if not raw or raw[0] != 0x02:
        raise RpcError(-32000, "transaction type not supported: only EIP-1559 (type 2) transactions")
    try:
        fields: Any = rlp.decode(raw[1:])
        sender = str(Account.recover_transaction(raw)).lower()
    except Exception as exc:
        raise RpcError(-32000, "rlp: invalid transaction") from exc
    chain_id, nonce, tip, max_fee, gas, to, value, data = fields[:8]
    tx_hash = "0x" + keccak(raw).hex()
    known = chain.txs.get(tx_hash)
    if known is not None:
        raise RpcError(-32000, "already known" if known.block_number is None else "nonce too low")
    if _int(chain_id) != chain.chain_id:
        raise RpcError(-32000, "invalid chain id for signer")
    expected = chain.nonces.get(sender, 0)
    if _int(nonce) < expected:
        raise RpcError(-32000, f"nonce too low: next nonce {expected}, tx nonce {_int(nonce)}")
    if _int(nonce) > expected:
        raise RpcError(-32000, f"nonce too high: next nonce {expected}, tx nonce {_int(nonce)}")
    if _int(max_fee) < chain.blocks[-1].base_fee:
        raise RpcError(-32000, "max fee per gas less than block base fee")
    to_address = "0x" + bytes(to).hex() if to else None
    tx = EvmTx(tx_hash, sender, to_address, _int(nonce), "0x" + bytes(data).hex(), chain.chain_id)
    tx.value, tx.gas, tx.max_fee, tx.max_priority = _int(value), _int(gas), _int(max_fee), _int(tip)
    tx.v, tx.r, tx.s = _int(fields[9]), _int(fields[10]), _int(fields[11])
    chain.nonces[sender] = expected + 1
    chain.txs[tx_hash] = tx
    chain.pending.append(tx)
    calldata = bytes(data)
    if to_address == norm(chain.swap_address) and "0x" + calldata[:4].hex() == abi.SEL_SWAP:
        tx.status = 1 if _apply_swap(chain, tx, calldata[4:]) else 0
    elif to_address == norm(chain.icy_address) and "0x" + calldata[:4].hex() == abi.SEL_TRANSFER:
        recipient, amount = decode(["address", "uint256"], calldata[4:])
        if chain.balance_of(sender) >= amount:
            chain.transfer_in(tx, sender, recipient, amount)
        else:
            tx.status = 0
    return tx_hash


def swap_digest(chain: EvmChain, args: tuple[Any, ...]) -> Any:
    """The signable EIP-712 message of a swap authorisation for this chain and swap contract."""
    icy_amount, btc_address, btc_amount, nonce, deadline = args[:5]
    domain = {
        "name": "ICY BTC SWAP",
        "version": "1",
        "chainId": chain.chain_id,
        "verifyingContract": to_checksum_address(chain.swap_address),
    }
    message = {
        "icyAmount": icy_amount,
        "btcAddress": btc_address,
        "btcAmount": btc_amount,
        "nonce": nonce,
        "deadline": deadline,
    }
    return encode_typed_data(domain, SWAP_TYPES, message)


def _apply_swap(chain: EvmChain, tx: EvmTx, args_data: bytes) -> bool:
    try:
        args = abi.decode_swap_call(args_data)
    except Exception:
        return False
    icy_amount, btc_address, btc_amount, _nonce, deadline, signature = args
    if deadline < max(int(chain.clock()), chain.blocks[-1].timestamp):
        return False
    if chain.signer_address is None or len(signature) != 65:
        return False
    signable = swap_digest(chain, args)
    digest = keccak(b"\x19" + signable.version + signable.header + signable.body)
    if digest in chain.used_digests:
        return False
    try:
        signer = Account.recover_message(signable, signature=signature)
    except Exception:
        return False
    if norm(signer) != norm(chain.signer_address) or chain.balance_of(tx.frm) < icy_amount:
        return False
    chain.used_digests.add(digest)
    chain.transfer_in(tx, tx.frm, chain.swap_address, icy_amount)
    data = abi.swap_data(icy_amount, btc_address, btc_amount)
    tx.logs.append(Log(norm(chain.swap_address), [abi.SWAP_TOPIC], data, tx))
    return True
