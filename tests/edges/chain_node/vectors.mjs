// Call data and storage keys for the weight calls and reads the validator makes, encoded by
// polkadot.js (@polkadot/types, as pinned by this directory's lockfile) from a runtime's
// metadata: an encoder independent of ours. `cargo test --test edges chain_encoding` runs it
// from the chopsticks install and compares with fixtures/chain/spec393_vectors.json, which
// it wrote:
//
//   node vectors.mjs ../shared/chain/metadata/finney-spec393.scale > fixtures/chain/spec393_vectors.json
//
// (run from the directory chopsticks is installed in, so @polkadot/types resolves).

import fs from 'fs';
import { TypeRegistry, Metadata } from '@polkadot/types';
import { expandMetadata } from '@polkadot/types/metadata';
import { compactStripLength } from '@polkadot/util';

const [metadataPath] = process.argv.slice(2);
const registry = new TypeRegistry();
const metadata = new Metadata(registry, new Uint8Array(fs.readFileSync(metadataPath)));
registry.setMetadata(metadata);
const decorated = expandMetadata(registry, metadata);
const tx = decorated.tx;
const query = decorated.query;

const hex = (bytes) => '0x' + Buffer.from(bytes).toString('hex');
// A decorated storage function gives the key with its SCALE length in front: the key is the rest.
const key = (lengthPrefixed) => hex(compactStripLength(lengthPrefixed)[1]);
const commit = Array.from({ length: 40 }, (_, i) => (i * 7 + 3) % 256);
const hash = Array.from({ length: 32 }, (_, i) => (255 - i * 5) % 256);
const account = Array.from({ length: 32 }, (_, i) => (i * 11 + 1) % 256);
const netuid = 9;
const index = (mecid) => mecid * 4096 + netuid;

const calls = [];
for (const mecid of [0, 1, 2]) {
  calls.push({
    name: 'set_mechanism_weights', netuid, mecid,
    uids: [0, 3, 17], weights: [65535, 100, 1], version_key: 3010,
    data: hex(tx.subtensorModule.setMechanismWeights(netuid, mecid, [0, 3, 17], [65535, 100, 1], 3010).toU8a()),
  });
  calls.push({
    name: 'commit_timelocked_mechanism_weights', netuid, mecid,
    commit: hex(commit), reveal_round: 23456789, version: 4,
    data: hex(tx.subtensorModule.commitTimelockedMechanismWeights(netuid, mecid, commit, 23456789, 4).toU8a()),
  });
  calls.push({
    name: 'commit_mechanism_weights', netuid, mecid, hash: hex(hash),
    data: hex(tx.subtensorModule.commitMechanismWeights(netuid, mecid, hash).toU8a()),
  });
  calls.push({
    name: 'reveal_mechanism_weights', netuid, mecid,
    uids: [1, 2], weights: [3, 65535], salt: [7, 8, 9], version_key: 42,
    data: hex(tx.subtensorModule.revealMechanismWeights(netuid, mecid, [1, 2], [3, 65535], [7, 8, 9], 42).toU8a()),
  });
}
const model = 'someone:tiny-llama:1111111111111111111111111111111111111111:abc=:l3';
calls.push({
  name: 'set_commitment', netuid, raw: model,
  data: hex(tx.commitments.setCommitment(netuid, { fields: [{ ['Raw' + model.length]: model }] }).toU8a()),
});

const keys = [];
for (const mecid of [0, 1, 2]) {
  const q = query.subtensorModule;
  keys.push({ entry: 'LastUpdate', mecid, key: key(q.lastUpdate(index(mecid))) });
  keys.push({ entry: 'Weights', mecid, uid: 5, key: key(q.weights(index(mecid), 5)) });
  keys.push({
    entry: 'WeightCommits', mecid, account: hex(account),
    key: key(q.weightCommits(index(mecid), account)),
  });
  keys.push({
    entry: 'TimelockedWeightCommits', mecid, epoch: 1234,
    key: key(q.timelockedWeightCommits(index(mecid), 1234)),
  });
}
keys.push({ entry: 'MechanismCountCurrent', mecid: 0, key: key(query.subtensorModule.mechanismCountCurrent(netuid)) });

console.log(JSON.stringify({
  metadata: metadataPath.split('/').pop(),
  encoder: '@polkadot/types ' + JSON.parse(fs.readFileSync('node_modules/@polkadot/types/package.json')).version,
  netuid,
  calls,
  keys,
}, null, 1));
