// SPDX-License-Identifier: MIT
pragma solidity ^0.8.20;

/// @title UserCode — code storage by calldata (development version).
/// @notice Compatible with the Oyster Serverless `UserCode` contract:
///         `saveCodeInCallData(string)` has selector 0xff7cdaf3.
///
/// The contract does nothing with its argument: the user's JavaScript lives only in the calldata
/// of the transaction, and a job's `codehash` is the hash of that transaction. Executors fetch it
/// with `eth_getTransactionByHash(codehash)`, check `to` is this contract and ABI-decode the
/// calldata after the selector as `(string)`.
///
/// Development differences from the reference: none on the wire. It emits `CodeSaved(sender)` as
/// a convenience (the reference emits nothing); executors must not depend on that event.
contract UserCode {
    event CodeSaved(address indexed sender);

    function saveCodeInCallData(string calldata inputData) external {
        inputData; // intentionally unused: the code is read back from the transaction's calldata
        emit CodeSaved(msg.sender);
    }
}
