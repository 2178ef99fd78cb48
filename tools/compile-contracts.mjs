#!/usr/bin/env node
// Compiles the development contracts in contracts/ with the pinned solc (tools/node_modules/solc,
// solcjs) and writes contracts/artifacts/<Name>.json = {"abi", "bytecode", "contractName"}.
//
//   node tools/compile-contracts.mjs          # (re)write the artifacts
//   node tools/compile-contracts.mjs --check  # compile in memory, fail if an artifact is stale
//
// Both modes also check the ABI against the wire protocol (shared protocol.md): the selectors
// 0x1ae53fea / 0xff7cdaf3 / 0x4af50fc8 / 0x95e11ef7, every protocol function, event and custom
// error, and that no other event or custom error exists. Exits non-zero with a message on any failure.
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
for (const name of CONTRACTS) {
  if (!sources[`contracts/${name}.sol`]) fail(`missing contracts/${name}.sol`);
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
for (const name of CONTRACTS) {
  const c = output.contracts?.[`contracts/${name}.sol`]?.[name];
  if (!c) fail(`no output for ${name}`);
  const abi = c.abi;
  const ids = c.evm.methodIdentifiers;

  for (const [sig, sel] of Object.entries(SELECTORS[name] || {})) {
    const got = ids[sig];
    if (got !== sel) problems.push(`${name}.${sig}: selector ${got ?? "missing"}, expected 0x${sel}`);
    else console.error(`ok  ${name}.${sig} = 0x${got}`);
  }
  for (const sig of FUNCTIONS[name]) {
    if (!(sig in ids)) problems.push(`${name}: missing function ${sig}`);
    const outs = OUTPUTS[sig];
    if (outs && sig in ids) {
      const f = abi.find((i) => i.type === "function" && sigOf(i) === sig);
      const got = f.outputs.map(canonType);
      if (got.join(",") !== outs.join(",")) problems.push(`${name}.${sig}: returns (${got}), expected (${outs})`);
    }
  }
  const events = abi.filter((i) => i.type === "event").map((i) => sigOf(i, true)).sort();
  const wantEvents = [...EVENTS[name]].sort();
  if (events.join("|") !== wantEvents.join("|"))
    problems.push(`${name}: events [${events.join(", ")}], expected [${wantEvents.join(", ")}]`);
  const errs = abi.filter((i) => i.type === "error").map((i) => sigOf(i)).sort();
  const wantErrs = [...ERRORS[name]].sort();
  if (errs.join("|") !== wantErrs.join("|"))
    problems.push(`${name}: errors [${errs.join(", ")}], expected [${wantErrs.join(", ")}]`);
  for (const e of abi.filter((i) => i.type === "event")) {
    console.error(`    ${name} event ${sigOf(e)} topic0 0x${keccak256(sigOf(e))}`);
  }

  if (!c.evm.bytecode.object) problems.push(`${name}: empty bytecode`);
  artifacts[name] = { abi, bytecode: `0x${c.evm.bytecode.object}`, contractName: name };
}
if (problems.length) fail(`ABI does not match the protocol:\n  ${problems.join("\n  ")}`);
const outputs = CONTRACTS.map((name) => [name, join(artifactsDir, `${name}.json`)]);
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
