// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

interface IERC20Like {
    function transferFrom(address from, address to, uint256 amount) external returns (bool);
}

/// @title ICY -> BTC swap (test implementation of the published interface)
/// @notice Takes a user's ICY against an EIP-712 authorisation signed by the configured signer and emits
///         Swap(icyAmount, btcAddress, btcAmount); the service pays the BTC when it indexes that event.
///         Written from the interface only (SPEC §9, §11): an independent judge of the service's signatures.
///         The string is hashed the standard EIP-712 way, keccak256(bytes(btcAddress)).
///         Deliberately no function that returns ICY to a caller against a signature.
contract IcyBtcSwap {
    bytes32 public constant DOMAIN_TYPEHASH =
        keccak256("EIP712Domain(string name,string version,uint256 chainId,address verifyingContract)");
    bytes32 public constant SWAP_TYPEHASH =
        keccak256("Swap(uint256 icyAmount,string btcAddress,uint256 btcAmount,uint256 nonce,uint256 deadline)");
    bytes32 private constant NAME_HASH = keccak256(bytes("ICY BTC SWAP"));
    bytes32 private constant VERSION_HASH = keccak256(bytes("1"));
    // secp256k1n / 2: a larger s is the malleable twin of a valid signature (EIP-2).
    uint256 private constant HALF_ORDER = 0x7fffffffffffffffffffffffffffffff5d576e7357a4501ddfe92f46681b20a0;

    IERC20Like public immutable icy;
    address public immutable signer;
    mapping(bytes32 => bool) public usedDigests;

    event Swap(uint256 icyAmount, string btcAddress, uint256 btcAmount);

    error DeadlinePassed();
    error DigestAlreadyUsed();
    error InvalidSignature();
    error WrongSigner();
    error TransferFailed();

    constructor(address icyToken, address swapSigner) {
        require(icyToken != address(0) && swapSigner != address(0), "IcyBtcSwap: zero address");
        icy = IERC20Like(icyToken);
        signer = swapSigner;
    }

    function domainSeparator() public view returns (bytes32) {
        return keccak256(abi.encode(DOMAIN_TYPEHASH, NAME_HASH, VERSION_HASH, block.chainid, address(this)));
    }

    /// @notice The EIP-712 digest keccak256(0x19 0x01 || domainSeparator || hashStruct(Swap)).
    function swapDigest(
        uint256 icyAmount,
        string calldata btcAddress,
        uint256 btcAmount,
        uint256 nonce,
        uint256 deadline
    ) public view returns (bytes32) {
        bytes32 structHash = keccak256(
            abi.encode(SWAP_TYPEHASH, icyAmount, keccak256(bytes(btcAddress)), btcAmount, nonce, deadline)
        );
        return keccak256(abi.encodePacked(hex"1901", domainSeparator(), structHash));
    }

    function swap(
        uint256 icyAmount,
        string calldata btcAddress,
        uint256 btcAmount,
        uint256 nonce,
        uint256 deadline,
        bytes calldata signature
    ) external {
        if (block.timestamp > deadline) revert DeadlinePassed();
        bytes32 digest = swapDigest(icyAmount, btcAddress, btcAmount, nonce, deadline);
        if (usedDigests[digest]) revert DigestAlreadyUsed();
        if (_recover(digest, signature) != signer) revert WrongSigner();
        if (!icy.transferFrom(msg.sender, address(this), icyAmount)) revert TransferFailed();
        usedDigests[digest] = true;
        emit Swap(icyAmount, btcAddress, btcAmount);
    }

    /// @dev r || s || v with v in {27, 28} (0/1 accepted too), low s only; address(0) never passes.
    function _recover(bytes32 digest, bytes calldata signature) private pure returns (address) {
        if (signature.length != 65) revert InvalidSignature();
        bytes32 r = bytes32(signature[0:32]);
        bytes32 s = bytes32(signature[32:64]);
        uint8 v = uint8(signature[64]);
        if (v < 27) v += 27;
        if ((v != 27 && v != 28) || uint256(s) > HALF_ORDER) revert InvalidSignature();
        address recovered = ecrecover(digest, v, r, s);
        if (recovered == address(0)) revert InvalidSignature();
        return recovered;
    }
}
