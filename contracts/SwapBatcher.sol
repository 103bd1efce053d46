// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {IcyBtcSwap} from "./IcyBtcSwap.sol";
import {IcyToken} from "./IcyToken.sol";

/// @title Several swaps in one transaction
/// @notice Pulls the caller's ICY for every call, then performs each swap as msg.sender of the swap contract.
///         Identical calls (same amounts and address, different nonces) emit byte-identical Swap logs in one
///         transaction: the service must pay each of them once (payouts keyed per event, not per transaction).
contract SwapBatcher {
    struct SwapCall {
        uint256 icyAmount;
        string btcAddress;
        uint256 btcAmount;
        uint256 nonce;
        uint256 deadline;
        bytes signature;
    }

    IcyBtcSwap public immutable swapContract;
    IcyToken public immutable icy;

    constructor(IcyBtcSwap swapContract_, IcyToken icy_) {
        swapContract = swapContract_;
        icy = icy_;
    }

    function swapAll(SwapCall[] calldata calls) external {
        uint256 total;
        for (uint256 i = 0; i < calls.length; i++) {
            total += calls[i].icyAmount;
        }
        require(icy.transferFrom(msg.sender, address(this), total), "SwapBatcher: pull failed");
        require(icy.approve(address(swapContract), total), "SwapBatcher: approve failed");
        for (uint256 i = 0; i < calls.length; i++) {
            SwapCall calldata c = calls[i];
            swapContract.swap(c.icyAmount, c.btcAddress, c.btcAmount, c.nonce, c.deadline, c.signature);
        }
    }
}
