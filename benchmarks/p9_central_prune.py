"""P9 central prune: `saveos prune`'s per-repository run (verify -> borg check -> prune ->
re-verify -> compact, with the controller's full-access key) on N repositories of a lab
repository server, against the raw baseline an operator's cron would run over the same SSH
(`borg check && borg prune && borg compact`), in the same run, on copies of the same repositories.

repo1 is set up by the saveos_repo_server role (deploy.yml's first play, which also makes the
controller's full-access key). N clients are registered with the server's helper (append-only
lines, as the role gives hosts); each makes `--archives` backups of a small tree. Then, per
repository, a hard-link copy is made on the server for the baseline, and both runs keep the
last 2 archives. Wall time in total and per repository, and the ratio SaveOS / raw.

    python benchmarks/p9_central_prune.py [--repos 20] [--archives 4] [--net 127.0.15]
"""

from __future__ import annotations

import argparse
import os
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import REPO, finish  # noqa: E402
from p5_repo_server_backup import HELPER, repo_server  # noqa: E402

sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "agent"))
from saveos_cli.inventory_hosts import Host  # noqa: E402
from saveos_cli.retention import borg, maintain  # noqa: E402
from saveos_cli.retention.servers import SshFiles  # noqa: E402

ROOT = Path(os.environ.get("SAVEOS_BENCH_P9_DIR", "/var/tmp/saveos-bench-p9"))
os.environ.setdefault("SAVEOS_DATA_DIR", str(ROOT / "data"))
# P5's repo_server() writes its known_hosts into its own ROOT
P5_ROOT = Path(os.environ.get("SAVEOS_BENCH_P5_DIR", "/var/tmp/saveos-bench-p5"))
RETENTION = {"keep_last": 2}
SERVER_ROOT = "/srv/saveos-repos"


