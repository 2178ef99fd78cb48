// SPDX-License-Identifier: MIT
pragma solidity ^0.8.20;

/// @dev An enclave's attestation, as `registerExecutor` takes it.
struct Attestation {
    bytes enclavePubKey;
    bytes PCR0;
    bytes PCR1;
    bytes PCR2;
    uint256 timestampInMilliseconds;
}

/// @dev The attestation verifier interface the published Executors call: reverts unless
///      `signature` is the verifier enclave's signature over `attestation`.
interface IAttestationVerifier {
    function verify(bytes memory signature, Attestation memory attestation) external view;
}

/// @title DevAttestationVerifier — accepts any attestation (devnets only).
/// @notice The real verifier checks a signature by a registered verifier enclave over the
///         attestation; this one checks nothing, so a devnet can register executors that run
///         outside an enclave. Executors still check PCR lengths, the image whitelist and the age.
contract DevAttestationVerifier is IAttestationVerifier {
    function verify(bytes memory, Attestation memory) external pure {}
}
