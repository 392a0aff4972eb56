"""Scratch: a frame store of the synthetic generator's videos (no TFRecords), with the report preset's split."""
import sys, time
from pathlib import Path
from threadpoolctl import threadpool_limits
from fewframes.data.split import write_split
from fewframes.data.store import FrameStoreWriter
from fewframes.data.synth import World

def build(path, videos, classes, seed=0, val=0.1, test=0.3):
    world = World(classes, seed)
    with threadpool_limits(1, "blas"), FrameStoreWriter(path, num_classes=classes) as writer:
        for i in range(videos):
            writer.add_video(world.generate(i).video)
    write_split(path, validation_fraction=val, test_fraction=test)

if __name__ == "__main__":
    t = time.time()
    path, videos, classes = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    seed = int(sys.argv[4]) if len(sys.argv) > 4 else 0
    build(path, videos, classes, seed)
    print("built", path, time.time() - t)
