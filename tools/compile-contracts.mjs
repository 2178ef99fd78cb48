#!/usr/bin/env node
// Compiles the development contracts in contracts/ with the pinned solc (tools/node_modules/solc,
// solcjs) and writes contracts/artifacts/<Name>.json = {"abi", "bytecode", "contractName"}.
//
//   node tools/compile-contracts.mjs          # (re)write the artifacts
//   node tools/compile-contracts.mjs --check  # compile in memory, fail if an artifact is stale
//
// Both modes also check the ABI against the wire protocol (docs/protocol.md): the selectors
// 0x1ae53fea / 0xff7cdaf3 / 0x4af50fc8 / 0x95e11ef7, every protocol function, event and custom
// error, and that no other event or custom error exists. The TEE generation's contracts
// (contracts/tee/<Name>.sol → contracts/artifacts/tee/<Name>.json) are checked the same way, plus
// their function selectors, event topics, error selectors and EIP-712 typehashes against the
// protocol's published values. Exits non-zero with a message on any failure.
import { createRequire } from "node:module";
import { readFileSync, writeFileSync, mkdirSync, readdirSync, existsSync } from "node:fs";
import { dirname, join, relative, sep } from "node:path";
import { fileURLToPath } from "node:url";

const toolsDir = dirname(fileURLToPath(import.meta.url));
const root = dirname(toolsDir);
const contractsDir = join(root, "contracts");
const artifactsDir = join(contractsDir, "artifacts");
const require = createRequire(join(toolsDir, "package.json"));

function fail(msg) {
  console.error(`compile-contracts: ${msg}`);
  process.exit(1);
}

let solc, keccak256;
try {
  solc = require("solc");
  ({ keccak256 } = require("js-sha3"));
} catch (e) {
  fail(`cannot load solc from tools/node_modules (${e.message}); run: bash tools/install.sh`);
}

const EXPECTED_SOLC = "0.8.37";
const check = process.argv.includes("--check");
const CONTRACTS = ["UserCode", "Executors", "Jobs", "DevToken", "DevAttestationVerifier"];
// Test-only contracts (contracts/test/<Name>.sol → contracts/artifacts/test/<Name>.json): compiled
// and kept fresh like the others, with no protocol checks.
const TEST_CONTRACTS = ["GasBurner"];
// The TEE generation (contracts/tee/<Name>.sol), keyed "tee/<Name>" below.
const TEE_CONTRACTS = ["TeeManager", "Executors", "SecretStore", "SecretManager", "Jobs"];

