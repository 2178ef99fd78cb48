// SPDX-License-Identifier: MIT
pragma solidity ^0.8.20;

interface IERC20Approve {
    function approve(address spender, uint256 value) external returns (bool);
}

interface IJobsCreate {
    function createJob(uint8 env, bytes32 codehash, bytes calldata codeInputs, uint256 deadline)
        external
        returns (uint256 jobId);
}

/// @title GasBurner — a hostile job owner, for tests only.
/// @notice Creates jobs (so it is their `jobOwner`) and, when the result callback runs inside a
///         transaction that pays for gas (`tx.gasprice != 0`), loops until the callback runs out
///         of gas. A gas estimate taken without fee fields (`gasprice` 0) sees a cheap callback.
contract GasBurner {
    /// @notice Set by a callback that ran out of its loop (never: the loop ends out of gas).
    uint256 public spun;

    /// @notice Lets Jobs take this contract's USDC escrow (it is the job owner, so it pays).
    function approve(address token, address spender, uint256 value) external {
        IERC20Approve(token).approve(spender, value);
    }

    function createJob(address jobs, uint8 env, bytes32 codehash, bytes calldata codeInputs, uint256 deadline)
        external
        returns (uint256)
    {
        return IJobsCreate(jobs).createJob(env, codehash, codeInputs, deadline);
    }

    function oysterResultCall(uint256, bytes calldata, uint8, uint256) external {
        // Cheap (no storage write) when nobody pays for gas: an estimate without fee fields.
        if (tx.gasprice == 0) return;
        uint256 spin;
        while (gasleft() > 0) {
            spin += 1;
        }
        spun = spin; // never reached
    }

    function oysterFailureCall(uint256, uint256) external {}
}
