"""The independent re-verifier (bitcoinlib) and the simulators' record of accepted transactions."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from icy_backend.sim.btc_rules import parse_tx
from icy_backend.sim.btc_wallet import P2wpkhKey
from icy_backend.sim.esplora import EsploraSim
from icy_backend.sim.esplora_chain import RECORD_ENV
from tests.btc_verify import VerificationError, payout_problems, verify_record_file, verify_tx

WALLET = P2wpkhKey.from_seed(b"verify wallet")
USER = P2wpkhKey.from_seed(b"verify user")


def wallet_script() -> str:
    sim = EsploraSim()
    txid, _ = sim.fund(WALLET.address, 1)
    return sim.txs[txid].vout[0].script.hex()


def signed(value: int = 100_000, *, sequence: int = 0xFFFFFFFD, key: P2wpkhKey = WALLET) -> str:
    return key.sign_spend(
        [("cd" * 32, 1, value), ("ef" * 32, 0, 20_000)],
        [(USER.address, 70_000), (WALLET.address, 49_000)],
        sequence=sequence,
    )


def test_a_good_transaction_verifies_with_fee_outputs_and_rbf() -> None:
    script = wallet_script()
    tx = verify_tx(signed(), [(100_000, script), (20_000, script)])
    assert tx.fee == 1_000
    assert tx.outputs == [(USER.address, 70_000), (WALLET.address, 49_000)]
    assert tx.signals_rbf is True
    assert tx.txid == parse_tx(bytes.fromhex(signed())).txid
    assert verify_tx(signed(sequence=0xFFFFFFFF), [(100_000, script), (20_000, script)]).signals_rbf is False


def test_bad_transactions_do_not_verify() -> None:
    script = wallet_script()
    with pytest.raises(VerificationError):  # signed over another amount
        verify_tx(signed(value=100_001), [(100_000, script), (20_000, script)])
    with pytest.raises(VerificationError):  # another key
        verify_tx(signed(key=USER), [(100_000, script), (20_000, script)])
    raw = bytes.fromhex(signed())
    sig = parse_tx(raw).vin[1].witness[0]
    flipped = sig[:-10] + bytes([sig[-10] ^ 1]) + sig[-9:]
    with pytest.raises(VerificationError):
        verify_tx(raw.replace(sig, flipped).hex(), [(100_000, script), (20_000, script)])
    with pytest.raises(VerificationError):  # outputs above inputs
        verify_tx(signed(), [(1_000, script), (20_000, script)])


def test_simulator_records_what_it_accepts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    record = tmp_path / "accepted.jsonl"
    monkeypatch.setenv(RECORD_ENV, str(record))
    sim = EsploraSim()
    txid, vout = sim.fund(WALLET.address, 100_000)
    raw = WALLET.sign_spend([(txid, vout, 100_000)], [(USER.address, 60_000)])
    sim.broadcast(raw)
    with pytest.raises(Exception, match="txn-already-known"):
        sim.broadcast(raw)  # refused: not recorded again
    lines = [json.loads(line) for line in record.read_text().splitlines()]
    assert lines == [{"raw": raw, "prevouts": [[100_000, sim.txs[txid].vout[0].script.hex()]]}]
    assert verify_record_file(record) == (1, [])
    # A record the independent library refuses is reported.
    with record.open("a") as f:
        f.write(json.dumps({"raw": raw, "prevouts": [[100_001, lines[0]["prevouts"][0][1]]]}) + "\n")
    count, failures = verify_record_file(record)
    assert count == 1  # same raw bytes: checked once
    assert failures == []
    bad = WALLET.sign_spend([(txid, vout, 100_001)], [(USER.address, 60_000)])
    with record.open("a") as f:
        f.write(json.dumps({"raw": bad, "prevouts": lines[0]["prevouts"]}) + "\n")
    count, failures = verify_record_file(record)
    assert count == 2
    assert len(failures) == 1


def test_payout_problems_names_each_defect() -> None:
    script = wallet_script()
    prevouts = [(100_000, script), (20_000, script)]
    raw = signed()
    txid = parse_tx(bytes.fromhex(raw)).txid

    def problems(raw_hex: str, **changes: object) -> list[str]:
        row: dict[str, object] = {"txid": txid, "fee": 1_000, "address": USER.address, "total": 70_000, **changes}
        return payout_problems(
            raw_hex,
            prevouts,
            txid=str(row["txid"]),
            fee=int(str(row["fee"])),
            address=str(row["address"]),
            total=int(str(row["total"])),
        )

    assert problems(raw) == []
    assert problems(raw, fee=999) == [f"{txid}: fee is 1000 (inputs − outputs), the row says 999"]
    assert problems(raw, total=70_001) == [
        f"{txid}: outputs to the payout address are [70000], the row's total is 70001"
    ]
    assert problems(raw, txid="00" * 32) == [f"{'00' * 32}: raw transaction has txid {txid}"]
    final = signed(sequence=0xFFFFFFFE)
    final_txid = parse_tx(bytes.fromhex(final)).txid
    assert problems(final, txid=final_txid) == [f"{final_txid}: an input does not signal BIP 125 replaceability"]
    assert "VerificationError" in problems(signed(key=USER))[0]