// ---------------------------------------------------------------- protocol expectations
const SELECTORS = {
  UserCode: { "saveCodeInCallData(string,bytes)": "1ae53fea", "saveCodeInCallData(string)": "ff7cdaf3" },
  Jobs: {
    "submitOutput(bytes,uint256,bytes,uint256,uint8,uint256)": "4af50fc8",
    "slashOnExecutionTimeout(uint256)": "95e11ef7",
  },
};
const FUNCTIONS = {
  UserCode: ["saveCodeInCallData(string,bytes)", "saveCodeInCallData(string)"],
  Executors: [
    "registerExecutor(bytes,(bytes,bytes,bytes,bytes,uint256),uint256,uint256,bytes,uint256,uint8)",
    "drainExecutor(address)",
    "reviveExecutor(address)",
    "deregisterExecutor(address)",
    "getOwner(address)",
    "executors(address)",
    // dev-only plumbing, relied on by Jobs and the deploy code
    "setJobsContract(address)",
    "selectExecutors(uint8,uint256,uint256)",
    "releaseExecutor(address)",
    "slashExecutor(address)",
    "allowOnlyVerified(address)",
    "whitelistEnclaveImage(bytes,bytes,bytes)",
    "revokeEnclaveImage(bytes32)",
    "TOKEN()",
    "MIN_STAKE_AMOUNT()",
  ],
  Jobs: [
    "createJob(uint8,bytes32,bytes,uint256)",
    "submitOutput(bytes,uint256,bytes,uint256,uint8,uint256)",
    "slashOnExecutionTimeout(uint256)",
    "getSelectedExecutors(uint256)",
    "EXECUTION_BUFFER_TIME()",
    "SIGN_MAX_AGE()",
    "NO_OF_NODES_TO_SELECT()",
    "USDC_TOKEN()",
    "executionEnv(uint8)",
  ],
  DevToken: ["approve(address,uint256)", "transferFrom(address,address,uint256)", "allowance(address,address)", "balanceOf(address)"],
  DevAttestationVerifier: ["verify(bytes,(bytes,bytes,bytes,bytes,uint256))"],
};
const OUTPUTS = {
  "executors(address)": ["uint256", "uint256", "uint256", "address", "bool", "uint8"],
  "getOwner(address)": ["address"],
  "getSelectedExecutors(uint256)": ["address[]"],
  "createJob(uint8,bytes32,bytes,uint256)": ["uint256"],
};
// exact sets: name(types) with "indexed " markers for events
const EVENTS = {
  UserCode: ["CodeCreated(address indexed,bytes)"],
  Executors: [
    "ExecutorRegistered(address indexed,address indexed,uint256,uint8)",
    "ExecutorDrained(address indexed)",
    "ExecutorRevived(address indexed)",
    "ExecutorDeregistered(address indexed)",
  ],
  Jobs: [
    "JobCreated(uint256 indexed,uint8 indexed,address indexed,bytes32,bytes,uint256,address[])",
    "JobResponded(uint256 indexed,address indexed,bytes,uint256,uint8,uint8)",
    "SlashedOnExecutionTimeout(uint256 indexed,address indexed)",
    "JobResultCallbackCalled(uint256 indexed,bool)",
    "JobFailureCallbackCalled(uint256 indexed,bool)",
  ],
  DevToken: ["Transfer(address indexed,address indexed,uint256)", "Approval(address indexed,address indexed,uint256)"],
  DevAttestationVerifier: [],
};
// OpenZeppelin 5's, raised by contracts/lib/Sig.sol
const ECDSA_ERRORS = ["ECDSAInvalidSignature()", "ECDSAInvalidSignatureLength(uint256)", "ECDSAInvalidSignatureS(bytes32)"];
const ERRORS = {
  UserCode: [],
  Executors: [
    "ExecutorsSignatureTooOld()",
    "ExecutorsInvalidSigner()",
    "ExecutorsExecutorAlreadyExists()",
    "ExecutorsAlreadyDraining()",
    "ExecutorsAlreadyRevived()",
    "ExecutorsNotDraining()",
    "ExecutorsHasPendingJobs()",
    "ExecutorsInvalidOwner()",
    "ExecutorsUnsupportedEnv()",
    "AttestationAutherPubkeyLengthInvalid()",
    "AttestationAutherPCRsInvalid()",
    "AttestationAutherImageNotWhitelisted()",
    "AttestationAutherAttestationTooOld()",
    "AttestationAutherKeyNotVerified()",
    ...ECDSA_ERRORS,
  ],
  Jobs: [
    "JobsUnavailableResources()",
    "JobsExecutionTimeOver()",
    "JobsSignatureTooOld()",
    "JobsNotSelectedExecutor()",
    "JobsExecutorAlreadySubmittedOutput()",
    "JobsInvalidJob()",
    "JobsDeadlineNotOver()",
    ...ECDSA_ERRORS,
  ],
  DevToken: [
    "ERC20InsufficientBalance(address,uint256,uint256)",
    "ERC20InsufficientAllowance(address,uint256,uint256)",
    "ERC20InvalidReceiver(address)",
  ],
  DevAttestationVerifier: [],
};

