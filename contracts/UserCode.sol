// SPDX-License-Identifier: MIT
pragma solidity ^0.8.20;

/// @title UserCode — code storage by calldata (development version).
/// @notice Both forms an executor meets (shared protocol.md, "UserCode"):
///   - current, as Marlin's published code contract: `saveCodeInCallData(string,bytes)` (0x1ae53fea),
///     emits `CodeCreated(address indexed owner, bytes metadata)`;
///   - legacy, as the 2024 standalone code contract: `saveCodeInCallData(string)` (0xff7cdaf3),
///     emits nothing.
///
/// Neither does anything with the code: it lives only in the calldata of the transaction, and a
/// job's `codehash` is the hash of that transaction. Executors fetch it with
/// `eth_getTransactionByHash(codehash)`, check `to` is this contract and ABI-decode the calldata
/// after the selector; the code is the first (`string`) argument.
contract UserCode {
    event CodeCreated(address indexed owner, bytes metadata);

    function saveCodeInCallData(string calldata inputData, bytes calldata metadata) external {
        inputData; // intentionally unused: the code is read back from the transaction's calldata
        emit CodeCreated(msg.sender, metadata);
    }

    function saveCodeInCallData(string calldata inputData) external pure {
        inputData;
    }
}
