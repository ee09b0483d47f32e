"""The Ray engine: same file as the local engine, shards from two nodes, killed and resumed
runs, and classify's search spread over Ray with the local search's results.

Ray runs on a local instance of 2 CPUs (or a simulated two-node cluster of 1 CPU each), with
real weights on small flowers17 subsets at small image sizes.
"""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
from conftest import REPO, assert_same_features, make_subset, run_module

from extract.ray_engine import cut_shards, shard_nodes, worker_error
from features import FeatureFile

CLASSES = ["bluebell", "buttercup", "coltsfoot"]
HED = ("--weights", "hed-bsds500", "--image-size", "64", "--batch-size", "4", "-q")
RAY = ("--engine", "ray", "--shard-size", "8")


@pytest.fixture(scope="module")
def ray_installed() -> None:
    if importlib.util.find_spec("ray") is None:
        if os.environ.get("CI"):
            pytest.fail('Ray is not installed, and CI must run the Ray tests: pip install -e ".[test,ray]"')
        pytest.skip('needs the ray extra: pip install -e ".[ray]"')


@pytest.fixture(scope="module")
def data(flowers17, tmp_path_factory) -> Path:
    """36 images of 3 classes, and one file that is not an image."""
    root = make_subset(flowers17, tmp_path_factory.mktemp("ray") / "flowers", CLASSES, 12)
    (root / "buttercup" / "not_an_image.jpg").write_bytes(b"no jpeg here")
    return root


@pytest.fixture(scope="module")
def local(data, tmp_path_factory) -> Path:
    """The local engine's file, made by a process that must never import Ray."""
    out = tmp_path_factory.mktemp("local") / "local.hdf5"
    run_without_ray("extract", ["--dataset", str(data), "-o", str(out), *HED])
    return out