// ---------------------------------------------------------------- TEE generation expectations
// Published values (protocol-tee facts), checked against the compiled ABI.
const TEE_SELECTORS = {
  "tee/TeeManager": {
    "registerTeeNode(bytes,(bytes,bytes,bytes,bytes,uint256),uint256,uint256,uint8,uint256,bytes,uint256)": "ade8dec6",
    "drainTeeNode(address)": "99705bb3",
    "reviveTeeNode(address)": "cdc400e6",
    "deregisterTeeNode(address)": "ef8e5974",
    "addTeeNodeStake(address,uint256)": "f1660440",
    "removeTeeNodeStake(address,uint256)": "5067e037",
    "teeNodes(address)": "1f23663b",
    "getTeeNodeOwner(address)": "54e0ba1f",
    "getTeeNodesStake(address[])": "0143f54c",
    "getDrainingStatus(address)": "0990513f",
    "allowOnlyVerified(address)": "a0ac45d5",
    "setExecutors(address)": "01f889bd",
    "setSecretStore(address)": "882b6bfc",
    "whitelistEnclaveImage(bytes,bytes,bytes)": "69815e57",
  },
  "tee/Executors": { "executors(address)": "9ac2a011" },
  "tee/SecretManager": {
    "createSecret(uint8,uint256,uint256,uint256,address[])": "2c9475f3",
    "updateSecretEndTimestamp(uint256,uint256,uint256)": "684112d1",
    "terminateSecret(uint256)": "ab47574c",
    "removeSecret(uint256)": "69ac2a10",
    "setSecretAllowedAddresses(uint256,address[])": "1ffed239",
    "acknowledgeStore(uint256,uint256,bytes)": "7f4e398c",
    "markStoreAlive(uint256,bytes)": "76c32e5e",
    "acknowledgeStoreFailed(uint256)": "2708e35c",
    "markStoreDead(address)": "e9d5100b",
    "verifyUserAndGetSelectedStores(uint256,address)": "2bf3b1bf",
    "userStorage(uint256)": "d72bcdb9",
    "getSelectedEnclaves(uint256)": "af757523",
  },
  "tee/Jobs": {
    "createJob(uint8,uint256,bytes32,bytes,uint256)": "bff97e1e",
    "submitOutput(bytes,uint256,bytes,uint256,uint8,uint256)": "4af50fc8",
    "slashOnExecutionTimeout(uint256)": "95e11ef7",
    "setTeeManager(address)": "32a032ee",
    "setSecretManager(address)": "3dd0b808",
    "addGlobalEnv(uint8,uint256,uint256)": "b6fc157b",
  },
};
const TEE_TOPICS = {
  "TeeNodeRegistered(address,address,uint256,uint256,uint8)": "c73089f7e27facac9ebdfad254feb88086ca9910691d1097c04a5bdf6a5a9e88",
  "TeeNodeDrained(address)": "bf5bb05c53874380c84b8702a87b2a77e4fc66ed212ce728d67cb5f8c12d35d3",
  "TeeNodeRevived(address)": "249b1c111b5b2513c053727226b91de6987b163e34aceeecf6f52410b6cd5c12",
  "TeeNodeDeregistered(address)": "20060fd0615e1f06ea24fb3d734b0059ee36382b5b37ab9283f5e5da1c5ebb0b",
  "TeeNodeStakeAdded(address,uint256)": "6842842fc7fa6f49f1bb7127153d5c81512143db628ed1cd2201fafe62586ecc",
  "TeeNodeStakeRemoved(address,uint256)": "1bcba0598ee338bf79a3c64809580626c86216de8160f37458ea453ced28e367",
  "EnclaveKeyVerified(address,bytes32,bytes)": "bb4d6428d53ea924d94be0488473deb5c0a70c979f8477d21911cb5bee4037fd",
  "JobCreated(uint256,uint8,address,uint256,bytes32,bytes,uint256,address[])": "a42cdb4bcc2307f56c450d6fabb23ff13c3b8feed04146b263e284cf2a6a77da",
  "JobResponded(uint256,address,bytes,uint256,uint8,uint8)": "44e2fe4ddd3ee1cc7d02ec47111be654474a6fc73411e678e3152b806bfc0233",
  "SlashedOnExecutionTimeout(uint256,address)": "5b7be43a9005feced634aa3c4ee6edf6d75149d297a3349f0e066743f4e440e7",
  "JobResultCallbackCalled(uint256,bool)": "aee8d436b2bc14f530f18551f19606d50e469aeee7e89fb6c9da76e52a912260",
  "JobFailureCallbackCalled(uint256,bool)": "71c7c2b1c67dc01dd88d0c2f81ed6b67d975782f96e0e7eac5facfba01165ffe",
  "GlobalEnvAdded(uint8,uint256,uint256)": "d68a191ea657a3f76161f0c27ebddb5a0cfbe3fe7c6e98e886caaf2dfaaf0443",
  "SecretCreated(uint256,address,uint256,uint256,uint256,address[])": "1e80e4463811abfeb72ce5248f4f3ea586394f1eb90a66751e6dc7636683772c",
  "SecretStoreAcknowledgementSuccess(uint256,address)": "3b2ddadbabc026d8d411df7497755837eceda0118a4962c20f4bf085d621976c",
  "SecretStoreAcknowledgementFailed(uint256)": "d8909f3ca91e2c2749ba87ec3a205b325b9fd35f598358050001583a48f98b4b",
  "SecretStoreReplaced(uint256,address,address,bool)": "4c532d5a37b7f50b687f4ac71fe7396280a1b60c6e6894b50eaeb2686c88bf82",
  "SecretStoreAlive(address)": "f45513be5b69b86c21a08e2e97a1dda87a78627c07ea36447f9c9dd66fae1ae5",
  "SecretReplicationReduced(uint256,uint256)": "702f3e8f467aa82b57142274ee71862e4716c50a2d8ccfd606f6518bae35ff38",
  "SecretEndTimestampUpdated(uint256,uint256)": "8ae4c71b2231f92450d095a7871abddb3d8290c44afa6f4912cb8ca0bb6b1253",
  "SecretTerminated(uint256,uint256)": "e838add4d48312777505369bfe4c7eb0df2871648703fe53cb43cddc7a8ae8f3",
  "SecretRemoved(uint256)": "6b3b77613c262c77bf1c19d29afe642c7140c290a627b470247cd8d116599932",
};
const TEE_ERROR_SELECTORS = {
  "TeeManagerZeroAddressStakingToken()": "e25b2315", "TeeManagerZeroMinStakeAmount()": "6c44297a",
  "TeeManagerInvalidSlashParams()": "32aef9cb", "TeeManagerZeroAddressAdmin()": "86d6b7b9",
  "TeeManagerSignatureTooOld()": "28d2524a", "TeeManagerInvalidSigner()": "7f5872c1",
  "TeeManagerEnclaveAlreadyExists()": "fb243d60", "TeeManagerEnclaveAlreadyDraining()": "fca3fe96",
  "TeeManagerEnclaveAlreadyRevived()": "20644fc5", "TeeManagerEnclaveNotDraining()": "c903d086",
  "TeeManagerInvalidEnclaveOwner()": "2907d0c8", "TeeManagerInvalidExecutors()": "712a8004",
  "TeeManagerInvalidSecretStoreManager()": "cd70395e", "TeeManagerInvalidCaller()": "3389ebec",
  "ExecutorsZeroAddressTeeManager()": "bbb96b21", "ExecutorsZeroAddressAdmin()": "375cd0e1",
  "ExecutorsGlobalEnvAlreadySupported()": "cac34077", "ExecutorsGlobalEnvAlreadyUnsupported()": "71ba4957",
  "ExecutorsHasPendingJobs()": "42d22f0a", "ExecutorsNotTeeManager()": "54fabe50",
  "ExecutorsUnsupportedEnv()": "dc1267b8", "ExecutorsUnavailableResources()": "56daaee3",
  "JobsSignatureTooOld()": "f1f7af8b", "JobsExecutionTimeOver()": "a7bef27a", "JobsNotSelectedExecutor()": "8cac78af",
  "JobsExecutorAlreadySubmittedOutput()": "830ac736", "JobsUnavailableResources()": "9b365462",
  "JobsInvalidJob()": "f4b4b6c1", "JobsDeadlineNotOver()": "ac2f071b", "JobsZeroAddressStakingToken()": "e9cee9ac",
  "JobsZeroAddressUsdcToken()": "f4d73827", "JobsZeroAddressAdmin()": "cdbc3efc",
  "JobsGlobalEnvAlreadySupported()": "99d574f6", "JobsGlobalEnvAlreadyUnsupported()": "e1718bfe",
  "SecretStoreZeroAddressTeeManager()": "9dcbeee3", "SecretStoreZeroAddressAdmin()": "673dea10",
  "SecretStoreGlobalEnvAlreadySupported()": "07054f3a", "SecretStoreGlobalEnvAlreadyUnsupported()": "4396c0ad",
  "SecretStoreHasOccupiedStorage()": "21c8e7e8", "SecretStoreNotTeeManager()": "b34ae397",
  "SecretStoreNotSecretManager()": "da16b466", "SecretStoreUnsupportedEnv()": "91d81b75",
  "SecretManagerZeroAddressUsdcToken()": "18a3ac8d", "SecretManagerZeroAddressAdmin()": "73a9c011",
  "SecretManagerSignatureTooOld()": "6983e6f6", "SecretManagerCallerIsNotSecretStore()": "d0837881",
  "SecretManagerInsufficientUsdcDeposit()": "fa5d8986", "SecretManagerInvalidSizeLimit()": "fa9e77f3",
  "SecretManagerInvalidEndTimestamp()": "c22a9e61", "SecretManagerUnavailableResources()": "23eed5ff",
  "SecretManagerAcknowledgementTimeOver()": "74886800", "SecretManagerAcknowledgementTimeoutPending(address)": "15307fd5",
  "SecretManagerAcknowledgedAlready()": "ded9edfe", "SecretManagerUnacknowledged()": "760a5351",
  "SecretManagerNodeIsDraining()": "cc5c6b2c", "SecretManagerEnclaveNotFound()": "43f546ab",
  "SecretManagerStoreIsAlive()": "8ecd5e7b", "SecretManagerInvalidSecretOwner()": "a4014c20",
  "SecretManagerAlreadyTerminated()": "8db5a2ea", "SecretManagerCantAckWhileDraining()": "f38f8382",
  "SecretManagerTerminationPending()": "95c51ce4", "SecretManagerAlreadyAcknowledged()": "7f20147e",
  "SecretManagerUserNotAllowed()": "65f1f217", "SecretManagerInvalidSecret()": "d8103e2a",
  "SecretManagerStoreNotDraining()": "79a98e54",
  "AttestationAutherPubkeyLengthInvalid()": "bd9c80c1", "AttestationAutherPCRsInvalid()": "84c61bb6",
  "AttestationAutherImageNotWhitelisted()": "38c4ac16", "AttestationAutherKeyNotVerified()": "3dd8ca95",
  "AttestationAutherAttestationTooOld()": "19605e0a",
};
// EIP-712: the typehash text each contract must carry, with its published hash.
const TEE_TYPEHASHES = {
  "tee/TeeManager": {
    "Register(address owner,uint256 jobCapacity,uint256 storageCapacity,uint8 env,uint256 signTimestamp)":
      "a8046062563c5a63df5fe0e4f3d02bd9b70ec2595c86c1c3b7d6daef53037364",
    "marlin.oyster.TeeManager": null,
  },
  "tee/SecretManager": {
    "Acknowledge(uint256 secretId,uint256 signTimestamp)": "cb169c40d7f9e70620f294e55bafcfa723079c0706ef5b333cb436f500cef021",
    "Alive(uint256 signTimestamp)": "dae796726b27cd7dda3bfd74f9278f4b47f5d287726c2decbea8e620739c37ef",
    "marlin.oyster.SecretManager": null,
  },
  "tee/Jobs": {
    "SubmitOutput(uint256 jobId,bytes output,uint256 totalTime,uint8 errorCode,uint256 signTimestamp)":
      "42945626249c0945b404564212f1ba09d966575b80478b5e114d067e3ca59bf6",
    "marlin.oyster.Jobs": null,
  },
};
// Domain separators of EIP712Domain(string name,string version), no chainId/verifyingContract.
const TEE_DOMAINS = {
  "marlin.oyster.TeeManager": "d9f4a04434fe1f0e5929538459a90eed34fea911ab3cb76ee52f17cc7f9a76c6",
  "marlin.oyster.SecretManager": "8b6707602470fff1b4f81c8aec7c4a25200031d59c286fb896d97e9fd807e421",
  "marlin.oyster.Jobs": "92348788277b460cc420185f9a17ff6b57b89f1c70d19a46fce67bb5b5319731",
};
const TEE_FUNCTIONS = {
  "tee/TeeManager": [...Object.keys(TEE_SELECTORS["tee/TeeManager"]), "revokeEnclaveImage(bytes32)",
    "ATTESTATION_MAX_AGE()", "MIN_STAKE_AMOUNT()", "STAKING_TOKEN()"],
  "tee/Executors": ["executors(address)", "setJobs(address)"],
  "tee/SecretStore": ["setJobs(address)", "setSecretManager(address)"],
  "tee/SecretManager": [...Object.keys(TEE_SELECTORS["tee/SecretManager"]), "GLOBAL_MAX_SECRET_SIZE()",
    "ACKNOWLEDGEMENT_TIMEOUT()", "MARK_ALIVE_TIMEOUT()", "USDC_TOKEN()", "SECRET_STORE_FEE_RATE()",
    "NO_OF_NODES_TO_SELECT()"],
  "tee/Jobs": [...Object.keys(TEE_SELECTORS["tee/Jobs"]), "getSelectedExecutors(uint256)",
    "setExecutors(address)", "setSecretStore(address)", "EXECUTION_BUFFER_TIME()", "SIGN_MAX_AGE()",
    "NO_OF_NODES_TO_SELECT()", "USDC_TOKEN()", "STAKING_TOKEN()", "executionEnv(uint8)"],
};
const TEE_OUTPUTS = {
  "tee/TeeManager": {
    "teeNodes(address)": ["uint256", "address", "uint8", "bool"],
    "getTeeNodeOwner(address)": ["address"],
    "getDrainingStatus(address)": ["bool"],
  },
  "tee/Executors": { "executors(address)": ["uint256", "uint256", "uint256"] },
  "tee/SecretManager": {
    "verifyUserAndGetSelectedStores(uint256,address)": ["address[]"],
    "GLOBAL_MAX_SECRET_SIZE()": ["uint256"],
    "getSelectedEnclaves(uint256)": ["(address,bool,uint256,uint256)[]"],
  },
  "tee/Jobs": {
    "createJob(uint8,uint256,bytes32,bytes,uint256)": ["uint256"],
    "getSelectedExecutors(uint256)": ["address[]"],
  },
};
const TEE_EVENTS = {
  "tee/TeeManager": [
    "TeeNodeRegistered(address indexed,address indexed,uint256,uint256,uint8)",
    "TeeNodeDrained(address indexed)", "TeeNodeRevived(address indexed)", "TeeNodeDeregistered(address indexed)",
    "TeeNodeStakeAdded(address indexed,uint256)", "TeeNodeStakeRemoved(address indexed,uint256)",
    "EnclaveKeyVerified(address indexed,bytes32 indexed,bytes)",
  ],
  "tee/Executors": [],
  "tee/SecretStore": [],
  "tee/SecretManager": [
    "SecretCreated(uint256 indexed,address indexed,uint256,uint256,uint256,address[])",
    "SecretStoreAcknowledgementSuccess(uint256 indexed,address indexed)",
    "SecretStoreAcknowledgementFailed(uint256 indexed)",
    "SecretStoreReplaced(uint256 indexed,address indexed,address indexed,bool)",
    "SecretStoreAlive(address indexed)",
    "SecretReplicationReduced(uint256 indexed,uint256)",
    "SecretEndTimestampUpdated(uint256 indexed,uint256)",
    "SecretTerminated(uint256 indexed,uint256)",
    "SecretRemoved(uint256 indexed)",
  ],
  "tee/Jobs": [
    "JobCreated(uint256 indexed,uint8 indexed,address indexed,uint256,bytes32,bytes,uint256,address[])",
    "JobResponded(uint256 indexed,address indexed,bytes,uint256,uint8,uint8)",
    "SlashedOnExecutionTimeout(uint256 indexed,address indexed)",
    "JobResultCallbackCalled(uint256 indexed,bool)",
    "JobFailureCallbackCalled(uint256 indexed,bool)",
    "GlobalEnvAdded(uint8 indexed,uint256,uint256)",
  ],
};
const errorsWithPrefix = (...prefixes) =>
  Object.keys(TEE_ERROR_SELECTORS).filter((e) => prefixes.some((p) => e.startsWith(p)));
