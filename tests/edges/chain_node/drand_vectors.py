"""What bittensor's SDK computes for a timelocked commit of mechanism weights: the drand
round and the encrypted payload, recorded through the SDK's own extrinsic
(`commit_timelocked_weights_extrinsic`, bittensor 10.2.0 with bittensor-drand 1.3) with the
chain and the signing stubbed, for `cargo test --test edges drand_round`.

Run under libfaketime, so the SDK's clock (Rust's, inside bittensor-drand) reads a moment
whose commit for mechanism 1 of netuid 9 lands on drand quicknet round 123, whose signature
is public (the tests decrypt the SDK's ciphertext with it):

    faketime -f '@2023-08-23 14:13:13' python drand_vectors.py \\
        > fixtures/chain/drand_mechanism_vectors.json
"""

import json
import time
from types import SimpleNamespace

import bittensor.core.extrinsics.weights as weights_extrinsics
from bittensor.core.types import ExtrinsicResponse

HOTKEY = bytes((i * 13 + 5) % 256 for i in range(32))
UIDS = [0, 3, 17]
WEIGHTS = [65535, 100, 1]
VERSION_KEY = 3010
BLOCK, TEMPO, REVEAL_PERIOD, NETUID = 1000, 360, 1, 9

captured = {}


class Module:
    """Stands in for the SDK's call composer: records the call's arguments."""

    def __init__(self, subtensor):
        pass

    def commit_timelocked_mechanism_weights(self, **call):
        captured["call"] = call
        return call


class Chain:
    """Stands in for the node: the block, the subnet's tempo and reveal period."""

    def get_current_block(self):
        return BLOCK

    def get_subnet_hyperparameters(self, netuid, block=None):
        return SimpleNamespace(tempo=TEMPO, commit_reveal_period=REVEAL_PERIOD)

    def sign_and_send_extrinsic(self, **kwargs):
        return ExtrinsicResponse(True, "stubbed")


weights_extrinsics.SubtensorModule = Module
ExtrinsicResponse.unlock_wallet = staticmethod(
    lambda *args, **kwargs: SimpleNamespace(success=True)
)
wallet = SimpleNamespace(hotkey=SimpleNamespace(public_key=HOTKEY, ss58_address=""))

vectors = []
for mechid in (0, 1):
    before = time.time()
    response = weights_extrinsics.commit_timelocked_weights_extrinsic(
        subtensor=Chain(),
        wallet=wallet,
        netuid=NETUID,
        mechid=mechid,
        uids=UIDS,
        weights=WEIGHTS,
        block_time=12.0,
        commit_reveal_version=4,
        version_key=VERSION_KEY,
        mev_protection=False,
        raise_error=True,
    )
    after = time.time()
    call = captured.pop("call")
    vectors.append(
        {
            "netuid": NETUID,
            "mecid": mechid,
            "block": BLOCK,
            "tempo": TEMPO,
            "reveal_period_epochs": REVEAL_PERIOD,
            "block_time_s": 12.0,
            "now_unix_s": [before, after],
            "hotkey": "0x" + HOTKEY.hex(),
            "uids": UIDS,
            "weights": WEIGHTS,
            "version_key": VERSION_KEY,
            "call": {
                "netuid": call["netuid"],
                "mecid": call["mecid"],
                "reveal_round": call["reveal_round"],
                "commit_reveal_version": call["commit_reveal_version"],
                "commit": "0x" + bytes(call["commit"]).hex(),
            },
        }
    )
print(json.dumps({"sdk": "bittensor 10.2.0, bittensor-drand 1.3.0", "commits": vectors}, indent=1))
