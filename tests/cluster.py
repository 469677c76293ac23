"""The emulated cluster of the multi-node tests: scripts/cluster/netns-cluster.sh brings up
nodes node1..nodeN (network + UTS + mount + IPC namespaces on a bridge of their own, a shared
directory, node-local /tmp), and this module drives it from a test: up, commands on a node, the
charlm processes of each node, and the check that `down` left nothing behind.

A Cluster is named uniquely per test run (namespaces, state directory), so that a stale earlier
run or one running at the same time never collides with it."""
import os
import random
import re
import shutil
import signal
import subprocess
import sys

import harness as h

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, "scripts", "cluster", "netns-cluster.sh")


def skip_unless_possible():
    """Exits with SKIP, saying why, where network namespaces cannot be made here."""
    if os.geteuid() != 0:
        print("not root: the emulated nodes are network, UTS and mount namespaces (ip netns)")
        sys.exit(h.SKIP)
    missing = [p for p in ("ip", "unshare", "nsenter") if not shutil.which(p)]
    if missing:
        print(f"no {', '.join(missing)} (iproute2, util-linux): no emulated nodes")
        sys.exit(h.SKIP)
    probe = f"charlm-probe-{os.getpid()}"
    p = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True)
    subprocess.run(["ip", "netns", "del", probe], capture_output=True)
    if p.returncode != 0:
        print(f"cannot create a network namespace here (ip netns add: {p.stderr.strip()})")
        sys.exit(h.SKIP)


class Cluster:
    """N emulated nodes with state in tmp/cluster (its shared/ is the cluster file system)."""

    def __init__(self, tmp, nodes=2):
        self.dir = os.path.join(tmp, "cluster")
        self.shared = os.path.join(self.dir, "shared")
        self.name = f"cm{os.getpid()}x{random.randrange(16 ** 4):04x}"
        self.nodes = [f"node{k}" for k in range(1, nodes + 1)]
        self.env = dict(os.environ, CHARLM_CLUSTER_DIR=self.dir, CHARLM_CLUSTER_NAME=self.name,
                        CHARLM_CLUSTER_NODES=str(nodes))
        # CTest's timeout and Ctrl-C: the finally of the test tears the cluster down
        signal.signal(signal.SIGTERM, lambda *_: h.fail("stopped by SIGTERM"))

    def script(self, *args, timeout=120, check=True):
        p = subprocess.run([SCRIPT] + list(args), capture_output=True, text=True, env=self.env,
                           timeout=timeout, stdin=subprocess.DEVNULL)
        if check and p.returncode != 0:
            sys.stderr.write(p.stdout + p.stderr)
            h.fail(f"netns-cluster.sh {' '.join(args)} exited {p.returncode}")
        return p

    def sweep_stale(self):
        """Tears down the clusters of earlier test runs whose process is gone (a run killed
        with SIGKILL could not tear its own down); their names carry the test's pid."""
        ns = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
        stale = set()
        for line in ns.splitlines():
            m = re.match(r"(cm(\d+)x[0-9a-f]{4})-(node\d+|sw)\b", line)
            if m and not os.path.exists(f"/proc/{m.group(2)}"):
                stale.add(m.group(1))
        for name in sorted(stale):
            subprocess.run([SCRIPT, "down"], capture_output=True, stdin=subprocess.DEVNULL,
                           env=dict(self.env, CHARLM_CLUSTER_NAME=name,
                                    CHARLM_CLUSTER_DIR=os.path.join(self.dir, "stale-" + name)))
            print(f"tore down the stale cluster {name} of an earlier test run")

    def up(self):
        self.sweep_stale()
        print(self.script("up").stdout.strip())
        os.makedirs(self.shared, exist_ok=True)

    def command(self, node, args):
        """argv that runs args on node (a login environment, this working directory)."""
        return [SCRIPT, "exec", node] + list(args)

    # what decides how a rank's sums round (README "Multi-node runs"): a rank without the
    # caller's values would not repeat a single-host run bit for bit
    NUMERICS = ("OPENBLAS_CORETYPE", "CHARLM_KERN")

    def mpirun(self, args, node="node1", numerics=True):
        """argv of Open MPI's mpirun on node over the cluster's TCP network (netns-cluster.sh
        mpirun), with the environment's Open MPI settings passed on and, unless numerics is
        false, its NUMERICS exported to every rank (-x), as a user would. Open MPI puts the first
        ranks on the node that mpirun runs on."""
        export = [a for v in self.NUMERICS if numerics and v in self.env for a in ("-x", v)]
        return ["env", f"CHARLM_CLUSTER_MPIRUN_NODE={node}", SCRIPT, "mpirun"] + export + \
            list(args)

    def popen(self, argv, **kw):
        return h.Background(argv, env=self.env, **kw)

    def run(self, argv, timeout=600):
        return subprocess.run(argv, env=self.env, capture_output=True, text=True,
                              timeout=timeout, stdin=subprocess.DEVNULL)

    def pids(self, node):
        """The pids of the processes inside node's network namespace."""
        p = subprocess.run(["ip", "netns", "pids", f"{self.name}-{node}"], capture_output=True,
                           text=True)
        return [int(x) for x in p.stdout.split()]

    def processes(self, node, exe):
        """{pid: MPI rank or None} of node's processes running the program exe."""
        found = {}
        for pid in self.pids(node):
            env = h.program_env(pid, exe)
            if env is not None:
                found[pid] = h.mpi_rank(env)
        return found

    def down(self):
        """Tears the cluster down and checks that nothing is left: no namespace of this
        cluster, no process in one, no state directory but shared/. Failures are problems."""
        p = self.script("down", check=False)
        if p.returncode != 0:
            h.problem(f"netns-cluster.sh down exited {p.returncode}: {p.stdout}{p.stderr}")
        ns = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
        left = [l.split()[0] for l in ns.splitlines() if l.startswith(self.name + "-")]
        if left:
            h.problem(f"namespaces left after down: {left}")
        stray = []
        for d in os.listdir("/proc"):
            if d.isdigit():
                try:
                    with open(f"/proc/{d}/environ", "rb") as f:
                        if f"CHARLM_CLUSTER_NAME={self.name}".encode() in f.read().split(b"\0"):
                            stray.append(int(d))
                except OSError:
                    pass
        if stray:
            h.problem(f"processes of the cluster left after down: {stray}")
        if os.path.exists(os.path.join(self.dir, "nodes")):
            h.problem(f"{self.dir}/nodes left after down")
        if not left and not stray:
            print(f"down: no namespace, veth, bridge or process of cluster {self.name} left")