const TEE_ERRORS = {
  "tee/TeeManager": [...errorsWithPrefix("TeeManager", "AttestationAuther"), ...ECDSA_ERRORS],
  "tee/Executors": errorsWithPrefix("Executors"),
  "tee/SecretStore": errorsWithPrefix("SecretStore"),
  "tee/SecretManager": [...errorsWithPrefix("SecretManager"), ...ECDSA_ERRORS],
  "tee/Jobs": [...errorsWithPrefix("Jobs"), ...ECDSA_ERRORS],
};
for (const name of TEE_CONTRACTS) {
  const key = `tee/${name}`;
  SELECTORS[key] = TEE_SELECTORS[key] || {};
  FUNCTIONS[key] = TEE_FUNCTIONS[key];
  EVENTS[key] = TEE_EVENTS[key];
  ERRORS[key] = TEE_ERRORS[key];
}

// ---------------------------------------------------------------- compile
function listSol(dir) {
  const out = [];
  for (const ent of readdirSync(dir, { withFileTypes: true }).sort((a, b) => (a.name < b.name ? -1 : 1))) {
    const p = join(dir, ent.name);
    if (ent.isDirectory()) {
      if (ent.name !== "artifacts") out.push(...listSol(p));
    } else if (ent.name.endsWith(".sol")) out.push(p);
  }
  return out;
}

