"""Entry point for `accelerate launch` in tests: trains on a streamed recipe (a JSON config) and writes the
record ids this process trained on to `IDS.<rank>.json`; with STOP_AT, stops after that step (as an
interrupted run would, its checkpoint saved)."""

import json
import os
import sys
from pathlib import Path

from text4seg.distributed import processes_session
from text4seg.train import config_from_dict, train
from text4seg.train.loop import Loop


def main(config_path: str, ids_path: str, stop_at: int) -> int:
    config = config_from_dict(json.loads(Path(config_path).read_text()))
    seen, original = [], Loop._micro_step

    def spy(self, batch, state):
        seen.extend(batch.get("ids", []) + batch.get("skipped", []))
        return original(self, batch, state)

    Loop._micro_step = spy
    callbacks = [lambda record: record["step"] >= stop_at] if stop_at else []
    with processes_session():
        train(config, callbacks=callbacks)
    Path(f"{ids_path}.{os.environ.get('RANK', '0')}.json").write_text(json.dumps(seen))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2], int(sys.argv[3])))