def run_without_ray(module: str, argv: list[str]) -> None:
    """Run ``module``'s main on ``argv`` in a fresh process and check it never imported Ray."""
    code = (
        f"import sys; from {module}.__main__ import main; rc = main({argv!r}); "
        f"assert 'ray' not in sys.modules, '{module} imported ray'; sys.exit(rc)"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def read(path: Path) -> dict:
    with FeatureFile(path) as ff:
        return {
            "features": ff.load_features(),
            "labels": ff.labels,
            "paths": ff.paths,
            "label_names": ff.label_names,
            "skipped": ff.skipped,
            "attrs": ff.attrs,
        }


def assert_same_file(ray_out: Path, local_out: Path, side: int = 2) -> None:
    """``side``: the backbone's output maps are side x side (2 at 64 pixels)."""
    a, b = read(ray_out), read(local_out)
    assert a["paths"] == b["paths"]  # same rows, same order
    np.testing.assert_array_equal(a["labels"], b["labels"])
    assert a["label_names"] == b["label_names"]
    assert a["skipped"] == b["skipped"] == [("buttercup/not_an_image.jpg", a["skipped"][0][1])]
    assert a["features"].shape == b["features"].shape == (36, side * side * 512)
    assert_same_features(a["features"], b["features"])  # Ray's actors' threads: other kernels maybe
    # Times differ; a Ray file is an index over its shards unless merged.
    ignore = {"created", "updated", "segments"}
    assert {k: v for k, v in a["attrs"].items() if k not in ignore} == {
        k: v for k, v in b["attrs"].items() if k not in ignore
    }


def test_shards_are_runs_of_consecutive_images():
    todo = np.array([0, 1, 2, 3, 4, 8, 9, 12])
    assert [s.tolist() for s in cut_shards(todo, 2)] == [[0, 1], [2, 3], [4], [8, 9], [12]]
    assert cut_shards(np.array([], dtype=int), 4) == []


@pytest.mark.parametrize("given, joined", [(None, "local"), ("auto", "auto")])
def test_without_an_address_a_run_starts_its_own_instance(ray_installed, monkeypatch, given, joined):
    """Ray would otherwise join the latest instance `ray start` (or a test's Cluster) started
    on the machine: another run's, which ends when that run does."""
    import ray

    from extract.ray_engine import RayOptions, connect

    calls = []
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", lambda **kwargs: calls.append(kwargs))
    assert connect(RayOptions(address=given)) is True
    assert [call["address"] for call in calls] == [joined]


def test_a_workers_error_is_named_from_rays_traceback_text():
    # How Ray Data hands the driver an actor's OSError: the original only as traceback text.
    text = (
        "ray::MapWorker(MapBatches(ShardEmbedder)).submit()\n"
        "  File \"features/writer.py\", line 132, in _reserve\n"
        "FileNotFoundError: [Errno 2] No such file or directory: '/data/f.hdf5.parts/.shard-1'\n"
        "The above exception was the direct cause of the following exception:\n"
        "ray.exceptions.UserCodeException: UDF failed to process a data block.\n"
    )
    assert worker_error(RuntimeError(text)) == (
        "FileNotFoundError: [Errno 2] No such file or directory: '/data/f.hdf5.parts/.shard-1'"
    )
    assert worker_error(ValueError("plain")) == "ValueError: plain"


@pytest.mark.ray
@pytest.mark.slow
@pytest.mark.needs_shared
@pytest.mark.parametrize("merge", [False, True])
def test_ray_file_equals_the_local_engines(ray_installed, data, local, tmp_path, merge):
    out = tmp_path / "ray.hdf5"
    args = ["--dataset", data, "-o", out, *HED, *RAY, "--workers", "2"]
    done = run_module("extract", *args, *(["--merge"] if merge else []), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "wrote 36 images, skipped 1" in done.stdout
    assert_same_file(out, local)
    with h5py.File(out, "r") as f:
        assert f["features"].is_virtual is not merge
    parts = sorted(p.name for p in (tmp_path / "ray.hdf5.parts").glob("*")) if not merge else []
    assert (tmp_path / "ray.hdf5.parts").exists() is not merge
    if not merge:  # 37 listed images in shards of 8: 5 shard files, all in the index
        assert len(parts) == 5 and len(shard_nodes(out)) == 5
    again = run_module("extract", *args, cwd=tmp_path)  # nothing to do, Ray not even started
    assert again.returncode == 0 and "up to date" in again.stdout


@pytest.fixture(scope="module")
def local_mirrors(data, tmp_path_factory) -> Path:
    """The local engine's file with mirrors."""
    out = tmp_path_factory.mktemp("local_mirrors") / "local.hdf5"
    done = run_module("extract", "--dataset", data, "-o", out, *HED, "--augment", "flip", cwd=out.parent)
    assert done.returncode == 0, done.stderr
    assert "wrote 36 images and their mirrors, skipped 1" in done.stdout
    return out


@pytest.mark.ray
@pytest.mark.slow
@pytest.mark.needs_shared
@pytest.mark.parametrize("merge", [False, True])
def test_ray_file_with_mirrors_equals_the_local_engines(ray_installed, data, local_mirrors, tmp_path, merge):
    files = {"local": local_mirrors, "ray": tmp_path / "ray.hdf5"}
    done = run_module("extract", "--dataset", data, "-o", files["ray"], *HED, "--augment", "flip", *RAY,
                      "--workers", "2", *(["--merge"] if merge else []), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "wrote 36 images and their mirrors, skipped 1" in done.stdout
    with FeatureFile(files["ray"]) as a, FeatureFile(files["local"]) as b:
        assert a.paths == b.paths and a.has_mirrors and b.has_mirrors
        for load in ("load_features", "load_mirror_features"):
            assert_same_features(getattr(a, load)(), getattr(b, load)())
        assert not np.array_equal(a.load_features(), a.load_mirror_features())
    with h5py.File(files["ray"], "r") as f:  # unmerged: the mirrors read through the shards' index
        assert f["mirror_features"].is_virtual is not merge


@pytest.mark.ray
@pytest.mark.slow
@pytest.mark.needs_shared
def test_shards_are_written_on_both_nodes_of_a_cluster(ray_installed, data, local, tmp_path, monkeypatch):
    from ray.cluster_utils import Cluster

    # The actors run in workers of the nodes' raylets, which take this process' environment,
    # not the driver's: the hook is set before the nodes start.
    for name, value in hook_env(tmp_path, WAIT_FOR_NODES="2").items():
        monkeypatch.setenv(name, value)
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    try:
        cluster.add_node(num_cpus=1)
        cluster.wait_for_nodes()
        out = tmp_path / "two_nodes.hdf5"
        # One CPU per actor: one actor per node. Decoding reserves no CPU, so it still runs.
        # Ray Data gives a decoded shard to the least busy actor, the same one on a tie: each
        # actor, its shard written, waits (WAIT_FOR_NODES) until the other node has written one
        # too, so the next shard goes to the idle one whatever the machine's speed.
        done = run_module(
            "extract", "--dataset", data, "-o", out, *HED, *RAY, "--workers", "2",
            "--ray-address", cluster.address, cwd=tmp_path,
        )
        assert done.returncode == 0, done.stderr
        assert "on 2 Ray nodes" in done.stdout
        nodes = shard_nodes(out)
        assert len(nodes) == 5 and len(set(nodes.values())) == 2
        assert set(nodes.values()) <= {n.node_id for n in [cluster.head_node, *cluster.worker_nodes]}
        assert_same_file(out, local)
    finally:
        cluster.shutdown()


@pytest.mark.ray
@pytest.mark.slow
@pytest.mark.needs_shared
def test_an_actor_larger_than_any_node_is_refused_in_one_line(ray_installed, data, tmp_path):
    done = run_module("extract", "--dataset", data, "-o", tmp_path / "f.hdf5", *HED, *RAY,
                      "--cpus-per-worker", "64", cwd=tmp_path)
    assert done.returncode == 1
    assert done.stderr.strip().splitlines()[-1].startswith(
        "extract: error: --cpus-per-worker 64 is more than any node of the cluster has"
    ), done.stderr


@pytest.mark.ray
@pytest.mark.slow
@pytest.mark.needs_shared
@pytest.mark.parametrize("address", ["127.0.0.1:1", "no-port-here"])
def test_an_unreachable_cluster_is_one_line_at_once(ray_installed, data, tmp_path, address):
    done = run_module("extract", "--dataset", data, "-o", tmp_path / "f.hdf5", *HED, *RAY,
                      "--ray-address", address, cwd=tmp_path, timeout=60)
    assert done.returncode == 1
    assert done.stderr.strip().splitlines()[-1].startswith(
        f"extract: error: cannot reach the Ray cluster at {address} ("
    ), done.stderr
    assert not (tmp_path / "f.hdf5").exists()


def shard_files(out: Path) -> dict[str, int]:
    parts = out.with_name(out.name + ".parts")
    found = {}
    for p in parts.glob("shard-*.h5"):
        try:
            found[p.name] = p.stat().st_ino
        except FileNotFoundError:
            pass
    return found


# sitecustomize for a run's Python processes (the driver, Ray's workers), through hook_env:
# each time an actor has written a shard, with HOLD_AFTER_SHARDS=n, once n shards are written,
# it notes that in the file HELD and waits there for good (the run writes no shard more before
# it is killed); with WAIT_FOR_NODES=n it waits until shards of n nodes are written (2 minutes
# at most).
HOOK = """
import os
if os.environ.get("HOLD_AFTER_SHARDS") or os.environ.get("WAIT_FOR_NODES"):
    import threading, time
    import h5py
    import features.writer
    write = features.writer.write_part_file
    def shards(parts):
        names = [n for n in os.listdir(parts) if n.startswith("shard-") and n.endswith(".h5")]
        return [os.path.join(parts, n) for n in names]
    def nodes(parts):
        found = set()
        for shard in shards(parts):
            with h5py.File(shard, "r") as f:
                found.add(f.attrs["node_id"])
        return found
    def write_then_wait(path, *args, **kwargs):
        write(path, *args, **kwargs)
        parts = os.path.dirname(path)
        if os.environ.get("HOLD_AFTER_SHARDS") and len(shards(parts)) >= int(os.environ["HOLD_AFTER_SHARDS"]):
            open(os.environ["HELD"], "w").close()
            threading.Event().wait()
        deadline = time.monotonic() + 120
        while os.environ.get("WAIT_FOR_NODES") and time.monotonic() < deadline:
            if len(nodes(parts)) >= int(os.environ["WAIT_FOR_NODES"]):
                break
            time.sleep(0.05)
    features.writer.write_part_file = write_then_wait
"""


def hook_env(tmp_path: Path, **settings: str) -> dict[str, str]:
    """The environment of a run whose Python processes load HOOK with ``settings``."""
    hook = tmp_path / "hook"
    hook.mkdir(exist_ok=True)
    (hook / "sitecustomize.py").write_text(HOOK)
    path = os.pathsep.join(filter(None, [str(hook), os.environ.get("PYTHONPATH")]))
    return {"PYTHONPATH": path, **settings}


def processes_with(marker: str) -> list[int]:
    """The processes whose environment holds ``marker``: those a run started, Ray's included."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if marker.encode() in (entry / "environ").read_bytes().split(b"\0"):
                    found.append(int(entry.name))
            except OSError:  # gone meanwhile
                pass
    return found


def wait_until_gone(marker: str, timeout: float = 120) -> None:
    """Wait for a killed run's processes to exit (Ray's workers follow their raylet a moment
    later); past the deadline, kill what is left of them."""
    deadline = time.monotonic() + timeout
    while (left := processes_with(marker)) and time.monotonic() < deadline:
        time.sleep(0.1)
    for pid in left:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


@pytest.mark.ray
@pytest.mark.slow
@pytest.mark.needs_shared
def test_killed_ray_run_resumes_without_recomputing_finished_shards(ray_installed, data, local, tmp_path):
    out = tmp_path / "killed.hdf5"
    # Shards of 4 images (10 of them); the one actor holds after its second.
    argv = [sys.executable, "-m", "extract", "--dataset", str(data), "-o", str(out), *HED,
            "--engine", "ray", "--shard-size", "4", "--workers", "1"]
    held = tmp_path / "held"
    marker = f"FEATUREBANK_KILLED_RUN={tmp_path}"
    env = {**os.environ, **hook_env(tmp_path, HOLD_AFTER_SHARDS="2", HELD=str(held)),
           "FEATUREBANK_KILLED_RUN": str(tmp_path)}
    # Its own session, so that SIGKILL takes the driver and the Ray instance it started.
    proc = subprocess.Popen(argv, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            start_new_session=True, env=env)
    deadline = time.monotonic() + 300  # a deadline, not an order: the note says when
    try:
        while not held.exists():
            assert proc.poll() is None, proc.stderr.read().decode()
            assert time.monotonic() < deadline, "no 2 shards finished in 300 s"
            time.sleep(0.05)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        proc.stderr.close()
        wait_until_gone(marker)
    finished = shard_files(out)
    assert len(finished) == 2  # what the killed run left: its actor held after the second
    rows_done = 0
    for name in finished:
        with h5py.File(tmp_path / "killed.hdf5.parts" / name, "r") as f:
            rows_done += len(f["paths"])

    done = run_module("extract", *argv[3:], cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert f"wrote {36 - rows_done} images" in done.stdout, done.stdout
    # Every shard finished before the kill is in the file as it was: same file, not recomputed.
    after = shard_files(out)
    assert all(after.get(name) == inode for name, inode in finished.items())
    assert set(finished) <= set(shard_nodes(out))
    assert_same_file(out, local)


@pytest.mark.ray
@pytest.mark.slow
@pytest.mark.needs_shared
def test_classify_on_ray_gives_the_local_search(ray_installed, local, tmp_path):
    results = {}
    for engine in ("local", "ray"):
        done = run_module("classify", "--features", local, "--model", "logreg", "rf",
                          "--engine", engine, "--json", tmp_path / f"{engine}.json", cwd=tmp_path)
        assert done.returncode == 0, done.stderr
        results[engine] = [line for line in done.stdout.splitlines() if "search time" not in line]
    assert results["ray"] == results["local"]  # the reports, word for word, but for timings
    for model in ("logreg", "rf"):
        a, b = (json.loads((tmp_path / f"{e}.{model}.json").read_text()) for e in ("local", "ray"))
        assert a["best_params"] == b["best_params"]
        assert a["accuracy"] == b["accuracy"]
        assert [r["mean_test_score"] for r in a["cv_results"]] == [
            r["mean_test_score"] for r in b["cv_results"]
        ]
        assert b["settings"]["engine"] == "ray"


@pytest.mark.slow
@pytest.mark.needs_shared
def test_classify_local_never_imports_ray(local):
    run_without_ray("classify", ["--features", str(local)])


@pytest.mark.ray
@pytest.mark.slow
@pytest.mark.needs_shared
def test_head_on_ray_gives_the_local_search(ray_installed, local, tmp_path):
    """The Keras head's fits as Ray tasks: the same candidates scored the same, the same head."""
    grid = json.dumps({"hidden": [16], "dropout": [0.0, 0.5], "learning_rate": [1e-2]})
    docs = {}
    for engine in ("local", "ray"):
        done = run_module("classify", "--features", local, "--model", "head", "--grid", grid,
                          "--engine", engine, "--json", tmp_path / f"{engine}.json", cwd=tmp_path)
        assert done.returncode == 0, done.stderr
        docs[engine] = json.loads((tmp_path / f"{engine}.json").read_text())
    a, b = docs["local"], docs["ray"]
    assert a["best_params"] == b["best_params"] and len(b["cv_results"]) == 2
    assert [r["mean_test_score"] for r in a["cv_results"]] == [r["mean_test_score"] for r in b["cv_results"]]
    assert b["settings"]["engine"] == "ray" and a["test_predictions"] == b["test_predictions"]