def sh(argv, **kw) -> subprocess.CompletedProcess:
    done = subprocess.run(argv, capture_output=True, text=True, **kw)
    if done.returncode not in (0, 1):
        raise RuntimeError(f"{argv[:3]} rc={done.returncode}: {done.stderr[-1500:]}")
    return done


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repos", type=int, default=20)
    parser.add_argument("--archives", type=int, default=4)
    parser.add_argument("--net", default=os.environ.get("SAVEOS_TEST_LAB_NET", "127.0.0"))
    parser.add_argument("--port", type=int, default=22972)
    args = parser.parse_args()
    ROOT.mkdir(parents=True, exist_ok=True)
    P5_ROOT.mkdir(parents=True, exist_ok=True)
    passfile = ROOT / "passphrase"
    passfile.write_text("bench-p9-not-a-real-secret\n")
    passfile.chmod(0o600)
    lab = repo_server(args.net, args.port, Path(tempfile.mkdtemp(prefix="saveos-bench-p9-lab-")))
    try:
        server = next(h for h in lab.hosts() if h.name == "repo1")
        known = P5_ROOT / "known_hosts"
        base_ssh = ["-o", f"UserKnownHostsFile={known}", "-o", "StrictHostKeyChecking=yes"]
        admin_key = ROOT / "data" / "repo-admin" / "id_ed25519"
        admin_rsh = shlex.join(["ssh", "-i", str(admin_key), "-o", "IdentitiesOnly=yes",
                                "-o", "BatchMode=yes", *base_ssh])  # fmt: skip
        prefix = f"ssh://saveos-repo@{server.address}:{server.port}"
        root_host = Host(
            name="repo1", address=server.address, port=server.port, key_file=str(lab.key_path),
            ssh_args=["-o", f"UserKnownHostsFile={lab.known_hosts_path}"],
        )  # fmt: skip
        src = ROOT / "src"
        src.mkdir(exist_ok=True)
        names = [f"bench{i:02d}" for i in range(args.repos)]
        env = {k: v for k, v in os.environ.items() if not k.startswith("BORG_")}
        env.update(BORG_PASSCOMMAND=f"cat {passfile}", BORG_EXIT_CODES="legacy")
        t0 = time.monotonic()
        for name in names:
            # one key per client: sshd picks the first authorized_keys line of a key
            client_key = ROOT / f"id_{name}"
            if not client_key.exists():
                sh(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(client_key)])
            public = client_key.with_suffix(".pub").read_text().strip()
            rsh = shlex.join(["ssh", "-i", str(client_key), "-o", "IdentitiesOnly=yes",
                              "-o", "BatchMode=yes", *base_ssh])  # fmt: skip
            for command in (f"{HELPER} purge {name}", f"{HELPER} client {name} --key '{public}'"):
                done = lab.ssh("repo1", command)
                if done.returncode != 0:
                    raise RuntimeError(f"repo1: {command}: {done.stdout}{done.stderr}")
            url = f"{prefix}{SERVER_ROOT}/{name}"
            client_env = dict(env, BORG_RSH=rsh, BORG_BASE_DIR=str(ROOT / "clients" / name))
            sh(["borg", "init", "-e", "repokey-blake2", url], env=client_env)
            for n in range(args.archives):
                (src / "data.bin").write_bytes(os.urandom(200_000))
                (src / f"n{n}").write_text(f"{name} {n}\n")
                sh(["borg", "create", f"{url}::{name}-{n}", str(src)], env=client_env)
            # the baseline's own copy of the same repository (hard links, owned alike)
            copy = f"{SERVER_ROOT}/{name}-raw"
            lab.ssh(
                "repo1",
                f"rm -rf {copy} && cp -al {SERVER_ROOT}/{name} {copy} && "
                f"chown -R --reference={SERVER_ROOT}/{name} {copy}",
            )
        print(f"{args.repos} repositories x {args.archives} archives made in "
              f"{time.monotonic() - t0:.1f}s")  # fmt: skip

        raw_env = dict(env, BORG_RSH=admin_rsh, BORG_RELOCATED_REPO_ACCESS_IS_OK="yes")
        raw_times = []
        t_raw = time.monotonic()
        for name in names:
            url = f"{prefix}{SERVER_ROOT}/{name}-raw"
            e = dict(raw_env, BORG_BASE_DIR=str(ROOT / "raw" / name))
            t = time.monotonic()
            sh(["borg", "check", url], env=e)
            sh(["borg", "prune", "--keep-last", "2", url], env=e)
            sh(["borg", "compact", url], env=e)
            raw_times.append(time.monotonic() - t)
        raw_wall = time.monotonic() - t_raw

        ours, results = [], []
        t_ours = time.monotonic()
        for name in names:
            access = borg.BorgAccess(
                host=name, url=f"{prefix}{SERVER_ROOT}/{name}", rsh=admin_rsh,
                passphrase_file=passfile, base_dir=ROOT / "ours" / name,
            )  # fmt: skip
            repo = maintain.Repository(
                access=access, path=f"{SERVER_ROOT}/{name}", files=SshFiles(root_host),
                work_root=f"{SERVER_ROOT}/.saveos-retention", url_of=lambda p: prefix + p,
                retention=RETENTION,
            )  # fmt: skip
            t = time.monotonic()
            result = maintain.maintain(repo, None, {})
            ours.append(time.monotonic() - t)
            results.append(result)
            if result["result"] != "ok" or len(result["pruned"]) != args.archives - 2:
                raise RuntimeError(f"{name}: {result}")
        ours_wall = time.monotonic() - t_ours
    finally:
        lab.down()
    ratio = ours_wall / raw_wall
    line = (
        f"P9 central prune + compact of {args.repos} lab repositories ({args.archives} archives "
        f"each, keep_last 2): SaveOS {ours_wall:.1f}s wall ({ours_wall / args.repos:.2f}s per "
        f"repository), raw borg check+prune+compact {raw_wall:.1f}s "
        f"({raw_wall / args.repos:.2f}s per repository): {ratio:.2f}x raw"
    )
    print(line)
    return finish(
        "p9_central_prune",
        {
            "repos": args.repos, "archives": args.archives, "saveos_wall_s": ours_wall,
            "raw_wall_s": raw_wall, "saveos_per_repo_s": ours, "raw_per_repo_s": raw_times,
            "ratio": ratio, "line": line,
        },
    )  # fmt: skip


if __name__ == "__main__":
    sys.exit(main())
