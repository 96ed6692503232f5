# Peer vs storage reads through real mounts of one `shoal up --clients 3` cluster (issue 12).
# Usage: python3 bench/coop-quick.py target/release/shoal   (needs fuse3, attr; prints JSON)
import os, sys, time, mmap, random, subprocess, statistics, json, tempfile, signal, shutil
shoal = sys.argv[1]
T = tempfile.mkdtemp(prefix="coop-measure-")
mnt = os.path.join(T, "mnt"); os.mkdir(mnt)
m2, m3 = mnt + "-2", mnt + "-3"
log = open(os.path.join(T, "up.log"), "w")
p = subprocess.Popen([shoal, "up", mnt, "--state", os.path.join(T, "state"), "--clients", "3"], stdout=log, stderr=log)
def mounted(x):
    return subprocess.run(["mountpoint", "-q", x]).returncode == 0
try:
    for _ in range(600):
        if all(mounted(x) for x in (mnt, m2, m3)): break
        time.sleep(0.1)
    else:
        raise SystemExit("not mounted")
    def stats(x):
        return json.loads(subprocess.run(["getfattr", "-n", "shoal.stats", "--only-values", x], capture_output=True, check=True).stdout)
    MB = 1 << 20
    results = {"seq_storage_MBps": [], "seq_peer_MBps": [], "lat_storage_ms": [], "lat_peer_ms": []}
    for rep in range(3):
        name = f"big{rep}"
        data = os.urandom(64 * MB)
        with open(os.path.join(m3, name), "wb") as f:
            f.write(data); f.flush(); os.fsync(f.fileno())
        for key, where in (("seq_storage_MBps", mnt), ("seq_peer_MBps", m2)):
            t0 = time.perf_counter()
            with open(os.path.join(where, name), "rb") as f:
                got = f.read()
            dt = time.perf_counter() - t0
            assert got == data, f"{where}: bytes differ"
            results[key].append(64 / dt)
        # 64 KiB random reads of blocks nobody read yet: mount 1 (storage), then mount 2 (peer).
        name = f"small{rep}"
        data = os.urandom(64 * MB)
        with open(os.path.join(m3, name), "wb") as f:
            f.write(data); f.flush(); os.fsync(f.fileno())
        blocks = random.sample(range(1024), 100)
        buf = mmap.mmap(-1, 65536)
        for key, where in (("lat_storage_ms", mnt), ("lat_peer_ms", m2)):
            fd = os.open(os.path.join(where, name), os.O_RDONLY | os.O_DIRECT)
            lat = []
            for b in blocks:
                t0 = time.perf_counter()
                n = os.preadv(fd, [buf], b * 65536)
                lat.append((time.perf_counter() - t0) * 1000)
                assert n == 65536 and buf[:] == data[b * 65536:(b + 1) * 65536], f"{where}: block {b} differs"
            os.close(fd)
            results[key].append(statistics.median(lat))
    out = {k: [round(x, 2) for x in v] for k, v in results.items()}
    out["stats_mount1"] = stats(mnt); out["stats_mount2"] = stats(m2)
    print(json.dumps(out, indent=1))
finally:
    p.send_signal(signal.SIGINT)
    try: p.wait(timeout=30)
    except Exception: p.kill()
    if all(not mounted(x) for x in (mnt, m2, m3)):
        shutil.rmtree(T, ignore_errors=True)
