"""Runs on a lab host (python3 stdlib): `seed DIR` builds a varied tree, `manifest DIR` prints
a JSON manifest of everything below DIR (type, mode, owner, sha256 or link target)."""

import hashlib
import json
import os
import random
import stat
import sys


def seed(root):
    rng = random.Random(root)
    os.makedirs(root, exist_ok=True)
    sizes = [0, 1, 100, 4095, 4096, 65537, 1 << 20, 3 << 20]
    names = ["plain", "with space", "ünïcødé-Ωμέγα", "файл", "文件-📦", "quote'\"mark", "#hash&amp"]
    for depth in range(6):
        d = os.path.join(root, *[f"level{i}" for i in range(depth)])
        os.makedirs(d, exist_ok=True)
        for i, name in enumerate(names):
            size = sizes[(depth + i) % len(sizes)]
            with open(os.path.join(d, f"{name}-{i}.bin"), "wb") as f:
                f.write(rng.randbytes(size))
    for i in range(200):  # many small files
        sub = os.path.join(root, "many", f"d{i % 10}")
        os.makedirs(sub, exist_ok=True)
        with open(os.path.join(sub, f"f{i}.txt"), "w") as f:
            f.write(f"line {i}\n" * (i % 7))
    open(os.path.join(root, "empty-0-bytes"), "w").close()
    with open(os.path.join(root, "secret-0600"), "w") as f:
        f.write("only root\n")
    os.chmod(os.path.join(root, "secret-0600"), 0o600)
    with open(os.path.join(root, "script-0755.sh"), "w") as f:
        f.write("#!/bin/sh\necho hi\n")
    os.chmod(os.path.join(root, "script-0755.sh"), 0o755)
    os.chmod(os.path.join(root, "level0"), 0o750)
    os.makedirs(os.path.join(root, "empty-dir"), exist_ok=True)
    os.symlink("plain-0.bin", os.path.join(root, "link-to-file"))
    os.symlink("level0/level1", os.path.join(root, "link-to-dir"))
    os.symlink("/nonexistent/target", os.path.join(root, "link-dangling"))
    os.symlink("ünïcødé-Ωμέγα-2.bin", os.path.join(root, "link-ünïcødé"))


def manifest(root):
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in sorted(dirnames + filenames):
            path = os.path.join(dirpath, name)
            st = os.lstat(path)
            rel = os.path.relpath(path, root)
            entry = {"mode": oct(stat.S_IMODE(st.st_mode)), "uid": st.st_uid, "gid": st.st_gid}
            if stat.S_ISLNK(st.st_mode):
                entry.update(type="link", target=os.readlink(path))
            elif stat.S_ISDIR(st.st_mode):
                entry.update(type="dir")
            else:
                with open(path, "rb") as f:
                    digest = hashlib.sha256(f.read()).hexdigest()
                entry.update(type="file", size=st.st_size, sha256=digest)
            out[rel] = entry
    json.dump(out, sys.stdout, sort_keys=True)


if __name__ == "__main__":
    {"seed": seed, "manifest": manifest}[sys.argv[1]](sys.argv[2])
