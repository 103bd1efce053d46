"""Esplora simulator as a node with rules: signatures, fee floors, BIP 125 replacement, Core's refusal bodies."""

from __future__ import annotations

import hashlib
import json
from collections.abc import AsyncIterator

import httpx
import pytest
from coincurve import PrivateKey

from icy_backend.sim.btc_rules import ParsedTx, TxIn, TxOut, bip143_sighash, parse_tx
from icy_backend.sim.btc_wallet import P2wpkhKey
from icy_backend.sim.esplora import EsploraSim

pytestmark = pytest.mark.anyio

WALLET = P2wpkhKey.from_seed(b"rules wallet")
USER = P2wpkhKey.from_seed(b"rules user")
RBF = 0xFFFFFFFD


@pytest.fixture
def sim() -> EsploraSim:
    return EsploraSim()


@pytest.fixture
async def client(sim: EsploraSim) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=sim.app), base_url="http://sim") as c:
        yield c


def refusal(r: httpx.Response) -> tuple[int, str]:
    """(code, message) of Esplora's 400 body ``sendrawtransaction RPC error: {...}``."""
    assert r.status_code == 400, r.text
    prefix = "sendrawtransaction RPC error: "
    assert r.text.startswith(prefix), r.text
    body = json.loads(r.text[len(prefix) :])
    assert set(body) == {"code", "message"}
    return int(body["code"]), str(body["message"])


async def post(client: httpx.AsyncClient, raw: str) -> httpx.Response:
    return await client.post("/tx", content=raw)


def pay(coin: tuple[str, int], value: int, amount: int, fee: int, *, sequence: int = RBF) -> str:
    """WALLET pays ``amount`` to USER from ``coin`` worth ``value``, change back to WALLET, ``fee`` sats fee."""
    outputs = [(USER.address, amount)]
    if value - amount - fee:
        outputs.append((WALLET.address, value - amount - fee))
    return WALLET.sign_spend([(coin[0], coin[1], value)], outputs, sequence=sequence)


def flip_signature_byte(raw: str) -> str:
    """The same transaction with one byte of the first input's signature changed (DER stays well-formed)."""
    tx = parse_tx(bytes.fromhex(raw))
    sig = tx.vin[0].witness[0]
    pos = len(sig) - 10  # inside s, away from DER headers and the hashtype byte
    bad_sig = sig[:pos] + bytes([sig[pos] ^ 0x01]) + sig[pos + 1 :]
    at = tx.raw.find(sig)
    return (tx.raw[:at] + bad_sig + tx.raw[at + len(sig) :]).hex()


