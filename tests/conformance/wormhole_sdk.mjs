// Bridge between the Python conformance tests and Wormhole's TypeScript SDK
// (@wormhole-foundation/sdk-definitions). One invocation handles a whole batch.
//
//   node wormhole_sdk.mjs read IN.json OUT.json
//     IN:  {"vaas": ["0x..", ...]}
//     OUT: [{guardian_set_index, signatures: [{index, r, s, v}], timestamp, nonce, emitter_chain,
//            emitter_address, sequence, consistency_level, payload, hash, digest, reserialized}]
//          (each VAA deserialized by the SDK, then serialized again)
//   node wormhole_sdk.mjs sign IN.json OUT.json
//     IN:  {"guardian_sets": [{"index": N, "keys": ["hex", ...]}, ...],
//           "messages": [{timestamp, nonce, emitter_chain, emitter_address, sequence,
//                         consistency_level, payload, guardian_set, signers}]}
//     OUT: ["0x..", ...]  (VAAs built with createVAA and signed with mocks.MockGuardians by the
//          first `signers` guardians of guardian_sets[guardian_set])
//
// The SDK is found under tools/npm/node_modules (or $WORMHOLE_NODE_MODULES).
import { readFileSync, writeFileSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const nodeModules =
  process.env.WORMHOLE_NODE_MODULES ?? resolve(here, "..", "..", "tools", "npm", "node_modules");
const load = (rel) => import(pathToFileURL(join(nodeModules, rel)).href);

const sdk = await load("@wormhole-foundation/sdk-definitions/dist/esm/index.js");
const testing = await load("@wormhole-foundation/sdk-definitions/dist/esm/testing/index.js");
const base = await load("@wormhole-foundation/sdk-base/dist/esm/index.js");

const toHex = (bytes) => "0x" + Buffer.from(bytes).toString("hex");
const fromHex = (text) => new Uint8Array(Buffer.from(text.replace(/^0x/, ""), "hex"));
const word = (n) => "0x" + n.toString(16).padStart(64, "0");

function read(input) {
  return input.vaas.map((hex) => {
    const vaa = sdk.deserialize("Uint8Array", fromHex(hex));
    return {
      guardian_set_index: vaa.guardianSet,
      signatures: vaa.signatures.map((s) => ({
        index: s.guardianIndex,
        r: word(s.signature.r),
        s: word(s.signature.s),
        v: s.signature.v,
      })),
      timestamp: vaa.timestamp,
      nonce: vaa.nonce,
      emitter_chain: base.chainToChainId(vaa.emitterChain),
      emitter_address: toHex(vaa.emitterAddress.toUint8Array()),
      sequence: vaa.sequence.toString(),
      consistency_level: vaa.consistencyLevel,
      payload: toHex(vaa.payload),
      hash: toHex(vaa.hash),
      digest: toHex(sdk.keccak256(vaa.hash)),
      reserialized: toHex(sdk.serialize(vaa)),
    };
  });
}

function sign(input) {
  const sets = input.guardian_sets.map((s) => new testing.mocks.MockGuardians(s.index, s.keys));
  return input.messages.map((m) => {
    const guardians = sets[m.guardian_set];
    const unsigned = sdk.createVAA("Uint8Array", {
      guardianSet: guardians.setIndex,
      signatures: [],
      timestamp: m.timestamp,
      nonce: m.nonce,
      emitterChain: base.toChain(m.emitter_chain),
      emitterAddress: new sdk.UniversalAddress(fromHex(m.emitter_address)),
      sequence: BigInt(m.sequence),
      consistencyLevel: m.consistency_level,
      payload: fromHex(m.payload),
    });
    // MockGuardians numbers signatures by their position among the chosen signers, so only a
    // prefix 0..k-1 of the set gets the right guardian indices.
    const prefix = Array.from({ length: m.signers }, (_, i) => i);
    return toHex(sdk.serialize(guardians.addSignatures(unsigned, prefix)));
  });
}

const [mode, inPath, outPath] = process.argv.slice(2);
const modes = { read, sign };
if (!(mode in modes) || !inPath || !outPath) {
  console.error("usage: node wormhole_sdk.mjs read|sign IN.json OUT.json");
  process.exit(2);
}
writeFileSync(outPath, JSON.stringify(modes[mode](JSON.parse(readFileSync(inPath, "utf8")))));