if (solc.version().split("+")[0] !== EXPECTED_SOLC) {
  fail(`expected solc ${EXPECTED_SOLC}, got ${solc.version()}; run: bash tools/install.sh`);
}

const sources = {};
for (const file of listSol(contractsDir)) {
  sources[relative(root, file).split(sep).join("/")] = { content: readFileSync(file, "utf8") };
}
const ALL = [...CONTRACTS, ...TEE_CONTRACTS.map((n) => `tee/${n}`)];
for (const key of ALL) {
  if (!sources[`contracts/${key}.sol`]) fail(`missing contracts/${key}.sol`);
}

const input = {
  language: "Solidity",
  sources,
  settings: {
    optimizer: { enabled: true, runs: 200 },
    evmVersion: "cancun",
    outputSelection: { "*": { "*": ["abi", "evm.bytecode.object", "evm.methodIdentifiers"] } },
  },
};

const output = JSON.parse(solc.compile(JSON.stringify(input)));
const errors = (output.errors || []).filter((e) => e.severity === "error");
for (const e of output.errors || []) console.error(e.formattedMessage || e.message);
if (errors.length) fail(`solc reported ${errors.length} error(s)`);

// ---------------------------------------------------------------- protocol checks
const canonType = (p) =>
  p.type.startsWith("tuple") ? `(${p.components.map(canonType).join(",")})${p.type.slice(5)}` : p.type;
