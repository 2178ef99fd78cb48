// SPDX-License-Identifier: MIT
pragma solidity ^0.8.20;

/// @title Sig — minimal EIP-712 (no chainId, no verifyingContract) and ECDSA recovery.
/// @notice Development helper for the serverless-executor dev contracts; no external imports.
///
/// Domain: `EIP712Domain(string name,string version)`;
/// `domainSeparator = keccak256(abi.encode(keccak256(typeString), keccak256(name), keccak256(version)))`;
/// `digest = keccak256(0x19 0x01 || domainSeparator || hashStruct)`.
///
/// Signatures are 65 bytes `r || s || v` with v in {27, 28}. Refusals are OpenZeppelin 5's ECDSA
/// errors, as the published contracts (which use OpenZeppelin's ECDSA) give them:
/// `ECDSAInvalidSignatureLength(uint256)` for a length other than 65, `ECDSAInvalidSignatureS(bytes32)`
/// for a high-s (malleable) signature, `ECDSAInvalidSignature()` for any other v (0/1 included) or
/// a signature that recovers no address.
library Sig {
    error ECDSAInvalidSignature();
    error ECDSAInvalidSignatureLength(uint256 length);
    error ECDSAInvalidSignatureS(bytes32 s);

    bytes32 internal constant DOMAIN_TYPEHASH = keccak256("EIP712Domain(string name,string version)");

    /// secp256k1n / 2
    uint256 internal constant HALF_ORDER = 0x7FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF5D576E7357A4501DDFE92F46681B20A0;

    function domainSeparator(string memory name, string memory version) internal pure returns (bytes32) {
        return keccak256(abi.encode(DOMAIN_TYPEHASH, keccak256(bytes(name)), keccak256(bytes(version))));
    }

    function typedDataDigest(bytes32 domainSep, bytes32 structHash) internal pure returns (bytes32) {
        return keccak256(abi.encodePacked(bytes2(0x1901), domainSep, structHash));
    }

    /// @return signer the recovered address; reverts with an ECDSA error otherwise.
    function recover(bytes32 digest, bytes memory signature) internal pure returns (address signer) {
        if (signature.length != 65) revert ECDSAInvalidSignatureLength(signature.length);
        bytes32 r;
        bytes32 s;
        uint8 v;
        assembly {
            r := mload(add(signature, 0x20))
            s := mload(add(signature, 0x40))
            v := byte(0, mload(add(signature, 0x60)))
        }
        if (uint256(s) > HALF_ORDER) revert ECDSAInvalidSignatureS(s);
        signer = ecrecover(digest, v, r, s);
        if (signer == address(0)) revert ECDSAInvalidSignature();
    }
}