async def test_vsize_is_weight_over_four_rounded_up(sim: EsploraSim, client: httpx.AsyncClient) -> None:
    coin = sim.fund(WALLET.address, 100_000)
    raw = pay(coin, 100_000, 50_000, 1_000)
    tx = parse_tx(bytes.fromhex(raw))
    # One P2WPKH input, two P2WPKH outputs: 113 non-witness bytes, 109 witness bytes (with a 72-byte signature).
    assert tx.weight == len(tx.serialize(with_witness=False)) * 3 + len(bytes.fromhex(raw))
    assert tx.vsize == -(-tx.weight // 4)
    assert 140 <= tx.vsize <= 142
    txid = (await post(client, raw)).text
    assert (await client.get(f"/tx/{txid}")).json()["weight"] == tx.weight
    assert sim.txs[txid].vsize == tx.vsize


async def test_bad_signature_is_refused_like_core(sim: EsploraSim, client: httpx.AsyncClient) -> None:
    coin = sim.fund(WALLET.address, 100_000)
    good = pay(coin, 100_000, 50_000, 1_000)
    code, message = refusal(await post(client, flip_signature_byte(good)))
    assert code == -26
    assert message == "mandatory-script-verify-flag-failed (Signature must be zero for failed CHECK(MULTI)SIG)"
    # Signed over another amount (BIP 143 commits to the value), or by another key.
    wrong_value = WALLET.sign_spend([(coin[0], coin[1], 100_001)], [(USER.address, 50_000)])
    assert refusal(await post(client, wrong_value))[1].startswith("mandatory-script-verify-flag-failed")
    wrong_key = USER.sign_spend([(coin[0], coin[1], 100_000)], [(USER.address, 50_000)])
    assert refusal(await post(client, wrong_key)) == (
        -26,
        "mandatory-script-verify-flag-failed (Witness program hash mismatch)",
    )
    assert sim.accepted == []
    assert (await post(client, good)).status_code == 200


async def test_refusal_codes(sim: EsploraSim, client: httpx.AsyncClient) -> None:
    coin = sim.fund(WALLET.address, 100_000)
    assert refusal(await post(client, "00")) == (-22, "TX decode failed")
    unknown = pay(("ab" * 32, 0), 100_000, 50_000, 1_000)
    assert refusal(await post(client, unknown)) == (-25, "bad-txns-inputs-missingorspent")
    dust = pay(coin, 100_000, 293, 1_000)  # P2WPKH dust limit is 294
    assert refusal(await post(client, dust)) == (-26, "dust")
    raw = pay(coin, 100_000, 50_000, 1_000)
    txid = (await post(client, raw)).text
    assert refusal(await post(client, raw)) == (-26, "txn-already-known")
    sim.mine()
    assert refusal(await post(client, raw)) == (-27, "Transaction already in block chain")
    # Once every output of the confirmed tx is spent, Core no longer finds it in the UTXO set.
    change = sim.txs[txid].vout[1].value
    sweep = WALLET.sign_spend([(txid, 1, change)], [(USER.address, change - 500)])
    assert (await post(client, sweep)).status_code == 200
    USER_spend = USER.sign_spend([(txid, 0, 50_000)], [(WALLET.address, 49_000)])
    assert (await post(client, USER_spend)).status_code == 200
    sim.mine()
    assert refusal(await post(client, raw)) == (-25, "bad-txns-inputs-missingorspent")


async def test_min_relay_and_mempool_min_fee(sim: EsploraSim, client: httpx.AsyncClient) -> None:
    coin = sim.fund(WALLET.address, 100_000)
    low = pay(coin, 100_000, 50_000, 100)  # < 1 sat/vB
    code, message = refusal(await post(client, low))
    assert (code, message.split(",")[0]) == (-26, "min relay fee not met")
    await client.put("/_sim/fees", json={"mempool_min": 10.0})
    below = pay(coin, 100_000, 50_000, 1_000)  # ~7 sat/vB
    code, message = refusal(await post(client, below))
    vsize = parse_tx(bytes.fromhex(below)).vsize
    assert (code, message) == (-26, f"mempool min fee not met, 1000 < {vsize * 10}")
    assert (await post(client, pay(coin, 100_000, 50_000, vsize * 10))).status_code == 200


async def test_replacement_rules(sim: EsploraSim, client: httpx.AsyncClient) -> None:
    coin = sim.fund(WALLET.address, 100_000)
    first = pay(coin, 100_000, 50_000, 1_000)
    first_txid = (await post(client, first)).text
    vsize = sim.txs[first_txid].vsize
    # Same fee rate: BIP 125 rule 6.
    same = pay(coin, 100_000, 50_001, 1_000)
    code, message = refusal(await post(client, same))
    assert code == -26
    assert message.startswith("insufficient fee, rejecting replacement") and "new feerate" in message
    # Higher rate but not 1 sat/vB of its own size more than the replaced fee: rule 4.
    stingy = pay(coin, 100_000, 50_000, 1_000 + vsize - 1)
    assert "not enough additional fees to relay" in refusal(await post(client, stingy))[1]
    assert [p["status"] for p in sim.payments()] == ["mempool"]
    # Enough: the old one leaves the mempool and is `replaced` in payments.
    bump = pay(coin, 100_000, 50_000, 1_000 + vsize)
    r = await post(client, bump)
    assert r.status_code == 200, r.text
    assert sorted((p["txid"], p["status"]) for p in sim.payments()) == sorted(
        [(first_txid, "replaced"), (r.text, "mempool")]
    )
    assert (await client.get(f"/tx/{first_txid}/status")).status_code == 404
    assert sim.mempool == [r.text]
    out = (await client.get(f"/tx/{coin[0]}/outspend/{coin[1]}")).json()
    assert out["txid"] == r.text


async def test_replacement_must_pay_for_replaced_descendants(sim: EsploraSim, client: httpx.AsyncClient) -> None:
    coin = sim.fund(WALLET.address, 100_000)
    parent = (await post(client, pay(coin, 100_000, 50_000, 1_000))).text
    child = WALLET.sign_spend([(parent, 1, 49_000)], [(USER.address, 40_000)], sequence=RBF)
    child_txid = (await post(client, child)).text
    assert sim.txs[child_txid].fee == 9_000
    # Beats the parent's fee but not parent + child: rule 3.
    short = pay(coin, 100_000, 50_000, 5_000)
    assert "less fees than conflicting txs; 5000 < 10000" in refusal(await post(client, short))[1]
    enough = (await post(client, pay(coin, 100_000, 50_000, 10_500))).text
    statuses = {p["txid"]: p["status"] for p in sim.payments()}
    assert statuses == {parent: "replaced", child_txid: "replaced", enough: "mempool"}


async def test_non_signalling_transaction_is_not_replaced(sim: EsploraSim, client: httpx.AsyncClient) -> None:
    coin = sim.fund(WALLET.address, 100_000)
    final = pay(coin, 100_000, 50_000, 1_000, sequence=0xFFFFFFFE)
    assert (await post(client, final)).status_code == 200
    bump = pay(coin, 100_000, 50_000, 20_000)
    assert refusal(await post(client, bump)) == (-26, "txn-mempool-conflict")


async def test_replacement_may_not_add_unconfirmed_inputs(sim: EsploraSim, client: httpx.AsyncClient) -> None:
    coin = sim.fund(WALLET.address, 100_000)
    pending = sim.fund(WALLET.address, 50_000, confirmed=False)
    first = (await post(client, pay(coin, 100_000, 50_000, 1_000))).text
    both = WALLET.sign_spend(
        [(coin[0], coin[1], 100_000), (pending[0], pending[1], 50_000)], [(USER.address, 50_000)], sequence=RBF
    )
    code, message = refusal(await post(client, both))
    assert code == -26
    assert message.startswith("replacement-adds-unconfirmed")
    sim.mine()  # both the first payout and the pending coin confirm: nothing left to replace
    assert sim.confirmations(first) == 1


async def test_replacement_may_add_confirmed_inputs(sim: EsploraSim, client: httpx.AsyncClient) -> None:
    coin, extra = sim.fund(WALLET.address, 100_000), sim.fund(WALLET.address, 50_000)
    first = (await post(client, pay(coin, 100_000, 50_000, 1_000))).text
    both = WALLET.sign_spend(
        [(coin[0], coin[1], 100_000), (extra[0], extra[1], 50_000)],
        [(USER.address, 50_000), (WALLET.address, 95_000)],
        sequence=RBF,
    )
    second = (await post(client, both)).text
    assert {p["txid"]: p["status"] for p in sim.payments()} == {first: "replaced", second: "mempool"}


async def test_op_return_output_is_standard(sim: EsploraSim, client: httpx.AsyncClient) -> None:
    coin = sim.fund(WALLET.address, 100_000)
    script = sim.txs[coin[0]].vout[0].script
    outputs = (TxOut(50_000, script), TxOut(0, b"\x6a\x04memo"))
    tx = ParsedTx(2, (TxIn(coin[0], coin[1], b"", RBF, ()),), outputs, 0, b"", 0)
    secret = hashlib.sha256(b"rules wallet").digest()  # P2wpkhKey.from_seed's key
    digest = bip143_sighash(tx, 0, b"\x76\xa9\x14" + script[2:] + b"\x88\xac", 100_000, 1)
    key = PrivateKey(secret)
    witness = (key.sign(digest, hasher=None) + b"\x01", key.public_key.format())
    signed = ParsedTx(2, (TxIn(coin[0], coin[1], b"", RBF, witness),), outputs, 0, b"", 0)
    r = await post(client, signed.serialize().hex())
    assert r.status_code == 200, r.text
    assert sim.txs[r.text].vout[1].type == "unknown"


@pytest.mark.parametrize("hashtype", [0x01, 0x02, 0x03, 0x81, 0x82, 0x83])
async def test_own_bip143_sighash_agrees_with_embit(hashtype: int) -> None:
    """The simulator's sighash is its own code; on every hash type it must agree with an established one."""
    from embit.script import Script
    from embit.transaction import Transaction

    raw = WALLET.sign_spend(
        [("11" * 32, 0, 70_000), ("22" * 32, 3, 30_000)], [(USER.address, 60_000), (WALLET.address, 39_000)]
    )
    ours = parse_tx(bytes.fromhex(raw))
    theirs = Transaction.parse(bytes.fromhex(raw))
    for n, value in ((0, 70_000), (1, 30_000)):
        key_hash = ours.vin[n].witness[1]
        script_code = (
            b"\x76\xa9\x14" + hashlib.new("ripemd160", hashlib.sha256(key_hash).digest()).digest() + b"\x88\xac"
        )
        expected = theirs.sighash_segwit(n, Script(script_code), value, sighash=hashtype)
        assert bip143_sighash(ours, n, script_code, value, hashtype) == expected
    assert ours.txid == theirs.txid().hex()
    assert ours.serialize() == bytes.fromhex(raw)


async def test_absolute_lock_time_must_have_passed(sim: EsploraSim, client: httpx.AsyncClient) -> None:
    coin = sim.fund(WALLET.address, 100_000)
    outputs = [(USER.address, 50_000), (WALLET.address, 49_000)]
    early = WALLET.sign_spend([(coin[0], coin[1], 100_000)], outputs, sequence=RBF, locktime=sim.height + 1)
    assert refusal(await post(client, early)) == (-26, "non-final")
    # Anti-fee-sniping style (lock time = tip): minable in the next block.
    ok = WALLET.sign_spend([(coin[0], coin[1], 100_000)], outputs, sequence=RBF, locktime=sim.height)
    assert (await post(client, ok)).status_code == 200


async def test_relative_lock_time_bip68(sim: EsploraSim, client: httpx.AsyncClient) -> None:
    coin = sim.fund(WALLET.address, 100_000)  # confirmed in the tip block
    outputs = [(USER.address, 50_000), (WALLET.address, 49_000)]
    two_blocks = WALLET.sign_spend([(coin[0], coin[1], 100_000)], outputs, sequence=2)
    assert refusal(await post(client, two_blocks)) == (-26, "non-BIP68-final")
    sim.mine()  # the coin now has 2 confirmations: the next block is its 2nd block after
    assert (await post(client, two_blocks)).status_code == 200