const sigOf = (item, withIndexed = false) =>
  `${item.name}(${item.inputs.map((p) => (withIndexed && p.indexed ? `${canonType(p)} indexed` : canonType(p))).join(",")})`;

const problems = [];
const artifacts = {};
// The published hashes themselves (a typo in a table above must not pass unnoticed).
const hex = (text) => keccak256(text);
for (const [sig, sel] of Object.entries(TEE_ERROR_SELECTORS)) {
  if (hex(sig).slice(0, 8) !== sel) problems.push(`error ${sig}: keccak gives 0x${hex(sig).slice(0, 8)}, table says 0x${sel}`);
}
for (const [sig, topic] of Object.entries(TEE_TOPICS)) {
  if (hex(sig) !== topic) problems.push(`event ${sig}: keccak gives 0x${hex(sig)}, table says 0x${topic}`);
}
const DOMAIN_TYPEHASH = keccak256.array("EIP712Domain(string name,string version)");
for (const [name, separator] of Object.entries(TEE_DOMAINS)) {
  const got = keccak256([...DOMAIN_TYPEHASH, ...keccak256.array(name), ...keccak256.array("1")]);
  if (got !== separator) problems.push(`domain ${name}: separator 0x${got}, expected 0x${separator}`);
}
for (const [key, texts] of Object.entries(TEE_TYPEHASHES)) {
  const source = sources[`contracts/${key}.sol`].content;
  for (const [text, typehash] of Object.entries(texts)) {
    if (!source.includes(`"${text}"`)) problems.push(`${key}: does not carry the EIP-712 text "${text}"`);
    if (typehash && hex(text) !== typehash) problems.push(`${text}: typehash 0x${hex(text)}, expected 0x${typehash}`);
  }
}

for (const key of ALL) {
  const name = key.split("/").pop();
  const c = output.contracts?.[`contracts/${key}.sol`]?.[name];
  if (!c) fail(`no output for ${key}`);
  const abi = c.abi;
  const ids = c.evm.methodIdentifiers;

  for (const [sig, sel] of Object.entries(SELECTORS[key] || {})) {
    const got = ids[sig];
    if (got !== sel) problems.push(`${key}.${sig}: selector ${got ?? "missing"}, expected 0x${sel}`);
    else console.error(`ok  ${name}.${sig} = 0x${got}`);
  }
  for (const sig of FUNCTIONS[key]) {
    if (!(sig in ids)) problems.push(`${key}: missing function ${sig}`);
    const outs = (key.startsWith("tee/") ? TEE_OUTPUTS[key] || {} : OUTPUTS)[sig];
    if (outs && sig in ids) {
      const f = abi.find((i) => i.type === "function" && sigOf(i) === sig);
      const got = f.outputs.map(canonType);
      if (got.join(",") !== outs.join(",")) problems.push(`${key}.${sig}: returns (${got}), expected (${outs})`);
    }
  }
  const events = abi.filter((i) => i.type === "event").map((i) => sigOf(i, true)).sort();
  const wantEvents = [...EVENTS[key]].sort();
  if (events.join("|") !== wantEvents.join("|"))
    problems.push(`${key}: events [${events.join(", ")}], expected [${wantEvents.join(", ")}]`);
  const errs = abi.filter((i) => i.type === "error").map((i) => sigOf(i)).sort();
  const wantErrs = [...ERRORS[key]].sort();
  if (errs.join("|") !== wantErrs.join("|"))
    problems.push(`${key}: errors [${errs.join(", ")}], expected [${wantErrs.join(", ")}]`);
  for (const e of abi.filter((i) => i.type === "event")) {
    console.error(`    ${key} event ${sigOf(e)} topic0 0x${keccak256(sigOf(e))}`);
  }

  if (!c.evm.bytecode.object) problems.push(`${key}: empty bytecode`);
  artifacts[key] = { abi, bytecode: `0x${c.evm.bytecode.object}`, contractName: name };
}
if (problems.length) fail(`ABI does not match the protocol:\n  ${problems.join("\n  ")}`);
const outputs = ALL.map((key) => [key, join(artifactsDir, `${key}.json`)]);
for (const name of TEST_CONTRACTS) {
  const c = output.contracts?.[`contracts/test/${name}.sol`]?.[name];
  if (!c || !c.evm.bytecode.object) fail(`no output for contracts/test/${name}.sol`);
  artifacts[name] = { abi: c.abi, bytecode: `0x${c.evm.bytecode.object}`, contractName: name };
  outputs.push([name, join(artifactsDir, "test", `${name}.json`)]);
}

// ---------------------------------------------------------------- write / check
function sortKeys(v) {
  if (Array.isArray(v)) return v.map(sortKeys);
  if (v && typeof v === "object") {
    return Object.fromEntries(Object.keys(v).sort().map((k) => [k, sortKeys(v[k])]));
  }
  return v;
}
const render = (a) => `${JSON.stringify(sortKeys(a), null, 2)}\n`;

if (check) {
  const stale = [];
  for (const [name, path] of outputs) {
    if (!existsSync(path)) stale.push(`${relative(root, path)} is missing`);
    else if (readFileSync(path, "utf8") !== render(artifacts[name]))
      stale.push(`${relative(root, path)} differs from a fresh compile`);
  }
  if (stale.length) {
    fail(`stale artifacts (solc ${solc.version()}):\n  ${stale.join("\n  ")}\nrun: node tools/compile-contracts.mjs`);
  }
  console.error(`compile-contracts: artifacts up to date (solc ${solc.version()})`);
} else {
  for (const [name, path] of outputs) {
    mkdirSync(dirname(path), { recursive: true });
    writeFileSync(path, render(artifacts[name]));
    console.error(`wrote ${relative(root, path)} (${(artifacts[name].bytecode.length - 2) / 2} bytes)`);
  }
}
